"""A real Airflow 3.3 deployment on this machine, on loopback only: ``shardmigrate airflow`` (``make airflow``)
runs one for a user, the end-to-end tests and benchmarks another (tests/e2e/deployment.py).

What :class:`Deployment` starts (every process in its own session/process group, stdout+stderr to a log file):

* a metadata database on the local PostgreSQL: a throwaway one (``sm_<pid>_e2emeta<token>``; created,
  ``db migrate``d, dropped at the end -- and dropped by the reaper if the owner was killed) or a persistent
  one named by the caller (created when missing, ``db migrate``d, kept);
* ``airflow api-server`` on 127.0.0.1 (a free port, or the one asked for), SimpleAuthManager with a user whose
  password the deployment writes into the passwords file itself (so Airflow never generates and prints one);
* ``scheduler --skip-serve-logs``, ``dag-processor``, ``triggerer --skip-serve-logs``;
* with ``executor="celery"``: ``celery worker --skip-serve-logs`` processes with distinct hostnames,
  CeleryExecutor with the result backend on the metadata database, the broker a Redis DB number claimed empty
  for the run on the local Redis (services.py; a subclass may run a Redis of its own instead); with
  ``executor="local"``: the LocalExecutor (task processes are children of the scheduler).

One JWT secret (86 bytes) for every process; ``execution_api_server_url`` and ``[api] base_url`` explicit.
Tuning from research/airflow-fanout-overhead.md that is safe here: ``scheduler_idle_sleep_time=0.2`` and
``[workers] min_heartbeat_interval=1``. Bytecode stays on (``PYTHONDONTWRITEBYTECODE`` dropped).

Stopping SIGTERMs every process group, waits, SIGKILLs leftovers, drops a throwaway metadata database and
empties the claimed Redis DB; it runs at most once and is also registered with ``atexit``. Each child gets
``PR_SET_PDEATHSIG``, and a reaper process (``python -m airflow_provider_shardmigrate.local.deployment --reap``)
cleans up after an owner that died without stopping (SIGKILL), from the state file the deployment keeps.

Failures raise :class:`DeploymentError` (no pytest needed).
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_provider_shardmigrate.local import services
from airflow_provider_shardmigrate.local.processes import (
    ancestors,
    child_setup,
    free_port,
    group_is_airflow,
    group_members,
    kill_all,
    pgid_of,
    pid_alive,
    process_tree,
    signal_group,
    snapshot,
    still_alive,
    stop_groups,
    tail,
)

if TYPE_CHECKING:
    from airflow_provider_shardmigrate.local.api import AirflowApi

USERNAME = "admin"
STATE_FILE = "deployment.json"
PASSWORDS_FILE = "simple_auth_manager_passwords.json"
EXECUTORS = {"celery": "CeleryExecutor", "local": "LocalExecutor"}
SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
#: Seconds after which a component still running gets SIGTERM again.
RESIGNAL_AFTER = 10.0
_HEALTH_PARTS = ("metadatabase", "scheduler", "triggerer", "dag_processor")


class DeploymentError(RuntimeError):
    """The deployment could not start (or a component died); the message names the component and its log."""


# -- cleaning up after an owner that is gone ---------------------------------------------------------------
def _drop_databases(state: dict[str, Any]) -> list[str]:
    done = []
    names = [state.get("metadata_db"), *(state.get("shard_databases") or {}).get("postgres", [])]
    for database in names:
        if database:
            with contextlib.suppress(Exception):
                services.drop_database(database)
                done.append(f"dropped {database}")
    return done


def _kill_servers(state: dict[str, Any]) -> list[str]:
    from airflow_provider_shardmigrate.local.processes import cmdline

    done = []
    for server in state.get("servers", []):
        # Only a process whose command line still names the server's folder (guard against a recycled pid).
        pid, marker = int(server.get("pid") or 0), str(server.get("marker") or "")
        if pid and marker and marker.encode() in cmdline(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
            done.append(f"killed server {pid}")
    return done


def _run_hook(state: dict[str, Any]) -> list[str]:
    """The caller's own clean-up (``"module:function"``, called with the state), e.g. dropping test databases."""
    hook = state.get("cleanup_hook")
    if not hook:
        return []
    module, _, name = str(hook).partition(":")
    try:
        result = getattr(importlib.import_module(module), name)(state)
    except Exception as exc:
        return [f"clean-up hook {hook} failed: {type(exc).__name__}: {exc}"]
    return [str(item) for item in result or []]


def clean_up_run(state_file: Path, grace: float = 0.0) -> list[str]:
    """Stop the process groups of the run ``state_file`` describes (SIGTERM, ``grace`` seconds, SIGKILL), drop
    its throwaway databases, empty its Redis DB and mark it stopped. For runs whose owner died without stopping."""
    try:
        state = json.loads(state_file.read_text())
    except (OSError, ValueError):
        return []
    if state.get("stopped"):
        return []
    groups = [pgid for pgid in state.get("pgids", []) if group_is_airflow(pgid)]
    done = [f"killed group {pgid}" for pgid in stop_groups(groups, grace)]
    done += _drop_databases(state)
    if state.get("redis_db") is not None and state.get("redis_owner"):
        services.release_redis_db_quietly(int(state["redis_db"]), str(state["redis_owner"]))
    done += _kill_servers(state)
    done += _run_hook(state)
    state["stopped"] = True
    state_file.write_text(json.dumps(state, indent=2))
    return done


def reap(owner_pid: int, state_file: Path) -> None:  # pragma: no cover - runs in the reaper process
    """The reaper: wait for the owner to go away, then clean up after it unless it stopped the deployment
    itself. Covers SIGKILL of the owner, where neither atexit nor a signal handler runs."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C meant for the owner is not for the reaper
    while pid_alive(owner_pid):
        time.sleep(1.0)
    clean_up_run(state_file, grace=15.0)


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner may read (passwords, keys)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.chmod(path, 0o600)


# -- the deployment ---------------------------------------------------------------------------------------
@dataclass
class Component:
    name: str
    args: list[str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    #: Stopped or killed on purpose (a fault test): check_alive() does not report it.
    down: bool = False

    @property
    def pgid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None


@dataclass
class Deployment:
    """An Airflow deployment over ``dags_folder`` whose processes get ``extra_env`` (the shard connections as
    ``AIRFLOW_CONN_*``, extra settings as ``AIRFLOW__*``)."""

    output_dir: Path
    dags_folder: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    workers: int = 2
    worker_concurrency: int = 4
    tuned: bool = True
    #: Shard databases the caller created for this run ({"postgres": [...], "mysql": [...]}): dropped by the
    #: reaper if the owner dies without its teardown (the caller drops them normally).
    shard_databases: dict[str, list[str]] = field(default_factory=dict)
    run_token: str = field(default_factory=lambda: secrets.token_hex(4))
    #: ``celery`` (CeleryExecutor, ``workers`` Celery workers) or ``local`` (LocalExecutor).
    executor: str = "celery"
    #: The api-server's port on 127.0.0.1 (None: a free one).
    port: int | None = None
    #: A metadata database kept across starts (created when missing, never dropped); None: a throwaway one.
    persistent_db: str | None = None
    #: Airflow home and the process logs (default: ``airflow-home`` and ``logs`` in ``output_dir``).
    home_dir: Path | None = None
    logs_dir: Path | None = None
    #: The admin password, the Fernet key and the JWT secret (None: generated for this run). A persistent
    #: metadata DB needs the same Fernet key every start (connections created in the UI are encrypted with it).
    password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    fernet_key: str | None = None
    jwt_secret: str = field(default_factory=lambda: secrets.token_urlsafe(64))
    #: The Celery queue of every task (None: one unique to the run).
    queue: str | None = None
    #: Prefix of worker hostnames and of the messages printed.
    label: str = "e2e"
    parallelism: int = 32
    dags_paused_at_creation: bool = True
    #: ``[dag_processor] min_file_process_interval`` (None: Airflow's 30 s): how soon an existing DAG file --
    #: the one-line migrations file, when a migration folder is added -- is parsed again.
    min_file_process_interval: int | None = None
    #: ``"module:function"`` the reaper calls with the state after cleaning up (e.g. dropping test databases).
    cleanup_hook: str | None = None
    #: The directory the reaper runs in (so ``cleanup_hook``'s module is importable).
    reaper_cwd: Path | None = None
    #: Told what the start is doing (a line per phase), e.g. to print it.
    progress: Callable[[str], None] | None = None
    home: Path = field(init=False)
    logs: Path = field(init=False)
    url: str = field(init=False)
    metadata_db: str = field(init=False)

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise DeploymentError(f"unknown executor {self.executor!r}: {' or '.join(EXECUTORS)}")
        self.home = self.home_dir or self.output_dir / "airflow-home"
        self.logs = self.logs_dir or self.output_dir / "logs"
        self.home.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        if self.port is None:
            self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.metadata_db = self.persistent_db or f"sm_{os.getpid()}_e2emeta{self.run_token}"
        if self.queue is None:
            self.queue = f"shardmigrate_{self.label}_{os.getpid()}_{self.run_token}"
        self.redis_db: int | None = None
        self.components: list[Component] = []
        self._servers: list[Any] = []
        count = self.workers if self.executor == "celery" else 0
        self.worker_hostnames = [f"{self.label}-worker-{i + 1}-{self.run_token}@127.0.0.1" for i in range(count)]
        self._redis_owner = f"{os.getpid()}:{self.run_token}"
        self._reaper: subprocess.Popen[bytes] | None = None
        self._created_db = False
        self._stopped = False
        self._token: str | None = None
        self._env: dict[str, str] | None = None
        #: Every process seen under the components when stopping (pid -> start time).
        self._tracked: dict[int, int] = {}

    @property
    def state_file(self) -> Path:
        return self.output_dir / STATE_FILE

    @property
    def passwords_file(self) -> Path:
        return self.home / PASSWORDS_FILE

    # -- configuration ----------------------------------------------------------------------------------
    def environment(self) -> dict[str, str]:
        """The environment of every Airflow process: the caller's, minus its AIRFLOW* settings, plus ours
        (computed once: every process gets the same secrets and ports)."""
        if self._env is not None:
            return dict(self._env)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # bytecode on: every task process imports Airflow
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        env.update(self._airflow_settings())
        if self.executor == "celery":
            env.update(self._celery_settings())
        if self.tuned:
            env["AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME"] = "0.2"
            env["AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL"] = "1"
        if self.min_file_process_interval is not None:
            env["AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL"] = str(self.min_file_process_interval)
        env.update(self.extra_env)
        if self.executor != "celery" or self._broker_known():  # complete only once the broker is known
            self._env = env
        return dict(env)

    def _airflow_settings(self) -> dict[str, str]:
        if self.fernet_key is None:
            from cryptography.fernet import Fernet

            self.fernet_key = Fernet.generate_key().decode()
        return {
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": str(self.dags_paused_at_creation),
            "AIRFLOW__CORE__EXECUTOR": EXECUTORS[self.executor],
            "AIRFLOW__CORE__PARALLELISM": str(self.parallelism),
            "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "64",
            "AIRFLOW__CORE__FERNET_KEY": self.fernet_key,
            "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USERNAME}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.passwords_file),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": services.sqlalchemy_url(self.metadata_db),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__BASE_URL": self.url,
            "AIRFLOW__API__WORKERS": "1",
            # 86 bytes: above the 64-byte minimum for HMAC-SHA512 (no InsecureKeyLengthWarning).
            "AIRFLOW__API_AUTH__JWT_SECRET": self.jwt_secret,
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.home / "logs"),
            # Never served (--skip-serve-logs everywhere); free ports anyway so nothing can clash.
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        }

    def _celery_settings(self) -> dict[str, str]:
        return {
            "AIRFLOW__CELERY__BROKER_URL": self.broker_url,
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + services.sqlalchemy_url(self.metadata_db, "postgresql"),
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.worker_concurrency),
            "AIRFLOW__OPERATORS__DEFAULT_QUEUE": str(self.queue),
        }

    def _broker_known(self) -> bool:
        return self.redis_db is not None

    @property
    def broker_url(self) -> str:
        return services.redis_url(self.redis_db if self.redis_db is not None else 0)

    def _airflow(self, *args: str) -> list[str]:
        return [str(Path(sys.executable).parent / "airflow"), *args]

    # -- lifecycle --------------------------------------------------------------------------------------
    def start(self, timeout: float = 300.0, expect_dags: Iterable[str] = (), *, unpause: bool = True) -> None:
        """Create (or reuse) the metadata DB, migrate it, start every component and wait until all are ready
        and ``expect_dags`` are parsed by this start's dag-processor (then unpause them, with ``unpause``).
        Stops everything again if anything fails."""
        atexit.register(self.stop)
        try:
            self._start(timeout, list(expect_dags), unpause)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout: float, expect_dags: list[str], unpause: bool) -> None:
        began = datetime.now(UTC)
        deadline = time.monotonic() + timeout
        self._before_start()
        self._check_servers()
        self._start_broker()
        self._prepare_metadata_db()
        self._write_passwords()
        self._write_state()
        self._start_reaper()
        self._say(f"migrating the metadata database {self.metadata_db} (airflow db migrate)")
        self.migrate_metadata_db(deadline)
        self.components = self._components()
        self._say(f"starting {', '.join(c.name for c in self.components)}; logs in {self.logs}")
        for component in self.components:
            self._spawn(component)
        self._write_state()
        self._say("waiting for the api-server to report every component healthy")
        self._wait_ready(deadline)
        if expect_dags:
            self._say(f"waiting for the dag-processor to parse {len(expect_dags)} DAGs")
            self.wait_for_dags(expect_dags, deadline=deadline, unpause=unpause, parsed_since=began)

    def _say(self, message: str) -> None:
        if self.progress is not None:
            self.progress(message)

    def _before_start(self) -> None:
        """A hook for subclasses (the e2e harness sweeps earlier runs here)."""

    def _check_servers(self) -> None:
        try:
            services.check_servers(redis_needed=self.executor == "celery")
        except services.ServiceError as exc:
            raise DeploymentError(str(exc)) from None

    def _start_broker(self) -> None:
        if self.executor == "celery":
            try:
                self.redis_db = services.claim_redis_db(self._redis_owner)
            except services.ServiceError as exc:
                raise DeploymentError(str(exc)) from None

    def _prepare_metadata_db(self) -> None:
        if self.persistent_db is None:
            services.create_database(self.metadata_db)
            self._created_db = True
        elif not services.database_exists(self.metadata_db):
            services.create_database(self.metadata_db)

    def _write_passwords(self) -> None:
        """The passwords file holds our user's password before the api-server starts, so Airflow never
        generates one (it would print it to its log)."""
        write_private(self.passwords_file, json.dumps({USERNAME: self.password}) + "\n")

    def migrate_metadata_db(self, deadline: float) -> None:
        migrate_log = self.logs / "db-migrate.log"
        with migrate_log.open("ab") as out:
            done = subprocess.run(
                self._airflow("db", "migrate"),
                env=self.environment(),
                cwd=self.home,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                timeout=max(30.0, deadline - time.monotonic()),
                check=False,
            )
        if done.returncode != 0:
            raise DeploymentError(
                f"`airflow db migrate` failed ({done.returncode}); log {migrate_log}:\n{tail(migrate_log)}"
            )

    def _components(self) -> list[Component]:
        components = [
            Component(
                "api-server",
                self._airflow("api-server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"),
                self.logs / "api-server.log",
            ),
            Component("scheduler", self._airflow("scheduler", "--skip-serve-logs"), self.logs / "scheduler.log"),
            Component("dag-processor", self._airflow("dag-processor"), self.logs / "dag-processor.log"),
            Component("triggerer", self._airflow("triggerer", "--skip-serve-logs"), self.logs / "triggerer.log"),
        ]
        for index, hostname in enumerate(self.worker_hostnames, start=1):
            args = ["celery", "worker", "--skip-serve-logs", "--celery-hostname", hostname]
            args += ["--queues", str(self.queue), "--concurrency", str(self.worker_concurrency)]
            components.append(Component(f"worker-{index}", self._airflow(*args), self.logs / f"worker-{index}.log"))
        return components

    def _spawn(self, component: Component) -> None:
        with component.log.open("ab") as out:
            out.write(f"===== [{self.label}] {component.name} started at {datetime.now().isoformat()} =====\n".encode())
            out.flush()
            component.proc = subprocess.Popen(
                component.args,
                env=self.environment(),
                cwd=self.home,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=child_setup,
            )
        component.down = False

    # -- fault injection --------------------------------------------------------------------------------
    def component(self, name: str) -> Component:
        for component in self.components:
            if component.name == name:
                return component
        raise KeyError(f"no component {name!r}; have {[c.name for c in self.components]}")

    def component_of(self, pid: int) -> Component | None:
        """The component whose process tree holds ``pid`` (a task process: which worker runs it)."""
        chain = set(ancestors(pid))
        return next((c for c in self.components if c.proc is not None and c.proc.pid in chain), None)

    def kill_component(self, name: str, timeout: float = 30.0) -> list[int]:
        """SIGKILL the component's whole process tree at once -- its process group and every descendant in
        another group (Airflow gives each task process a group of its own) -- like a machine losing the
        process: nothing runs a handler. Returns the pids killed; waits until they are gone."""
        component = self.component(name)
        assert component.proc is not None and component.pgid is not None
        component.down = True
        killed: set[int] = set()
        end = time.monotonic() + timeout
        while True:
            pids = set(process_tree(component.proc.pid)) | set(group_members(component.pgid))
            pids |= {pid for root in killed for pid in process_tree(root)}
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            killed |= pids
            with contextlib.suppress(subprocess.TimeoutExpired):
                component.proc.wait(timeout=0.2)
            if time.monotonic() > end:
                raise DeploymentError(f"{name}: processes {sorted(pids)} still alive {timeout:g}s after SIGKILL")
        return sorted(killed)

    def stop_component(self, name: str, timeout: float = 60.0) -> float:
        """Stop a component the way an operator does (SIGTERM to its group, wait until every process of the
        group is gone); returns how long it took."""
        component = self.component(name)
        assert component.proc is not None and component.pgid is not None
        component.down = True
        began = time.monotonic()
        signal_group(component.pgid, signal.SIGTERM)
        try:
            component.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise DeploymentError(f"{name} still running {timeout:g}s after SIGTERM; log {component.log}") from None
        while group_members(component.pgid):
            if time.monotonic() - began > timeout:
                raise DeploymentError(f"{name}: group {component.pgid} still has {group_members(component.pgid)}")
            time.sleep(0.1)
        return time.monotonic() - began

    def start_component(self, name: str) -> None:
        """Start a stopped or killed component again (same command line, same log file, appended)."""
        component = self.component(name)
        if component.proc is not None and component.proc.poll() is None:
            raise DeploymentError(f"{name} is still running (pid {component.proc.pid})")
        self._spawn(component)
        self._write_state()

    def _restart_broker(self) -> bool:
        """A hook: start the deployment's own broker again if a test stopped it (True if it did)."""
        return False

    def ensure_up(self, timeout: float = 120.0) -> list[str]:
        """Start again whatever a fault test left stopped (a component, the own Redis) and wait until all is
        healthy, so one failed fault test does not fail the tests after it; returns what it started."""
        started = ["redis"] if self._restart_broker() else []
        for component in self.components:
            if component.down and component.proc is not None and component.proc.poll() is not None:
                self.start_component(component.name)
                started.append(component.name)
        self.wait_healthy(timeout)
        return started

    def wait_healthy(self, timeout: float = 120.0) -> None:
        """Wait until the api-server reports every component healthy and every Celery worker answers."""
        self._wait_ready(time.monotonic() + timeout)

    def register_server(self, server: Any) -> None:
        """Record a server the caller started (with ``pid``, ``folder`` and ``on_start``) so the reaper kills it
        if the owner dies before stopping it (the server's folder in its command line guards against a
        recycled pid)."""
        self._servers.append(server)
        server.on_start.append(self._write_state)
        self._write_state()

    def _start_reaper(self) -> None:
        log = (self.logs / "reaper.log").open("ab")
        self._reaper = subprocess.Popen(
            [sys.executable, "-m", __name__, "--reap", str(os.getpid()), str(self.state_file)],
            cwd=self.reaper_cwd or Path.cwd(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    def state(self) -> dict[str, Any]:
        """What the reaper (and a later start) needs to clean up after this run; no secret."""
        return {
            "owner_pid": os.getpid(),
            "reaper_pid": self._reaper.pid if self._reaper is not None else None,
            "executor": self.executor,
            "metadata_db": self.metadata_db if self._created_db else None,
            "shard_databases": self.shard_databases,
            "redis_db": self.redis_db,
            "redis_owner": self._redis_owner,
            "queue": self.queue,
            "url": self.url,
            "pgids": [c.pgid for c in self.components if c.pgid],
            "servers": [{"pid": s.pid, "marker": str(s.folder)} for s in self._servers if s.pid],
            "logs": {c.name: str(c.log) for c in self.components},
            "cleanup_hook": self.cleanup_hook,
            "stopped": self._stopped,
        }

    def _write_state(self) -> None:
        self.state_file.write_text(json.dumps(self.state(), indent=2))

    def check_alive(self) -> None:
        for component in self.components:
            if component.down:
                continue
            if component.proc is not None and component.proc.poll() is not None:
                raise DeploymentError(
                    f"{component.name} exited with {component.proc.returncode}; log {component.log}:\n"
                    f"{tail(component.log)}"
                )

    def _wait(self, what: str, probe: Callable[[], Any], deadline: float, interval: float = 0.5) -> Any:
        import httpx

        last: Any = None
        while True:
            self.check_alive()
            try:
                value = probe()
            except (httpx.HTTPError, OSError) as exc:
                value, last = None, exc
            if value:
                return value
            if value is not None:
                last = value
            if time.monotonic() > deadline:
                raise DeploymentError(
                    f"timed out waiting for {what} (last: {last!r}); logs in {self.logs}:\n" + self.describe_logs()
                )
            time.sleep(interval)

    def health(self) -> Any:
        """True when the api-server reports every component healthy, else what it reports (or False)."""
        import httpx

        response = httpx.get(f"{self.url}/api/v2/monitor/health", timeout=5)
        if response.status_code != 200:
            return False
        data = response.json()
        parts = {name: (data.get(name) or {}).get("status") for name in _HEALTH_PARTS}
        return True if all(s == "healthy" for s in parts.values()) else parts or False

    def _wait_ready(self, deadline: float) -> None:
        self._wait(f"api-server health: {', '.join(_HEALTH_PARTS)} healthy", self.health, deadline)
        if self.worker_hostnames:
            self._wait(f"celery workers {self.worker_hostnames} to answer a ping", self._workers_answer, deadline, 1.0)

    def _workers_answer(self) -> Any:
        from celery import Celery

        app = Celery(broker=self.broker_url)
        try:
            replies = app.control.ping(timeout=1.0) or []
        except Exception as exc:  # the broker restarting (a fault test): try again
            raise OSError(f"celery ping through {self.broker_url}: {type(exc).__name__}: {exc}") from exc
        finally:
            app.close()
        seen = {name for reply in replies for name in reply}
        missing = set(self.worker_hostnames) - seen
        return True if not missing else sorted(seen) or False

    def wait_for_dags(
        self,
        dag_ids: Iterable[str],
        *,
        deadline: float | None = None,
        timeout: float = 180.0,
        unpause: bool = True,
        parsed_since: datetime | None = None,
    ) -> None:
        """Wait until the dag-processor has serialized every DAG in ``dag_ids`` (``parsed_since``: parsed
        after that moment, not only known from an earlier start), failing early with the import error of a
        broken DAG file; then unpause them."""
        wanted = set(dag_ids)
        api = self.api()
        end = deadline if deadline is not None else time.monotonic() + timeout

        def parsed() -> Any:
            missing = wanted - _parsed_dag_ids(api, parsed_since)
            if not missing:
                return True
            errors = api.import_errors()
            if errors and time.monotonic() > end - 1:
                return {"missing": sorted(missing), "import_errors": errors}
            return sorted(missing) or False

        self._wait(f"DAGs {sorted(wanted)} to be parsed", parsed, end, 1.0)
        if unpause:
            for dag_id in sorted(wanted):
                api.request("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False}, expect=200)

    def stop(self, timeout: float = 30.0) -> list[str]:
        """Stop every component (SIGTERM its group, wait, SIGKILL leftovers), drop a throwaway metadata DB,
        empty the Redis DB. Idempotent; returns what had to be forced."""
        if self._stopped:
            return []
        self._stopped = True
        forced = self._stop_components(timeout)
        if self._created_db:
            with contextlib.suppress(Exception):
                services.drop_database(self.metadata_db)
                self._created_db = False
        services.release_redis_db_quietly(self.redis_db, self._redis_owner)
        self._stop_extras()
        with contextlib.suppress(OSError):
            self._write_state()
        if self._reaper is not None and self._reaper.poll() is None:
            self._reaper.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._reaper.wait(timeout=5)
        if forced:
            print(f"[{self.label}] SIGKILLed after {timeout:g}s: {', '.join(forced)}", file=sys.stderr)
        return forced

    def _stop_components(self, timeout: float) -> list[str]:
        """SIGTERM every component's group and the groups of their descendants (task processes have groups
        of their own), wait until all are gone -- repeating the SIGTERM to a component still running after
        ``RESIGNAL_AFTER`` seconds (Airflow's handler can lose it: a ``SystemExit`` raised inside a garbage
        collector callback is ignored) --, SIGKILL what is left -- also orphans whose parent died first;
        returns the components that had to be killed."""
        running = [c for c in self.components if c.proc is not None and c.pgid is not None]
        roots = [c.pgid for c in running if c.pgid is not None]
        tracked = snapshot(roots)
        for pgid in {pgid_of(pid) for pid in tracked} - {None}:
            signal_group(int(pgid or 0), signal.SIGTERM)
        began = time.monotonic()
        resignal = began + RESIGNAL_AFTER
        while time.monotonic() < began + timeout:
            tracked.update(snapshot(roots))
            if not still_alive(tracked):
                break
            if time.monotonic() > resignal:
                for component in running:
                    if component.proc is not None and component.proc.poll() is None:
                        component.proc.send_signal(signal.SIGTERM)
                resignal += RESIGNAL_AFTER
            time.sleep(0.2)
        forced = [c.name for c in running if c.pgid is not None and group_members(c.pgid)]
        for pgid in roots:
            signal_group(pgid, signal.SIGKILL)
        kill_all(tracked)
        for component in running:
            assert component.proc is not None
            with contextlib.suppress(subprocess.TimeoutExpired):
                component.proc.wait(timeout=10)
        end = time.monotonic() + 10  # SIGKILL is asynchronous: until the kernel has removed them
        while still_alive(tracked) and time.monotonic() < end:
            time.sleep(0.1)
        self._tracked = tracked
        return forced

    def _stop_extras(self) -> None:
        """A hook: stop what a subclass started besides the components (its own Redis)."""

    def leftovers(self) -> list[int]:
        """Processes of our groups still alive (must be none after stop())."""
        left = {pid for c in self.components if c.pgid for pid in group_members(c.pgid)}
        return sorted(left | set(still_alive(self._tracked)))

    # -- access -----------------------------------------------------------------------------------------
    def token(self) -> str:
        if self._token is None:
            from airflow_provider_shardmigrate.local.api import ApiError, get_token

            try:
                self._token = get_token(self.url, USERNAME, self.password)
            except ApiError as exc:
                raise DeploymentError(str(exc)) from None
        return self._token

    def api(self) -> AirflowApi:
        from airflow_provider_shardmigrate.local.api import AirflowApi

        return AirflowApi(self.url, self.token())

    def log_files(self) -> dict[str, Path]:
        files = {c.name: c.log for c in self.components}
        files["db-migrate"] = self.logs / "db-migrate.log"
        files["task logs"] = self.home / "logs"
        return files

    def describe_logs(self, lines: int = 15) -> str:
        parts = [f"output folder: {self.output_dir}"]
        for name, path in self.log_files().items():
            parts.append(f"  {name}: {path}")
        for component in self.components:
            parts.append(f"--- last {lines} lines of {component.name} ({component.log}) ---")
            parts.append(tail(component.log, lines))
        return "\n".join(parts)


def _parsed_dag_ids(api: AirflowApi, since: datetime | None) -> set[str]:
    """The DAGs the REST API lists (parsed at or after ``since``, when given)."""
    found = set()
    for dag in api.paginate("/api/v2/dags", "dags"):
        stamp = dag.get("last_parsed_time")
        if since is None or (stamp and datetime.fromisoformat(stamp.replace("Z", "+00:00")) >= since):
            found.add(dag["dag_id"])
    return found


def main(argv: list[str]) -> int:  # pragma: no cover - the reaper's entry point
    if len(argv) == 3 and argv[0] == "--reap":
        reap(int(argv[1]), Path(argv[2]))
        return 0
    print(f"usage: python -m {__name__} --reap OWNER_PID STATE_FILE", file=sys.stderr)
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
