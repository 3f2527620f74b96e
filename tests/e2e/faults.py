"""Helpers of the fault-matrix tests: one handle per shard database whatever its engine and server, the lock
the test holds so a shard's DDL waits for as long as the test wants, waits on database and REST states
(never on time), and the table of what each scenario did and how long the fleet took to converge.

Waits poll a state and fail with what they last saw once their bound passes; the bounds are generous
failure limits, not expectations. Times are measured and printed, never asserted.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.e2e.deployment import AirflowApi

HISTORY_TABLE = "shardmigrate_history"
#: How a fault migration's statements leave their traces (tests/e2e/scenarios.py: fault_migration).
STEPS_TOTAL = 4
DONE_LOG = ["after", "before"]  # sorted


class WaitTimeout(AssertionError):
    pass


def wait_until(what: str, probe: Callable[[], Any], timeout: float, *, alive: Callable[[], None] | None = None) -> Any:
    """Poll ``probe`` until it returns something truthy (returned); fail naming ``what`` and the last value."""
    end = time.monotonic() + timeout
    last: Any = None
    while True:
        last = probe()
        if last:
            return last
        if alive is not None:
            alive()
        if time.monotonic() > end:
            raise WaitTimeout(f"timed out after {timeout:g}s waiting for {what}; last: {last!r}")
        time.sleep(0.2)


@dataclass
class ShardDb:
    """A shard database on PostgreSQL or MariaDB; ``connect()`` opens a new autocommit DB-API connection."""

    shard_id: str
    engine: str  # "postgres" | "mysql"
    database: str
    connect: Callable[[], Any]
    #: Server session ids of the test's own lock holders (left out when counting shardmigrate's sessions).
    holders: set[int] = field(default_factory=set)

    @property
    def label(self) -> str:
        return "PostgreSQL" if self.engine == "postgres" else "MariaDB"

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        conn = self.connect()
        try:
            cursor = conn.cursor()
            cursor.execute(sql, params or None)
            return list(cursor.fetchall()) if cursor.description else []
        finally:
            conn.close()

    def _catalog(self) -> str:
        return "current_schema()" if self.engine == "postgres" else "DATABASE()"

    def has_table(self, table: str) -> bool:
        sql = (
            f"SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = {self._catalog()} AND table_name = %s"
        )
        return bool(self.rows(sql, (table,))[0][0])

    def has_column(self, table: str, column: str) -> bool:
        sql = (
            "SELECT COUNT(*) FROM information_schema.columns "
            f"WHERE table_schema = {self._catalog()} AND table_name = %s AND column_name = %s"
        )
        return bool(self.rows(sql, (table, column))[0][0])

    def log_steps(self, name: str) -> list[str] | None:
        """The rows of ``e2e_<name>_log`` sorted (None when the table does not exist)."""
        if not self.has_table(f"e2e_{name}_log"):
            return None
        return sorted(str(row[0]) for row in self.rows(f"SELECT step FROM e2e_{name}_log"))

    def history(self, migration_id: str) -> dict[str, Any] | None:
        if not self.has_table(HISTORY_TABLE):
            return None
        conn = self.connect()
        try:
            cursor = conn.cursor()
            cursor.execute(f"SELECT * FROM {HISTORY_TABLE} WHERE migration_id = %s", (migration_id,))
            row = cursor.fetchone()
            return dict(zip([d[0] for d in cursor.description], row, strict=True)) if row else None
        finally:
            conn.close()

    def state(self, name: str, migration_id: str) -> dict[str, Any]:
        """What the fault migration left here: its log rows, the ALTER's column, the history row."""
        row = self.history(migration_id)
        return {
            "log": self.log_steps(name),
            "column": self.has_column("customers", f"e2e_{name}_flag"),
            "history": None if row is None else (row["status"], row["statements_applied"], row["statements_total"]),
            "run_id": None if row is None else row["run_id"],
        }

    def waiting_ddl(self) -> int:
        """Statements of another session waiting for a lock on ``customers`` in an ``ALTER TABLE customers``."""
        if self.engine == "postgres":
            sql = (
                "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
                "AND wait_event_type = 'Lock' AND query ILIKE %s"
            )
        else:
            sql = (
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = DATABASE() "
                "AND ID <> CONNECTION_ID() AND STATE LIKE '%%metadata lock%%' AND INFO LIKE %s"
            )
        return int(self.rows(sql, ("%ALTER TABLE customers%",))[0][0])

    def ours_connected(self) -> int:
        """Sessions of shardmigrate still open on the shard (an orphan of a killed worker counts)."""
        if self.engine == "postgres":
            sql = (
                "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND application_name LIKE 'shardmigrate%%'"
            )
            return int(self.rows(sql)[0][0])
        # MariaDB sessions carry no application name: any session in the database but the observer's and the
        # test's lock holders.
        sql = "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = DATABASE() AND ID <> CONNECTION_ID()"
        return len({int(row[0]) for row in self.rows(sql)} - self.holders)

    @contextlib.contextmanager
    def row_lock(self) -> Iterator[LockHolder]:
        holder = LockHolder(self)
        try:
            yield holder
        finally:
            holder.release()


class LockHolder:
    """An open transaction of the test holding ``SELECT ... FOR UPDATE`` on a row of ``customers`` (PostgreSQL:
    a ROW SHARE table lock; MariaDB: a shared-write metadata lock): any ``ALTER TABLE customers`` waits for
    it until :meth:`release`. A server restart ends it too (release then does nothing)."""

    def __init__(self, shard: ShardDb) -> None:
        self.shard = shard
        self.conn = shard.connect()
        cursor = self.conn.cursor()
        cursor.execute("SELECT pg_backend_pid()" if shard.engine == "postgres" else "SELECT CONNECTION_ID()")
        self.session_id = int(cursor.fetchall()[0][0])
        shard.holders.add(self.session_id)
        cursor.execute("BEGIN")
        cursor.execute("SELECT id FROM customers ORDER BY id LIMIT 1 FOR UPDATE")
        cursor.fetchall()
        self.released = False

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        with contextlib.suppress(Exception):  # the server may have cut the session (a restart)
            self.conn.cursor().execute("ROLLBACK")
        with contextlib.suppress(Exception):
            self.conn.close()


def shard_tis(api: AirflowApi, dag_id: str, run_id: str, shard_ids: list[str]) -> dict[str, dict[str, Any]]:
    """The run's per-shard task instances by shard id: map index = topology order (a task that never ran has
    no rendered Grid label yet)."""
    tis = [t for t in api.task_instances(dag_id, run_id) if t["task_id"] == "shards.apply"]
    return {shard_ids[t["map_index"]]: t for t in tis}


def clear_shards(api: AirflowApi, dag_id: str, run_id: str, map_indexes: list[int]) -> set[tuple[str, int]]:
    """What the README's "Retrying a shard" says to do: clear the shard tasks with their downstream."""
    body = {
        "dry_run": False,
        "dag_run_id": run_id,
        "task_ids": [["shards.apply", index] for index in sorted(map_indexes)],
        "include_downstream": True,
        "only_failed": False,
        "reset_dag_runs": True,
    }
    cleared = api.request("POST", f"/api/v2/dags/{dag_id}/clearTaskInstances", json=body, expect=200).json()
    return {(t["task_id"], t["map_index"]) for t in cleared["task_instances"]}


# -- the table --------------------------------------------------------------------------------------------
@dataclass
class FaultResult:
    scenario: str
    engine: str
    happened: str
    final_state: str
    converge_s: float
    detail: str = ""

    def line(self) -> str:
        return f"| {self.scenario} | {self.engine} | {self.happened} | {self.final_state} | {self.converge_s:.1f} s |"


RESULTS: list[FaultResult] = []


def record(result: FaultResult, output_dir: Path | None = None) -> None:
    """Collect a scenario's result; print it, and keep the table so far in the run's output folder."""
    RESULTS.append(result)
    print(f"\n[e2e fault] {result.line()} {result.detail}")
    if output_dir is not None:
        (output_dir / "fault-matrix.json").write_text(json.dumps([asdict(r) for r in RESULTS], indent=2))
        (output_dir / "fault-matrix.md").write_text(table())


def table() -> str:
    head = "| scenario | engine | what happened | final state | time to converge |\n|---|---|---|---|---|\n"
    return head + "\n".join(r.line() for r in RESULTS) + "\n"
