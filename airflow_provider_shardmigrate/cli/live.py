"""Run a migration DAG in-process with ``dag.test()`` while a live per-shard table follows it.

Airflow's own task logging goes to a log file (it would scroll the table away); the display polls the
metadata DB for task states and per-shard XCom, the same data the Grid shows.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from airflow_provider_shardmigrate.cli._common import styled
from airflow_provider_shardmigrate.core.plans import RolloutPlan
from airflow_provider_shardmigrate.core.status import MigrationProgress


@contextmanager
def output_to(log_file: Path) -> Iterator[Any]:
    """Send fd 1 and 2 to ``log_file``; yield a text stream on the original stdout for the display."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    terminal = os.fdopen(os.dup(saved_out), "w", buffering=1)
    with open(log_file, "a") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield terminal
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved_out, 1)
            os.dup2(saved_err, 2)
            os.close(saved_out)
            os.close(saved_err)
            terminal.close()


def render(progress: MigrationProgress, title: str) -> Any:
    from rich.table import Table

    table = Table(title=title, caption=_caption(progress), min_width=60)
    table.add_column("shard")
    table.add_column("state")
    for shard_id, state in progress.per_shard.items():
        table.add_row(shard_id, styled(state))
    return table


def _caption(progress: MigrationProgress) -> str:
    return (
        f"phase {progress.current_phase} | {progress.completed_shards}/{progress.total_shards} at the migration, "
        f"{progress.failed_shards} failed, {progress.rolled_back_shards} rolled back, "
        f"{progress.stopped_shards} stopped, {progress.remaining_shards} remaining"
    )


class LiveRun:
    """Poll one DAG's newest run and keep a rich ``Live`` table up to date until stopped."""

    def __init__(self, *, dag_id: str, migration_id: str, plan: RolloutPlan, title: str, console: Any) -> None:
        self.dag_id = dag_id
        self.migration_id = migration_id
        self.plan = plan
        self.title = title
        self.console = console
        self.known_runs = self._run_ids()
        self.run_id: str | None = None
        self.progress: MigrationProgress | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="shardmigrate-live", daemon=True)

    def _run_ids(self) -> set[str]:
        from airflow.models.dagrun import DagRun
        from airflow.utils.session import create_session

        with create_session() as session:
            return {r for (r,) in session.query(DagRun.run_id).filter(DagRun.dag_id == self.dag_id)}

    def _poll(self) -> MigrationProgress | None:
        from airflow.utils.session import create_session

        from airflow_provider_shardmigrate.progress import read_progress

        if self.run_id is None:
            new = self._run_ids() - self.known_runs
            if not new:
                return None
            self.run_id = sorted(new)[-1]
        with create_session() as session:
            progress = read_progress(
                session, dag_id=self.dag_id, run_id=self.run_id, migration_id=self.migration_id, plan=self.plan
            )
        return progress

    def _loop(self) -> None:
        from rich.live import Live
        from rich.text import Text

        with Live(Text("starting the run ..."), console=self.console, refresh_per_second=8) as live:
            while True:
                stopping = self._stop.is_set()
                try:
                    polled = self._poll()
                except Exception:  # the metadata DB may be busy for a moment; the next poll catches up
                    polled = None
                if polled is not None:
                    self.progress = polled
                    live.update(render(polled, self.title))
                if stopping:
                    break
                self._stop.wait(0.25)

    def __enter__(self) -> LiveRun:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
