"""``shardmigrate airflow`` (``make airflow``): the demo fleet in a real local Airflow 3.3 -- its UI, Trigger form,
Grid, logs and the fleet page -- on 127.0.0.1, until Ctrl-C.

It creates the working folder's fleet when missing (the demo's SQLite shards -- ``shard-4`` holds duplicate
emails, so the unique-email migration fails there --, two ordered migrations, the one-line DAG file and the drift
DAG file), then starts ``api-server``, ``scheduler``, ``dag-processor`` and ``triggerer`` (LocalExecutor; with
``--executor celery`` the CeleryExecutor and a Celery worker on the local Redis) over a metadata database on the
local PostgreSQL that is kept, like the Airflow home, across restarts. It prints the URL once the api-server
reports every component healthy and the migration DAGs are parsed. Ctrl-C or SIGTERM stops every process it
started; a second start in the same working folder says where the running one is.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from airflow_provider_shardmigrate.cli._common import console

DEFAULT_WORKDIR = Path("shardmigrate-airflow")
DEFAULT_PORT = 8080
#: How soon an edited or added migration folder is parsed again (the one-line DAG file is re-parsed this often).
MIN_FILE_PROCESS_INTERVAL = 5
EXIT_ALREADY_RUNNING = 3
EXIT_PORT_TAKEN = 4


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "airflow",
        help="the demo fleet in a real local Airflow (UI, scheduler, ...) on 127.0.0.1, until Ctrl-C",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=DEFAULT_WORKDIR,
        help=f"working folder: the fleet, the Airflow home, the logs (default: ./{DEFAULT_WORKDIR})",
    )
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"the api-server's port on 127.0.0.1 (default {DEFAULT_PORT})"
    )
    parser.add_argument(
        "--executor",
        choices=("local", "celery"),
        default=os.environ.get("EXECUTOR") or "local",
        help="LocalExecutor, or the CeleryExecutor with one worker on the local Redis (default: $EXECUTOR or local)",
    )
    parser.add_argument("--shards", type=int, default=6, help="shards of a new fleet (at least 5; default 6)")
    parser.add_argument(
        "--reset",
        action="store_true",
        help="start over: delete the working folder's fleet, Airflow home and metadata database first",
    )
    parser.add_argument(
        "--remove",
        action="store_true",
        help="delete the working folder and its metadata database, then exit (refused while it runs)",
    )
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="seconds to wait for a usable UI before giving up (default 600)"
    )
    parser.set_defaults(func=run)


class Interrupted(BaseException):
    """Ctrl-C, SIGTERM or SIGHUP: stop everything and exit 0."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class _Signals:
    """The first signal raises :class:`Interrupted` (wherever the start is); later ones, while stopping, are
    only noted, so the stop itself is never interrupted."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self, out: Any) -> None:
        self.out = out
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        for signum in self.SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None:
            self.out.print(f"[yellow]{signal.Signals(signum).name}: already stopping (at most 30 s)[/]")
            return
        self.received = signum
        raise Interrupted(signum)


def _fleet_ready(workdir: Path) -> bool:
    from airflow_provider_shardmigrate.cli.demo_fleet import MARKER

    dags = workdir / "dags"
    return (
        (workdir / MARKER).exists()
        and (dags / "shardmigrate_dags.py").exists()
        and (dags / "shards.yaml").exists()
        and any((workdir / "shards").glob("*.db"))
    )


def _foreign(workdir: Path) -> bool:
    """A folder with content that this command did not make (never deleted nor written into)."""
    from airflow_provider_shardmigrate.cli.demo_fleet import MARKER
    from airflow_provider_shardmigrate.local.instance import LOCK_FILE

    if not workdir.is_dir():
        return workdir.exists()
    names = {entry.name for entry in workdir.iterdir()}
    return bool(names) and not names & {MARKER, LOCK_FILE}


def _prepare_fleet(workdir: Path, shards: int, out: Any) -> Any:
    """The fleet in ``workdir``: the existing one, or a new one (with a fresh metadata database)."""
    from airflow_provider_shardmigrate.cli.demo_fleet import DemoFleet, create_demo_fleet
    from airflow_provider_shardmigrate.local.instance import wipe

    if _fleet_ready(workdir):
        dags = workdir / "dags"
        found = {path.stem: path for path in sorted((workdir / "shards").glob("*.db"))}
        out.print(f"fleet           {len(found)} SQLite shards in {workdir / 'shards'} (kept from the last start)")
        return DemoFleet(root=workdir, dags=dags, shards=found)
    wipe(workdir)  # a half-made fleet, or none: start from nothing, metadata database included
    fleet = create_demo_fleet(workdir, shards, drift_dag=True, made_by="shardmigrate airflow")
    out.print(f"fleet           {len(fleet.shards)} new SQLite shards in {workdir / 'shards'}")
    return fleet


def _expected_dags(fleet: Any) -> list[str]:
    """What must be parsed before the UI is usable: every migration's rollout and rollback DAG, the fleet
    status DAG and the drift DAG."""
    from airflow_provider_shardmigrate.dags.layout import STATUS_DAG_ID, migration_dag_id, rollback_dag_id

    migrations = sorted(p.name for p in (fleet.dags / "migrations").iterdir() if p.is_dir())
    ids = [dag_id for m in migrations for dag_id in (migration_dag_id(m), rollback_dag_id(m))]
    return [*ids, STATUS_DAG_ID, "shardmigrate_drift"]


def _deployment(args: argparse.Namespace, workdir: Path, fleet: Any, out: Any) -> Any:
    from airflow_provider_shardmigrate.local.deployment import Deployment
    from airflow_provider_shardmigrate.local.instance import HOME, load_secrets, metadata_db_name

    home = workdir / HOME
    kept = load_secrets(home)
    return Deployment(
        output_dir=workdir,
        dags_folder=fleet.dags,
        extra_env=fleet.connections(),
        executor=args.executor,
        workers=1,
        worker_concurrency=4,
        port=args.port,
        persistent_db=metadata_db_name(workdir),
        home_dir=home,
        logs_dir=workdir / "logs",
        password=kept.password,
        fernet_key=kept.fernet_key,
        jwt_secret=kept.jwt_secret,
        queue="default",
        label="shardmigrate-airflow",
        parallelism=16,
        dags_paused_at_creation=False,
        min_file_process_interval=MIN_FILE_PROCESS_INTERVAL,
        progress=lambda message: out.print(f"[dim]{time.strftime('%H:%M:%S')}[/]  {message}"),
    )


def _print_ready(deployment: Any, fleet: Any, elapsed: float, out: Any) -> None:
    from airflow_provider_shardmigrate.cli.demo_fleet import FAILING_MIGRATION, GOOD_MIGRATION, LEGACY_SHARD
    from airflow_provider_shardmigrate.dags.layout import FLEET_VIEW_ROUTE
    from airflow_provider_shardmigrate.local.deployment import USERNAME

    out.rule(f"[bold green]Airflow is ready in {elapsed:.0f}s")
    out.print(f"UI              [bold]{deployment.url}[/]")
    out.print(f"user            {USERNAME}")
    out.print(f"password        in {deployment.passwords_file} (readable by you only)")
    out.print(f"fleet page      {deployment.url}/plugin/{FLEET_VIEW_ROUTE}  (Browse > Shard fleet)")
    out.print(f"dags folder     {fleet.dags}  (a new folder under migrations/ is a DAG within seconds)")
    out.print(f"process logs    {deployment.logs}")
    out.print(
        f"try             trigger shardmigrate__{GOOD_MIGRATION}, then shardmigrate__{FAILING_MIGRATION} "
        f"({LEGACY_SHARD} holds duplicate emails: it fails, auto-rollback undoes the others) -- "
        "README: See it in the Airflow UI"
    )
    out.print("[dim]Ctrl-C stops every process started here; runs and history are kept for the next start.[/]")


def _serve(deployment: Any) -> None:
    """Until a signal (Interrupted) or a component dies (DeploymentError)."""
    while True:
        deployment.check_alive()
        time.sleep(1.0)


def run(args: argparse.Namespace) -> int:
    from airflow_provider_shardmigrate.local.instance import AlreadyRunning, InstanceLock

    out = console()
    out.soft_wrap = True  # paths and URLs stay whole (copyable) when the output is not a terminal
    if args.shards < 5:
        out.print("[red]--shards must be at least 5 (the failing shard is shard-4)[/]")
        return 2
    if args.executor not in ("local", "celery"):  # $EXECUTOR, the default, is not checked by argparse
        out.print(f"[red]unknown executor {args.executor!r}: local or celery[/]")
        return 2
    workdir = args.workdir.resolve()
    new_folder = not workdir.exists()
    if _foreign(workdir):
        out.print(f"[red]{workdir} exists and was not made by `shardmigrate airflow`; choose another --workdir[/]")
        return 2
    try:
        lock = InstanceLock.acquire(workdir)
    except AlreadyRunning as exc:
        out.print(f"[bold red]{exc}[/]")
        return EXIT_ALREADY_RUNNING
    try:
        code = _remove(workdir, out) if args.remove else _run_locked(args, workdir, out)
    finally:
        lock.release()
    if args.remove:
        shutil.rmtree(workdir, ignore_errors=True)
    if code == EXIT_PORT_TAKEN and new_folder:
        shutil.rmtree(workdir, ignore_errors=True)  # made only to hold the lock
    return code


def _remove(workdir: Path, out: Any) -> int:
    from airflow_provider_shardmigrate.local.instance import metadata_db_name, wipe

    wipe(workdir)
    out.print(f"removed {workdir} and its metadata database {metadata_db_name(workdir)}")
    return 0


def _check_port(port: int, out: Any) -> bool:
    from airflow_provider_shardmigrate.local.processes import port_is_free

    if port_is_free(port):
        return True
    out.print(
        f"[bold red]port {port} on 127.0.0.1 is taken by another program (not by an instance of this working "
        f"folder): stop it, or choose another port: `make airflow PORT={port + 1}` / `--port {port + 1}`[/]"
    )
    return False


def _run_locked(args: argparse.Namespace, workdir: Path, out: Any) -> int:
    from airflow_provider_shardmigrate.local.instance import clean_up_previous, wipe

    signals = _Signals(out)
    signals.install()
    try:
        if args.reset:
            wipe(workdir)
        left = clean_up_previous(workdir)
        if left:
            out.print(f"[yellow]cleaned up after a previous instance that was killed: {', '.join(left)}[/]")
        if not _check_port(args.port, out):
            return EXIT_PORT_TAKEN
        return _start_and_serve(args, workdir, out)
    except Interrupted as exc:
        out.print(f"[yellow]{exc}: stopped before Airflow was up; nothing left running[/]")
        return 0
    finally:
        signals.restore()


def _start_and_serve(args: argparse.Namespace, workdir: Path, out: Any) -> int:
    from airflow_provider_shardmigrate.local.deployment import DeploymentError
    from airflow_provider_shardmigrate.local.instance import write_instance

    out.rule("[bold]shardmigrate airflow")
    out.print(f"working folder  {workdir}")
    fleet = _prepare_fleet(workdir, args.shards, out)
    deployment = _deployment(args, workdir, fleet, out)
    executor = "CeleryExecutor, 1 Celery worker" if args.executor == "celery" else "LocalExecutor"
    out.print(f"Airflow         3.3 on {deployment.url} ({executor}); AIRFLOW_HOME {deployment.home}")
    out.print(f"metadata DB     {deployment.metadata_db} on the local PostgreSQL (kept across restarts)")
    info = {"url": deployment.url, "executor": args.executor, "folder": str(workdir)}
    write_instance(workdir, ready=False, **info)
    began = time.monotonic()
    try:
        deployment.start(timeout=args.timeout, expect_dags=_expected_dags(fleet), unpause=False)
        write_instance(workdir, ready=True, **info)
        _print_ready(deployment, fleet, time.monotonic() - began, out)
        _serve(deployment)
    except Interrupted as exc:
        out.print(f"{exc}: stopping every process started here ...")
        _stop(deployment, out)
        return 0
    except DeploymentError as exc:
        out.print(f"[bold red]{exc}[/]")
        _stop(deployment, out)
        return 1
    finally:
        write_instance(workdir, ready=False, stopped=True, **info)
    return 0  # pragma: no cover - _serve returns only by raising


def _stop(deployment: Any, out: Any) -> None:
    forced = deployment.stop()
    left = deployment.leftovers()
    note = f" (SIGKILLed: {', '.join(forced)})" if forced else ""
    if left:
        out.print(f"[bold red]stopped{note}, but processes are still alive: {left}[/]")
    else:
        out.print(f"stopped{note}; nothing left running. Runs and history are kept: `make airflow` starts it again.")


if __name__ == "__main__":  # pragma: no cover
    from airflow_provider_shardmigrate.cli import main

    sys.exit(main(["airflow", *sys.argv[1:]]))
