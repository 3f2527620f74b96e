"""SQLite shards, through the Airflow SqliteHook's connection.

SQLite runs DDL transactionally, so apply is one ``BEGIN IMMEDIATE`` transaction holding the DDL and the
history row. The shard lock is an ``flock`` on a sidecar file: it spans the whole protocol (history
check, apply), works across processes on the host that owns the file, and vanishes with a crashed
process. The deadline is enforced inside SQLite: a progress handler interrupts a running statement
and ``busy_timeout`` bounds waits for another writer.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from airflow_provider_shardmigrate.core.deadline import Deadline
from airflow_provider_shardmigrate.core.errors import (
    LockTimeoutError,
    MigrationFailedError,
    MigrationTimeoutError,
)
from airflow_provider_shardmigrate.core.history import HISTORY_COLUMNS, HISTORY_TABLE, HistoryRecord, HistoryStatus
from airflow_provider_shardmigrate.core.sqltext import preview, split_sql
from airflow_provider_shardmigrate.engines.base import ShardEngine

_PROGRESS_OPCODES = 10_000
_LOCK_POLL_SECONDS = 0.05

_CREATE_HISTORY = f"""
CREATE TABLE IF NOT EXISTS {HISTORY_TABLE} (
    migration_id TEXT PRIMARY KEY,
    checksum TEXT NOT NULL,
    description TEXT,
    status TEXT NOT NULL,
    statements_applied INTEGER NOT NULL DEFAULT 0,
    statements_total INTEGER NOT NULL DEFAULT 0,
    applied_at TEXT,
    rolled_back_at TEXT,
    duration_ms INTEGER,
    dag_id TEXT,
    run_id TEXT,
    error TEXT
)"""
_UPSERT = (
    f"INSERT OR REPLACE INTO {HISTORY_TABLE} ({', '.join(HISTORY_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in HISTORY_COLUMNS)})"
)
_SELECT = f"SELECT {', '.join(HISTORY_COLUMNS)} FROM {HISTORY_TABLE}"


def _to_row(record: HistoryRecord) -> tuple[Any, ...]:
    return tuple(value.isoformat() if isinstance(value, datetime) else value for value in record.as_row())


def _from_row(row: tuple[Any, ...]) -> HistoryRecord:
    data = dict(zip(HISTORY_COLUMNS, row, strict=True))
    for key in ("applied_at", "rolled_back_at"):
        data[key] = datetime.fromisoformat(data[key]) if data[key] else None
    data["status"] = HistoryStatus(data["status"])
    data["description"] = data["description"] or ""
    return HistoryRecord(**data)


class SqliteEngine(ShardEngine):
    conn_types = ("sqlite",)
    variant = "sqlite"
    transactional_ddl = True

    def __init__(self, conn_id: str, shard_id: str) -> None:
        super().__init__(conn_id, shard_id)
        self._conn: sqlite3.Connection | None = None
        self.path: Path | None = None

    def _database_path(self) -> Path:
        from airflow.providers.sqlite.hooks.sqlite import SqliteHook

        hook = SqliteHook(sqlite_conn_id=self.conn_id)  # type: ignore[no-untyped-call]
        connection = hook.get_connection(self.conn_id)
        # Airflow keeps the file path in ``host`` (JSON/UI form) or ``schema`` (sqlite:////path URI form).
        raw = connection.host or connection.schema or ""
        if not raw:
            raise MigrationFailedError(
                f"connection '{self.conn_id}' has no database file path (set the connection's host to the file)",
                shard_id=self.shard_id,
            )
        return Path(raw)

    def open(self) -> None:
        self.path = self._database_path()
        if not self.path.is_file():
            # sqlite3 would silently create an empty database: a typo must not become a new, empty shard.
            raise MigrationFailedError(
                f"SQLite database file '{self.path}' (connection '{self.conn_id}') does not exist",
                shard_id=self.shard_id,
            )
        try:
            self._conn = sqlite3.connect(
                f"file:{quote(str(self.path))}?mode=rw", uri=True, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise MigrationFailedError(
                f"cannot open SQLite database '{self.path}': {exc}", shard_id=self.shard_id
            ) from exc

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("engine used outside its 'with' block")
        return self._conn

    # -- history -----------------------------------------------------------------------------------
    def _history_exists(self) -> bool:
        row = self.conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (HISTORY_TABLE,)
        ).fetchone()
        return row is not None

    def ensure_history_table(self) -> None:
        self._guarded(lambda: self.conn.execute(_CREATE_HISTORY), None, "creating the history table")

    def read_history(self, migration_id: str) -> HistoryRecord | None:
        if not self._history_exists():
            return None
        row = self.conn.execute(f"{_SELECT} WHERE migration_id = ?", (migration_id,)).fetchone()
        return _from_row(row) if row else None

    def list_history(self) -> list[HistoryRecord]:
        if not self._history_exists():
            return []
        return [_from_row(row) for row in self.conn.execute(f"{_SELECT} ORDER BY migration_id").fetchall()]

    def save_history(self, record: HistoryRecord) -> None:
        self._guarded(lambda: self.conn.execute(_UPSERT, _to_row(record)), None, "writing the history row")

    # -- locking -----------------------------------------------------------------------------------
    @contextmanager
    def migration_lock(self, deadline: Deadline) -> Iterator[None]:
        assert self.path is not None
        lock_path = self.path.with_name(self.path.name + ".shardmigrate-lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if deadline.expired():
                        raise LockTimeoutError(
                            f"another migration holds the lock on '{self.path}' (waited {deadline.seconds:g}s)",
                            shard_id=self.shard_id,
                        ) from None
                    time.sleep(_LOCK_POLL_SECONDS)
            # Bound the bookkeeping that follows under the lock (history table, history row) by the deadline
            # too: without it a writer holding the database makes them wait sqlite3's default 5 s.
            self.conn.execute(f"PRAGMA busy_timeout = {deadline.remaining_ms()}")
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the flock

    # -- running -----------------------------------------------------------------------------------
    def split(self, script: str) -> list[str]:
        return split_sql(script)

    def _guarded(self, action: Any, deadline: Deadline | None, what: str) -> Any:
        """Run ``action`` with the deadline enforced by SQLite itself, mapping errors to our codes."""
        conn = self.conn
        if deadline is not None:
            conn.execute(f"PRAGMA busy_timeout = {deadline.remaining_ms()}")
            conn.set_progress_handler(lambda: 1 if deadline.expired() else 0, _PROGRESS_OPCODES)
        try:
            return action()
        except sqlite3.OperationalError as exc:
            text = str(exc)
            if "interrupted" in text and deadline is not None:
                raise MigrationTimeoutError(
                    f"per_shard_timeout of {deadline.seconds:g}s exceeded while {what}; SQLite interrupted the "
                    "statement",
                    shard_id=self.shard_id,
                ) from exc
            if "locked" in text or "busy" in text:
                raise LockTimeoutError(
                    f"SQLite database '{self.path}' is locked by another connection ({text}) while {what}",
                    shard_id=self.shard_id,
                ) from exc
            raise MigrationFailedError(f"{what}: {text}", shard_id=self.shard_id) from exc
        except sqlite3.Error as exc:
            raise MigrationFailedError(f"{what}: {exc}", shard_id=self.shard_id) from exc
        finally:
            if deadline is not None:
                conn.set_progress_handler(None, _PROGRESS_OPCODES)

    def run_in_transaction(self, steps: list[str], record: HistoryRecord, deadline: Deadline) -> None:
        conn = self.conn
        self._guarded(lambda: conn.execute("BEGIN IMMEDIATE"), deadline, "starting the transaction")
        try:
            for number, step in enumerate(steps, start=1):
                self._guarded(
                    lambda step=step: conn.execute(step), deadline, f"running statement {number} ({preview(step)})"
                )
            self._guarded(lambda: conn.execute(_UPSERT, _to_row(record)), deadline, "writing the history row")
            self._guarded(lambda: conn.execute("COMMIT"), deadline, "committing")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def run_step(self, step: str, deadline: Deadline) -> None:
        self._guarded(lambda: self.conn.execute(step), deadline, f"running {preview(step)}")

    def query_scalar(self, query: str, deadline: Deadline) -> Any:
        row = self._guarded(lambda: self.conn.execute(query).fetchone(), deadline, "running the validation query")
        return row[0] if row else None
