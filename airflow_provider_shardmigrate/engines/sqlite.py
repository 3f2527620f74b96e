"""SQLite shards: the database file the Airflow SqliteHook's connection names.

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
from functools import partial
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import quote

from airflow_provider_shardmigrate.core.deadline import Deadline
from airflow_provider_shardmigrate.core.errors import (
    LockTimeoutError,
    MigrationFailedError,
    MigrationTimeoutError,
)
from airflow_provider_shardmigrate.core.history import HISTORY_COLUMNS, HISTORY_TABLE, HistoryRecord
from airflow_provider_shardmigrate.core.sqltext import preview, split_sql
from airflow_provider_shardmigrate.engines.dbapi import DbApiEngine

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


def _to_row(record: HistoryRecord) -> tuple[Any, ...]:
    return tuple(value.isoformat() if isinstance(value, datetime) else value for value in record.as_row())


def database_path(connection: Any) -> str:
    """The database file of an Airflow SQLite connection: ``host`` in the JSON/UI form, ``schema`` in the
    ``sqlite:////path`` URI form ('' when neither is set)."""
    return str(connection.host or connection.schema or "")


class SqliteEngine(DbApiEngine):
    variant = "sqlite"
    transactional_ddl = True
    HISTORY_EXISTS_SQL = "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?"
    PLACEHOLDER = "?"
    FAMILY = "SQLite"

    def __init__(self, conn_id: str, shard_id: str) -> None:
        super().__init__(conn_id, shard_id)
        self._driver_errors = (sqlite3.Error,)
        self.path: Path | None = None

    # -- connection --------------------------------------------------------------------------------
    def _connect(self, deadline: Deadline) -> sqlite3.Connection:
        """The file the SqliteHook's connection names, opened read-write (read-only) and never created.

        ``SqliteHook.get_conn()`` is not used to open it: it decodes ``%`` escapes in the path, cannot open the
        ``sqlite:////path`` URI form, and creates a missing file -- and a typo must not become a new, empty
        shard. The hook resolves the connection (env, metadata DB, secrets backends) as for every engine.
        """
        from airflow.providers.sqlite.hooks.sqlite import SqliteHook

        raw = database_path(self._airflow_connection(SqliteHook))
        if not raw:
            raise MigrationFailedError(
                f"connection '{self.conn_id}' has no database file path (set the connection's host to the file)",
                shard_id=self.shard_id,
            )
        self.path = Path(raw)
        self.address = self.database = str(self.path)
        if not self.path.is_file():
            raise MigrationFailedError(
                f"SQLite database file '{self.path}' (connection '{self.conn_id}') does not exist",
                shard_id=self.shard_id,
            )
        mode = "ro" if self.read_only else "rw"
        try:
            return sqlite3.connect(
                f"file:{quote(str(self.path))}?mode={mode}",
                uri=True,
                isolation_level=None,
                check_same_thread=False,
                timeout=deadline.remaining(),
            )
        except sqlite3.Error as exc:
            raise MigrationFailedError(
                f"cannot open SQLite database '{self.path}': {exc}", shard_id=self.shard_id
            ) from exc

    def _start_session(self, deadline: Deadline) -> None:
        if self.read_only:
            # Readers run their own queries on ``conn`` (drift): the deadline holds for the connection's life.
            self._interrupt_at(deadline)

    def cancel(self) -> None:
        """Interrupt the statement in flight (called from another thread, see engines/stop.py)."""
        conn = self._conn
        if conn is not None:
            conn.interrupt()

    def _interrupt_at(self, deadline: Deadline) -> None:
        self.conn.execute(f"PRAGMA busy_timeout = {deadline.remaining_ms()}")
        self.conn.set_progress_handler(lambda: 1 if deadline.expired() else 0, _PROGRESS_OPCODES)

    @contextmanager
    def _bounded(self, deadline: Deadline | None) -> Iterator[None]:
        """The deadline enforced by SQLite itself: a progress handler interrupts the statement, busy_timeout
        bounds the wait for another writer."""
        if deadline is None:
            yield
            return
        self._interrupt_at(deadline)
        try:
            yield
        finally:
            self.conn.set_progress_handler(None, _PROGRESS_OPCODES)

    def _raise_mapped(self, exc: BaseException, deadline: Deadline | None, what: str, *, lock: bool) -> NoReturn:
        text = str(exc)
        if isinstance(exc, sqlite3.OperationalError):
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

    # -- history -----------------------------------------------------------------------------------
    def ensure_history_table(self) -> None:
        self._guarded(lambda: self._execute(_CREATE_HISTORY), None, "creating the history table")
        self._history_seen = True

    def save_history(self, record: HistoryRecord) -> None:
        self._guarded(lambda: self._execute(_UPSERT, _to_row(record)), None, "writing the history row")

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

    def run_in_transaction(self, steps: list[str], record: HistoryRecord, deadline: Deadline) -> None:
        conn = self.conn
        self._guarded(lambda: self._execute("BEGIN IMMEDIATE"), deadline, "starting the transaction")
        try:
            for number, step in enumerate(steps, start=1):
                self._guarded(
                    partial(self._execute, step),
                    deadline,
                    f"running statement {number} of {len(steps)} ({preview(step)})",
                )
            self._guarded(lambda: self._execute(_UPSERT, _to_row(record)), deadline, "writing the history row")
            self._guarded(lambda: self._execute("COMMIT"), deadline, "committing")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def run_step(self, step: str, deadline: Deadline) -> None:
        self._guarded(partial(self._execute, step), deadline, f"running {preview(step)}")

    def query_scalar(self, query: str, deadline: Deadline) -> Any:
        row = self._guarded(lambda: self._fetchone(query), deadline, "running the validation query")
        return row[0] if row else None
