"""``shardmigrate demo``: a fleet of SQLite shards migrated through Airflow, live, in under a minute.

1. a canary-first rollout (canary, validation query, then the rest in parallel) with a live table;
2. the same DAG again: every shard ``already_applied``, no DDL runs;
3. a rollout that fails on one shard, with auto-rollback: the shards it had applied are rolled back.
Everything runs through real Airflow DAGs (``dag.test()``) on a throwaway Airflow home in the working
folder; the exit code says whether each step behaved as it should.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

from airflow_provider_shardmigrate.cli._common import console, styled
from airflow_provider_shardmigrate.cli.demo_fleet import (
    FAILING_MIGRATION,
    GOOD_MIGRATION,
    LEGACY_SHARD,
    MARKER,
    DemoFleet,
    create_demo_fleet,
)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="migrate a demo fleet of SQLite shards through Airflow, live",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--workdir", type=Path, default=Path("shardmigrate-demo"), help="working folder (default: ./shardmigrate-demo)"
    )
    parser.add_argument("--shards", type=int, default=6, help="number of shards (at least 5; default 6)")
    parser.set_defaults(func=run)


def _prepare_workdir(workdir: Path) -> None:
    if workdir.exists():
        if any(workdir.iterdir()) and not (workdir / MARKER).exists():
            raise SystemExit(f"{workdir} exists and was not made by `shardmigrate demo`; choose another --workdir")
        shutil.rmtree(workdir)


def _configure_airflow(fleet: DemoFleet) -> Path:
    """Environment for a throwaway Airflow home; must run before anything imports Airflow."""
    home = fleet.root / "airflow-home"
    home.mkdir()
    os.environ.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(fleet.dags),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
            **fleet.connections(),
        }
    )
    return home


def _report_table(report: dict[str, Any], title: str) -> Any:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=title)
    for column in ("shard", "outcome", "ms", "detail"):
        table.add_column(column, justify="right" if column == "ms" else "left", overflow="fold")
    for shard_id, status in report["shards"].items():
        detail = status.get("error_message") or ""
        if status.get("error_code"):
            detail = f"[{status['error_code']}] {detail}"
        table.add_row(shard_id, styled(status["outcome"]), str(status["duration_ms"]), escape(detail))
    return table


def _objects(path: Path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    finally:
        conn.close()


def _history(path: Path, migration_id: str) -> str:
    conn = sqlite3.connect(path)
    try:
        row = conn.execute("SELECT status FROM shardmigrate_history WHERE migration_id = ?", (migration_id,)).fetchone()
    except sqlite3.OperationalError:
        return "-"
    finally:
        conn.close()
    return row[0] if row else "-"


class Demo:
    def __init__(self, fleet: DemoFleet, out: Any) -> None:
        self.fleet = fleet
        self.out = out
        self.log = fleet.root / "airflow-tasks.log"
        self.problems: list[str] = []

    def run_dag(self, dag: Any, migration_id: str, title: str, conf: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        from airflow.models.xcom import XComModel
        from airflow.utils.session import create_session

        from airflow_provider_shardmigrate.cli.live import LiveRun, output_to
        from airflow_provider_shardmigrate.core.plans import plan_rollout
        from airflow_provider_shardmigrate.core.scripts import load_migration
        from airflow_provider_shardmigrate.core.topology import load_topology
        from airflow_provider_shardmigrate.dags.layout import REPORT_TASK_ID

        migration = load_migration(self.fleet.dags / "migrations" / migration_id)
        plan = plan_rollout(load_topology(self.fleet.dags / "shards.yaml").shards, migration.options)
        started = time.monotonic()
        with output_to(self.log) as terminal:
            from rich.console import Console

            live_console = Console(file=terminal, force_terminal=self.out.is_terminal, width=self.out.width)
            with LiveRun(dag_id=dag.dag_id, migration_id=migration_id, plan=plan, title=title, console=live_console):
                dag_run = dag.test(run_conf=conf)
        with create_session() as session:
            row = (
                session.query(XComModel)
                .filter(
                    XComModel.dag_id == dag.dag_id,
                    XComModel.run_id == dag_run.run_id,
                    XComModel.task_id == REPORT_TASK_ID,
                    XComModel.key == "return_value",
                )
                .one_or_none()
            )
            report = XComModel.deserialize_value(row) if row else {"shards": {}}
        state = str(dag_run.state)
        self.out.print(_report_table(report, f"{title}: run {state} in {time.monotonic() - started:.1f}s"))
        return state, report

    def expect(self, condition: bool, what: str) -> None:
        mark = "[green]ok[/]" if condition else "[bold red]UNEXPECTED[/]"
        self.out.print(f"  {mark} {what}")
        if not condition:
            self.problems.append(what)


def run(args: argparse.Namespace) -> int:
    out = console()
    if args.shards < 5:
        out.print("[red]--shards must be at least 5 (the demo's failing shard is shard-4)[/]")
        return 2
    workdir = args.workdir.resolve()
    started = time.monotonic()
    _prepare_workdir(workdir)
    fleet = create_demo_fleet(workdir, args.shards)
    home = _configure_airflow(fleet)
    out.rule("[bold]shardmigrate demo")
    out.print(f"working folder  {workdir}")
    out.print(
        f"fleet           {len(fleet.shards)} SQLite shards (200 customers, 2000 orders each) in {workdir / 'shards'}"
    )
    out.print(f"dags folder     {fleet.dags}  (migrations/, shards.yaml, shardmigrate_dags.py)")
    out.print(f"Airflow home    {home}  (task logs: {workdir / 'airflow-tasks.log'})")

    demo = Demo(fleet, out)
    with out.status("preparing the Airflow metadata database ..."):
        from airflow_provider_shardmigrate.cli.live import output_to

        with output_to(demo.log):
            from airflow.dag_processing.dagbag import DagBag
            from airflow.utils import db

            db.resetdb()
            bag = DagBag(str(fleet.dags))
    if bag.import_errors:
        out.print(f"[red]DAG import errors: {bag.import_errors}[/]")
        return 1
    good = bag.dags[f"shardmigrate__{GOOD_MIGRATION}"]
    failing = bag.dags[f"shardmigrate__{FAILING_MIGRATION}"]
    out.print(f"DAGs            {', '.join(sorted(bag.dags))}")

    out.rule(f"1. {GOOD_MIGRATION}: canary_first (canary shard-0, validation query, then 3 at a time)")
    state, report = demo.run_dag(good, GOOD_MIGRATION, "rollout", {})
    outcomes = {s["outcome"] for s in report["shards"].values()}
    demo.expect(state == "success" and outcomes == {"succeeded"}, "every shard succeeded; the run is success")
    with_index = [sid for sid, path in fleet.shards.items() if "idx_orders_status" in _objects(path)]
    demo.expect(
        len(with_index) == len(fleet.shards),
        f"idx_orders_status exists on {len(with_index)}/{len(fleet.shards)} shards",
    )

    out.rule(f"2. {GOOD_MIGRATION} again: idempotent")
    state, report = demo.run_dag(good, GOOD_MIGRATION, "re-run", {})
    outcomes = {s["outcome"] for s in report["shards"].values()}
    demo.expect(state == "success" and outcomes == {"already_applied"}, "every shard already_applied; no DDL ran")

    out.rule(f"3. {FAILING_MIGRATION}: parallel, fails on {LEGACY_SHARD}, auto_rollback on")
    state, report = demo.run_dag(failing, FAILING_MIGRATION, "failing rollout", {})
    shards = report["shards"]
    demo.expect(state == "failed", "the run is failed (a shard did not reach the migration)")
    demo.expect(
        shards.get(LEGACY_SHARD, {}).get("outcome") == "failed", f"{LEGACY_SHARD} failed (it holds duplicate emails)"
    )
    others = [sid for sid in fleet.shards if sid != LEGACY_SHARD]
    demo.expect(all(shards[s]["outcome"] == "rolled_back" for s in others), "every other shard was rolled back")
    left = [sid for sid, path in fleet.shards.items() if "idx_customers_email" in _objects(path)]
    demo.expect(not left, f"idx_customers_email exists on no shard (found on: {', '.join(left) or 'none'})")
    histories = {sid: _history(path, FAILING_MIGRATION) for sid, path in fleet.shards.items()}
    demo.expect(
        all(histories[s] == "rolled_back" for s in others),
        "history says rolled_back on the rolled-back shards: " + ", ".join(f"{k}={v}" for k, v in histories.items()),
    )

    out.rule()
    elapsed = time.monotonic() - started
    if demo.problems:
        out.print(f"[bold red]demo finished in {elapsed:.0f}s with {len(demo.problems)} unexpected result(s)[/]")
        return 1
    out.print(
        f"[bold green]demo finished in {elapsed:.0f}s: fleet migrated, re-run as no-ops, failed rollout rolled back[/]"
    )
    out.print(
        f"Next: point your Airflow's dags folder at {fleet.dags} (or copy it), define the shard connections, "
        "and trigger shardmigrate__* from the UI or the REST API."
    )
    return 0
