"""What every SQL engine (SQLite, PostgreSQL, MySQL/MariaDB) shares, written once: opening the connection
inside the shard's time budget, closing it, mapping driver errors to our codes (``_guarded``), cursors that
always close and drain, the history table read through one SELECT (one row, several rows, or all), and
error text scrubbed of the connection's password.

Each engine keeps what differs -- how its Airflow hook hands out a connection (``_connect``), its session
set-up, its lock, its timeouts, how it maps its driver's errors (``_raise_mapped``) and how it creates and
writes the history table.
"""

from __future__ import annotations

import json
import logging
import math
from abc import abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import partial
from typing import Any, ClassVar, NoReturn, TypeVar

from airflow_provider_shardmigrate.core.deadline import Deadline
from airflow_provider_shardmigrate.core.errors import (
    MigrationFailedError,
    MigrationTimeoutError,
    ShardMigrateError,
)
from airflow_provider_shardmigrate.core.history import HISTORY_COLUMNS, HISTORY_TABLE, HistoryRecord, HistoryStatus
from airflow_provider_shardmigrate.core.status import redact
from airflow_provider_shardmigrate.engines.base import DEFAULT_OPEN_TIMEOUT_S, ShardEngine

log = logging.getLogger(__name__)

T = TypeVar("T")

SELECT_HISTORY = f"SELECT {', '.join(HISTORY_COLUMNS)} FROM {HISTORY_TABLE}"
#: Ids per ``IN (...)`` list (old SQLite builds allow 999 parameters per statement).
IN_LIST_LIMIT = 900

#: Words drivers use when a connection attempt ran out of time (errno 110 is ETIMEDOUT).
_TIMEOUT_WORDS = ("timeout", "timed out", "system error: 110", "(110)")


def record_from_row(row: Sequence[Any]) -> HistoryRecord:
    """A history row as the driver returns it: zone-less timestamps are UTC (MySQL DATETIME), text
    timestamps are ISO 8601 (SQLite)."""
    data = dict(zip(HISTORY_COLUMNS, row, strict=True))
    for key in ("applied_at", "rolled_back_at"):
        value = data[key]
        if isinstance(value, str):
            value = datetime.fromisoformat(value) if value else None
        if isinstance(value, datetime) and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        data[key] = value
    data["status"] = HistoryStatus(data["status"])
    data["description"] = data["description"] or ""
    return HistoryRecord(**data)


def one_line(exc: BaseException) -> str:
    """The first line of a driver error, whitespace folded (tracebacks and hints stay out of messages)."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    return " ".join(first.split())


def connect_seconds(deadline: Deadline, configured: object = None) -> int:
    """Whole seconds a driver may spend connecting: what is left of the deadline (at least 1), or less when
    the Airflow connection itself asks for less."""
    budget = max(1, math.ceil(deadline.remaining()))
    try:
        wanted = int(float(str(configured))) if configured is not None else 0
    except ValueError:
        wanted = 0
    return min(budget, wanted) if wanted > 0 else budget


def connection_with_extras(connection: Any, extras: Mapping[str, Any]) -> Any:
    """A copy of an Airflow Connection with ``extras`` merged into its extra JSON.

    Hooks take a Connection as a constructor argument (``DbApiHook(connection=...)``), so the engine hands
    its hook this copy: the Connection Airflow resolved (and may cache) is never modified.
    """
    from airflow.sdk import Connection

    return Connection(
        conn_id=connection.conn_id,
        conn_type=connection.conn_type,
        description=getattr(connection, "description", None),
        host=connection.host,
        schema=connection.schema,
        login=connection.login,
        password=connection.password,
        port=connection.port,
        extra=json.dumps({**connection.extra_dejson, **extras}),
    )


class DbApiEngine(ShardEngine):
    """A ShardEngine over one DB-API connection."""

    #: One-row query telling whether the history table exists (parameter: its name).
    HISTORY_EXISTS_SQL: ClassVar[str]
    #: The driver's parameter placeholder.
    PLACEHOLDER: ClassVar[str] = "%s"
    #: Name of the database in messages ("PostgreSQL").
    FAMILY: ClassVar[str]

    def __init__(self, conn_id: str, shard_id: str) -> None:
        super().__init__(conn_id, shard_id)
        self._conn: Any = None
        self._secret: str | None = None
        self._history_seen = False
        self._driver_errors: tuple[type[BaseException], ...] = ()
        self.read_only = False
        #: ``host:port`` (or file) and database, for messages (never the password).
        self.address = "?"
        self.database = "?"

    # -- the connection ----------------------------------------------------------------------------
    def open(self, deadline: Deadline | None = None, *, read_only: bool = False) -> None:
        deadline = deadline if deadline is not None else Deadline(DEFAULT_OPEN_TIMEOUT_S)
        self.read_only = read_only
        self._conn = self._connect(deadline)
        try:
            self._start_session(deadline)
        except BaseException:
            self.close()  # ``with`` never calls __exit__ when __enter__ fails
            raise

    @abstractmethod
    def _connect(self, deadline: Deadline) -> Any:
        """The driver connection, through the engine's Airflow hook, established within ``deadline``."""

    @abstractmethod
    def _start_session(self, deadline: Deadline) -> None:
        """Session set-up right after connecting (timeouts, read-only, what the engine needs to know)."""

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.close()  # also ends any open transaction (rolled back) and frees session locks
        except Exception as exc:  # a dead connection must not mask the shard's real outcome
            log.debug("shard %s: closing the connection failed: %s", self.shard_id, exc)

    @property
    def conn(self) -> Any:
        if self._conn is None:
            raise RuntimeError("engine used outside its 'with' block")
        return self._conn

    def _airflow_connection(self, hook_class: Any) -> Any:
        """The shard's Airflow connection, as the hook resolves it (env, metadata DB, secrets backends)."""
        try:
            return hook_class.get_connection(self.conn_id)
        except Exception as exc:
            raise MigrationFailedError(
                f"cannot read Airflow connection '{self.conn_id}': {type(exc).__name__}: {exc}",
                shard_id=self.shard_id,
            ) from exc

    def _describe(self, exc: BaseException) -> str:
        """A driver error in one line, without the password."""
        return self._scrub(one_line(exc))

    def _unreachable(self, exc: BaseException, deadline: Deadline) -> ShardMigrateError:
        """The error for a failed connection attempt: a timeout when it ran out of time, else a failure."""
        detail = self._describe(exc)
        where = (
            f"{self.FAMILY} at {self.address}, database '{self.database}' (Airflow connection '{self.conn_id}', "
            f"shard '{self.shard_id}')"
        )
        if deadline.expired() or any(word in detail.lower() for word in _TIMEOUT_WORDS):
            return MigrationTimeoutError(
                f"{where} did not answer in time (time budget {deadline.seconds:g}s): {detail}",
                shard_id=self.shard_id,
            )
        return MigrationFailedError(f"cannot connect to {where}: {detail}", shard_id=self.shard_id)

    def _scrub(self, text: str) -> str:
        return redact(text, self._secret)

    # -- errors ------------------------------------------------------------------------------------
    @contextmanager
    def _bounded(self, deadline: Deadline | None) -> Iterator[None]:
        """What the engine does around one guarded action to hold it to ``deadline`` (default: nothing)."""
        yield

    def _guarded(self, action: Callable[[], T], deadline: Deadline | None, what: str, *, lock: bool = False) -> T:
        """Run ``action`` and turn driver errors into our error codes, naming the shard and what we did."""
        try:
            with self._bounded(deadline):
                return action()
        except ShardMigrateError:
            raise
        except self._driver_errors as exc:
            self._raise_mapped(exc, deadline, what, lock=lock)

    @abstractmethod
    def _raise_mapped(self, exc: BaseException, deadline: Deadline | None, what: str, *, lock: bool) -> NoReturn:
        """Raise the ShardMigrateError for a driver error (``lock``: it happened taking the migration lock)."""

    # -- low-level execution -----------------------------------------------------------------------
    def _cursor(self) -> Any:
        return self.conn.cursor()

    def _execute(self, sql: str, params: Sequence[Any] | None = None) -> None:
        cursor = self._cursor()
        try:
            if params is None:
                cursor.execute(sql)
            else:
                cursor.execute(sql, params)
            if cursor.description:
                cursor.fetchall()  # a statement that returns rows is drained before the next one
        except BaseException as exc:
            if not isinstance(exc, Exception):  # a signal handler raised while the driver waited
                self._settle_after_interrupt()
            raise
        finally:
            cursor.close()  # mysqlclient drains further result sets (CALL) here

    def _settle_after_interrupt(self) -> None:
        """Leave the connection usable after a signal's exception interrupted a statement (the failure must
        still be recorded and the lock released on it). Drivers that return only with the statement (mysqlclient,
        psycopg2) have nothing pending; psycopg 3 waits in Python and is left mid-statement (PostgreSQL)."""

    def _fetchone(self, sql: str, params: Sequence[Any] | None = None) -> Any:
        rows = self._fetchall(sql, params)
        return rows[0] if rows else None

    def _fetchall(self, sql: str, params: Sequence[Any] | None = None) -> list[Any]:
        cursor = self._cursor()
        try:
            if params is None:
                cursor.execute(sql)
            else:
                cursor.execute(sql, params)
            return list(cursor.fetchall()) if cursor.description else []
        except BaseException as exc:
            if not isinstance(exc, Exception):
                self._settle_after_interrupt()
            raise
        finally:
            cursor.close()

    # -- history -----------------------------------------------------------------------------------
    def _history_exists(self) -> bool:
        # Once seen, the table stays for this engine's short life: one catalog query per shard, not per call.
        if not self._history_seen:
            row = self._guarded(
                lambda: self._fetchone(self.HISTORY_EXISTS_SQL, (HISTORY_TABLE,)), None, "looking for the history table"
            )
            self._history_seen = bool(row and row[0])
        return self._history_seen

    def read_history(self, migration_id: str) -> HistoryRecord | None:
        if not self._history_exists():
            return None
        row = self._guarded(
            lambda: self._fetchone(f"{SELECT_HISTORY} WHERE migration_id = {self.PLACEHOLDER}", (migration_id,)),
            None,
            "reading the history row",
        )
        return record_from_row(row) if row else None

    def read_history_rows(self, migration_ids: Sequence[str]) -> dict[str, HistoryRecord]:
        """The existing rows of ``migration_ids`` in one query (``WHERE migration_id IN (...)``; one more per
        :data:`IN_LIST_LIMIT` ids, within every engine's bound on parameters)."""
        wanted = list(dict.fromkeys(migration_ids))
        if not wanted or not self._history_exists():
            return {}
        records: dict[str, HistoryRecord] = {}
        for start in range(0, len(wanted), IN_LIST_LIMIT):
            part = wanted[start : start + IN_LIST_LIMIT]
            marks = ", ".join(self.PLACEHOLDER for _ in part)
            rows = self._guarded(
                partial(self._fetchall, f"{SELECT_HISTORY} WHERE migration_id IN ({marks})", part),
                None,
                "reading the history rows",
            )
            records.update((record.migration_id, record) for record in map(record_from_row, rows))
        return records

    def list_history(self) -> list[HistoryRecord]:
        if not self._history_exists():
            return []
        rows = self._guarded(
            lambda: self._fetchall(f"{SELECT_HISTORY} ORDER BY migration_id"), None, "reading the history table"
        )
        return [record_from_row(row) for row in rows]
