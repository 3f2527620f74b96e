"""PostgreSQL shards, through the DB-API connection of Airflow's official ``PostgresHook``.

PostgreSQL runs DDL transactionally, so a ``transactional: true`` migration is one transaction holding the
DDL and the history row: a crash, a failure or a timeout leaves both or neither. ``transactional: false``
migrations (``CREATE INDEX CONCURRENTLY`` cannot run inside a transaction block) run statement by
statement in autocommit, with the runner's ``running`` row counting progress.

Why it is built this way:

* **Driver.** Provider 7.x hands out a psycopg 3 connection when psycopg 3 and SQLAlchemy 2 are installed
  and a psycopg2 connection otherwise. The engine only uses what both share (``cursor``, ``execute``,
  ``autocommit``, ``sqlstate``/``pgcode``) and always runs with autocommit on, issuing ``BEGIN``/``COMMIT``
  itself, so both drivers take exactly the same path.
* **Connecting** is inside the shard's time budget: the hook gets a copy of the Airflow connection whose
  ``connect_timeout`` is what is left of the deadline, so an unreachable server ends in
  ``migration_timeout`` when the budget runs out (a refused connection fails at once, ``migration_failed``).
* **Lock.** A *session* advisory lock (``pg_advisory_lock``) per (database, schema): it survives the
  transaction commits and rollbacks inside the protocol, and the server drops it when the session dies,
  so a killed worker never leaves a shard locked. The wait is bounded server-side by ``lock_timeout``.
* **Deadline in the server.** Before every statement ``statement_timeout`` and ``lock_timeout`` are set
  to what is left of ``per_shard_timeout`` (``SET LOCAL`` semantics inside a transaction, session ``SET``
  for autocommit steps). The server cancels the statement itself, so when we report
  ``migration_timeout`` nothing of ours is still running there.
* **Dead clients.** ``client_connection_check_interval`` (PostgreSQL 14+) makes the server notice a
  killed worker within a second and roll its transaction back, instead of finishing a long statement for
  nobody while still holding the shard's lock.
"""

from __future__ import annotations

import hashlib
import logging
import re
import select
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any, NoReturn

from airflow_provider_shardmigrate.core.deadline import Deadline
from airflow_provider_shardmigrate.core.errors import (
    InvalidScriptError,
    LockTimeoutError,
    MigrationFailedError,
    MigrationTimeoutError,
)
from airflow_provider_shardmigrate.core.history import HISTORY_COLUMNS, HISTORY_TABLE, HistoryRecord
from airflow_provider_shardmigrate.core.sqltext import preview, split_sql
from airflow_provider_shardmigrate.engines.dbapi import DbApiEngine, connect_seconds, connection_with_extras

log = logging.getLogger(__name__)

#: Fixed namespace of the advisory lock keys: two int4 keys, (namespace, schema), derived with SHA-256 so
#: every worker, version and Python process computes the same key (``hash()`` is salted per process).
LOCK_NAMESPACE = "airflow-provider-shardmigrate/migration-lock"
#: Bound for our own bookkeeping statements (history reads/writes), which must still run after the
#: migration's deadline has passed (to record a timeout) but must never hang forever.
BOOKKEEPING_TIMEOUT_MS = 30_000
#: How often the server checks that our client is still there while a statement runs (PostgreSQL 14+).
CLIENT_CHECK_INTERVAL_MS = 1_000
#: Bound (seconds) for sending a cancel request when the process is told to stop.
CANCEL_TIMEOUT_S = 5.0

_TIMEOUT_SQLSTATES = frozenset({"57014", "55P03"})  # query_canceled, lock_not_available
_DUPLICATE_SQLSTATES = frozenset({"23505", "42P07"})  # racing CREATE TABLE IF NOT EXISTS

# No CHECK on ``status``: the table outlives package versions on every shard, and a later status must not
# need a history-table migration fleet-wide; HistoryStatus validates values on read.
_CREATE_HISTORY = f"""
CREATE TABLE IF NOT EXISTS {HISTORY_TABLE} (
    migration_id varchar(200) PRIMARY KEY,
    checksum varchar(100) NOT NULL,
    description text NOT NULL DEFAULT '',
    status varchar(16) NOT NULL,
    statements_applied integer NOT NULL DEFAULT 0,
    statements_total integer NOT NULL DEFAULT 0,
    applied_at timestamptz,
    rolled_back_at timestamptz,
    duration_ms bigint,
    dag_id varchar(250),
    run_id varchar(250),
    error text
)"""
_UPSERT = (
    f"INSERT INTO {HISTORY_TABLE} ({', '.join(HISTORY_COLUMNS)}) "
    f"VALUES ({', '.join('%s' for _ in HISTORY_COLUMNS)}) "
    "ON CONFLICT (migration_id) DO UPDATE SET "
    + ", ".join(f"{column} = EXCLUDED.{column}" for column in HISTORY_COLUMNS[1:])
)
_SET_TIMEOUTS = "SELECT set_config('statement_timeout', %s, %s), set_config('lock_timeout', %s, %s)"


#: A statement that ends or opens a transaction on its own (leading comments skipped). Inside our one
#: transaction a script's own ``COMMIT`` would commit half a migration and run the rest without a net.
_TRANSACTION_CONTROL = re.compile(
    r"^(?:\s+|--[^\n]*\n?|/\*.*?\*/)*"
    r"(BEGIN|START\s+TRANSACTION|COMMIT|END|ABORT|PREPARE\s+TRANSACTION"
    r"|ROLLBACK(?!\s+(?:WORK\s+|TRANSACTION\s+)?(?:TO|PREPARED)\b))\b",
    re.IGNORECASE | re.DOTALL,
)


def lock_keys(schema: str) -> tuple[int, int]:
    """The two int4 advisory-lock keys of the shard whose history lives in ``schema``.

    Advisory locks are per database already; the schema half keeps tenants that share one database
    (schema-per-tenant fleets) from serialising on each other.
    """

    def int4(text: str) -> int:
        return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:4], "big", signed=True)

    return int4(LOCK_NAMESPACE), int4(f"{LOCK_NAMESPACE}\0{schema}")


def _sqlstate(exc: BaseException) -> str | None:
    """SQLSTATE of a psycopg 3 (``sqlstate``) or psycopg2 (``pgcode``) error."""
    return getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)


class PostgresEngine(DbApiEngine):
    variant = "postgres"
    transactional_ddl = True
    HISTORY_EXISTS_SQL = "SELECT to_regclass(%s) IS NOT NULL"
    FAMILY = "PostgreSQL"

    def __init__(self, conn_id: str, shard_id: str) -> None:
        super().__init__(conn_id, shard_id)
        self._new_cursor: Callable[[], Any] = lambda: None
        self.schema: str | None = None
        self.server_version = 0

    # -- connection --------------------------------------------------------------------------------
    def _connect(self, deadline: Deadline) -> Any:
        """``PostgresHook.get_conn()`` on a copy of the connection whose extras bound the connect.

        The hook passes extras to libpq as connection keywords: ``connect_timeout`` is what is left of the
        deadline (libpq waits forever by default; psycopg rounds anything below 2 s up to 2 s), lower when
        the connection asks for less, and ``application_name`` labels the session unless it has one.
        """
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        connection = self._airflow_connection(PostgresHook)
        self._secret = connection.password or None
        self.address = f"{connection.host or 'localhost'}:{connection.port or 5432}"
        self.database = str(connection.schema or connection.login or "postgres")
        extras = connection.extra_dejson
        bounded = {
            "connect_timeout": connect_seconds(deadline, extras.get("connect_timeout")),
            "application_name": extras.get("application_name") or f"{self.session_label}:{self.shard_id}"[:63],
        }
        hook = PostgresHook(postgres_conn_id=self.conn_id, connection=connection_with_extras(connection, bounded))
        try:
            return hook.get_conn()
        except Exception as exc:
            raise self._unreachable(exc, deadline) from None  # the driver's error may carry connection parameters

    def _start_session(self, deadline: Deadline) -> None:
        self._bind_driver()
        self.conn.autocommit = True
        self._session_setup(deadline)

    def _bind_driver(self) -> None:
        """Driver-specific bits (error base class, plain-tuple cursors), whichever driver the hook used."""
        module = type(self.conn).__module__
        if module.startswith("psycopg2"):
            import psycopg2
            import psycopg2.extensions

            self._driver_errors = (psycopg2.Error,)
            self.server_version = int(self.conn.server_version)
            # A connection extra may ask the hook for dict cursors; the engine reads rows by position.
            self._new_cursor = lambda: self.conn.cursor(cursor_factory=psycopg2.extensions.cursor)
        else:
            import psycopg
            from psycopg.rows import tuple_row

            self._driver_errors = (psycopg.Error,)
            self.server_version = int(self.conn.info.server_version)
            self._new_cursor = lambda: self.conn.cursor(row_factory=tuple_row)

    def cancel(self) -> None:
        """Ask the server to cancel the statement in flight (called from another thread, see engines/stop.py):
        PostgreSQL's cancel request, over a connection of its own; the statement fails with 57014."""
        conn = self._conn
        if conn is None:
            return
        cancel_safe = getattr(conn, "cancel_safe", None)  # psycopg 3.2+: does not block other threads
        if cancel_safe is not None:
            cancel_safe(timeout=CANCEL_TIMEOUT_S)
        else:  # psycopg2 (and older psycopg 3)
            conn.cancel()

    def _settle_after_interrupt(self) -> None:
        """psycopg 3 waits for results in Python, so a signal's exception (``AirflowTaskTerminated``) can leave
        the connection with the statement still running and its result pending; psycopg settles only its own
        ``KeyboardInterrupt``. Cancel the statement and read the result away, so the failure can be recorded and
        the lock released on this connection."""
        pgconn = getattr(self._conn, "pgconn", None)
        if pgconn is None:  # psycopg2: the call returned with its statement
            return
        from psycopg import pq

        if pgconn.transaction_status != pq.TransactionStatus.ACTIVE:
            return
        try:
            self.cancel()
            end = time.monotonic() + CANCEL_TIMEOUT_S
            while time.monotonic() < end:
                pgconn.consume_input()
                if not pgconn.is_busy():
                    while pgconn.get_result() is not None:
                        pass
                    return
                select.select([pgconn.socket], [], [], 0.1)
        except Exception as exc:  # the connection is then closed with the statement cancelled or not
            log.warning("shard %s: could not settle the connection after a stop: %s", self.shard_id, exc)

    def _session_settings(self, deadline: Deadline) -> list[tuple[str, str]]:
        # Read-only sessions (drift, history listings) get what is left of the deadline for every statement;
        # migration sessions a bookkeeping bound, replaced by the deadline before each migration statement.
        bound = str(deadline.remaining_ms() if self.read_only else BOOKKEEPING_TIMEOUT_MS)
        settings = [("statement_timeout", bound), ("lock_timeout", bound)]
        if self.read_only:
            settings.append(("default_transaction_read_only", "on"))
        if self.server_version >= 140000:
            settings.append(("client_connection_check_interval", str(CLIENT_CHECK_INTERVAL_MS)))
        return settings

    def _session_setup(self, deadline: Deadline) -> None:
        settings = self._session_settings(deadline)
        calls = ", ".join("set_config(%s, %s, false)" for _ in settings)
        params = [value for pair in settings for value in pair]
        row = self._guarded(
            lambda: self._fetchone(f"SELECT current_schema(), current_database(), {calls}", params),
            deadline,
            "setting up the session",
        )
        self.schema, self.database = row[0], row[1]
        if self.schema is None and not self.read_only:
            raise MigrationFailedError(
                f"database '{self.database}' at {self.address}: the connection's search_path names no existing "
                "schema, so there is nowhere to keep the history table (set search_path in the connection's "
                "options, or create the schema)",
                shard_id=self.shard_id,
            )

    def _cursor(self) -> Any:
        return self._new_cursor()

    def _raise_mapped(self, exc: BaseException, deadline: Deadline | None, what: str, *, lock: bool) -> NoReturn:
        state = _sqlstate(exc)
        detail = self._describe(exc)
        if state in _TIMEOUT_SQLSTATES and deadline is not None:
            if lock:
                raise LockTimeoutError(
                    f"another migration holds the lock on database '{self.database}' schema '{self.schema}' at "
                    f"{self.address} (waited {deadline.seconds:g}s)",
                    shard_id=self.shard_id,
                ) from None
            raise MigrationTimeoutError(
                f"per_shard_timeout of {deadline.seconds:g}s exceeded while {what}; PostgreSQL cancelled the "
                f"statement ({state}: {detail})",
                shard_id=self.shard_id,
            ) from None
        if state is None or state.startswith("08"):
            raise MigrationFailedError(
                f"lost the connection to PostgreSQL at {self.address}, database '{self.database}' while {what}: "
                f"{detail}",
                shard_id=self.shard_id,
            ) from None
        raise MigrationFailedError(f"{what}: [{state}] {detail}", shard_id=self.shard_id) from None

    def _set_timeouts(self, deadline: Deadline, *, local: bool) -> None:
        """Give the next statement what is left of the deadline, enforced by the server itself."""
        if deadline.expired():
            raise MigrationTimeoutError(f"per_shard_timeout of {deadline.seconds:g}s exceeded", shard_id=self.shard_id)
        remaining = str(deadline.remaining_ms())
        self._execute(_SET_TIMEOUTS, (remaining, local, remaining, local))

    def _reset_timeouts(self) -> None:
        bookkeeping = str(BOOKKEEPING_TIMEOUT_MS)
        self._execute(_SET_TIMEOUTS, (bookkeeping, False, bookkeeping, False))

    def _reset_timeouts_quietly(self) -> None:
        """Reset after a failed statement without masking its error (the connection may be gone)."""
        try:
            self._reset_timeouts()
        except Exception as exc:
            log.debug("shard %s: resetting timeouts failed: %s", self.shard_id, exc)

    def _rollback_quietly(self) -> None:
        try:
            self._execute("ROLLBACK")
        except Exception as exc:  # the connection may be gone; the server rolls back on its own then
            log.debug("shard %s: ROLLBACK failed: %s", self.shard_id, exc)

    # -- history -----------------------------------------------------------------------------------
    def ensure_history_table(self) -> None:
        if self._history_exists():
            return
        try:
            self._guarded(lambda: self._execute(_CREATE_HISTORY), None, "creating the history table")
            self._history_seen = True
        except MigrationFailedError as exc:
            # Two first-time runs racing (e.g. the CLI without the lock) may both try to create it.
            if any(f"[{state}]" in exc.message for state in _DUPLICATE_SQLSTATES) and self._history_exists():
                return
            raise

    def save_history(self, record: HistoryRecord) -> None:
        self._guarded(lambda: self._execute(_UPSERT, record.as_row()), None, "writing the history row")

    # -- locking -----------------------------------------------------------------------------------
    @contextmanager
    def migration_lock(self, deadline: Deadline) -> Iterator[None]:
        assert self.schema is not None
        keys = lock_keys(self.schema)

        def acquire() -> None:
            if self._fetchone("SELECT pg_try_advisory_lock(%s, %s)", keys)[0]:
                return  # uncontended: one round trip
            # lock_timeout bounds the wait inside the server (no polling, woken the moment the holder lets go).
            remaining = str(deadline.remaining_ms())
            self._execute(_SET_TIMEOUTS, (remaining, False, remaining, False))
            try:
                self._execute("SELECT pg_advisory_lock(%s, %s)", keys)
            except BaseException:
                self._reset_timeouts_quietly()
                raise
            self._reset_timeouts()

        self._guarded(acquire, deadline, "taking the migration lock", lock=True)
        try:
            yield
        finally:
            try:
                self._execute("SELECT pg_advisory_unlock(%s, %s)", keys)
            except Exception as exc:  # connection gone: the server has released the session lock already
                log.debug("shard %s: advisory unlock failed: %s", self.shard_id, exc)

    # -- running -----------------------------------------------------------------------------------
    def split(self, script: str) -> list[str]:
        """Statements via sqlparse, which keeps ``$$``/``$tag$`` bodies, comments and quoted ``;`` intact."""
        return split_sql(script)

    def run_in_transaction(self, steps: list[str], record: HistoryRecord, deadline: Deadline) -> None:
        for number, step in enumerate(steps, start=1):
            control = _TRANSACTION_CONTROL.match(step)
            if control:
                raise InvalidScriptError(
                    f"statement {number} ({preview(step)}) is transaction control ({control.group(1).upper()}): the "
                    "engine runs the whole migration and its history row in one transaction -- remove "
                    "BEGIN/COMMIT from the script, or set 'transactional: false' in migration.yaml",
                    shard_id=self.shard_id,
                )

        def run() -> None:
            self._execute("BEGIN")
            for number, step in enumerate(steps, start=1):
                self._set_timeouts(deadline, local=True)
                self._guarded(
                    partial(self._execute, step),
                    deadline,
                    f"running statement {number} of {len(steps)} ({preview(step)})",
                )
            self._set_timeouts(deadline, local=True)
            self._guarded(lambda: self._execute(_UPSERT, record.as_row()), deadline, "writing the history row")
            self._guarded(lambda: self._execute("COMMIT"), deadline, "committing")

        try:
            self._guarded(run, deadline, "running the migration transaction")
        except BaseException:
            self._rollback_quietly()
            raise

    def run_step(self, step: str, deadline: Deadline) -> None:
        """One statement in autocommit (``CREATE INDEX CONCURRENTLY`` and friends), session timeouts set."""

        def run() -> None:
            self._set_timeouts(deadline, local=False)
            try:
                self._execute(step)
            except BaseException:
                self._reset_timeouts_quietly()
                raise
            self._reset_timeouts()

        self._guarded(run, deadline, f"running {preview(step).rstrip(';')}")

    def query_scalar(self, query: str, deadline: Deadline) -> Any:
        """Run a validation query in a READ ONLY transaction: a canary check must not change the shard."""

        def run() -> Any:
            self._execute("BEGIN TRANSACTION READ ONLY")
            try:
                self._set_timeouts(deadline, local=True)
                return self._guarded(lambda: self._fetchone(query), deadline, "running the validation query")
            finally:
                self._rollback_quietly()

        row = self._guarded(run, deadline, "running the validation query")
        return row[0] if row else None
