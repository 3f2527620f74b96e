"""SQL Server shards, through the pymssql connection of Airflow's official ``MsSqlHook``.

**Not verified against a live SQL Server**: no server can run on the development machine. What is checked
there: the statement splitting (core/tsql.py), every statement this module can send parsed as T-SQL by
sqlglot, the error-number mapping, and connecting (refused, never answering) with the real pymssql/FreeTDS.
tests/engines/test_contract.py runs the whole engine contract against a real server when
``SHARDMIGRATE_TEST_MSSQL_URL`` is set (``make test-mssql``).

SQL Server runs DDL transactionally, so a ``transactional: true`` migration is one transaction holding every
step and the history row (``transactional_ddl = True``); ``transactional: false`` runs step by step in
autocommit with the runner's ``running`` row and resume, for what cannot run in a transaction (``ALTER
DATABASE``, full-text indexes).

Why it is built this way:

* **Steps** are T-SQL batches and statements (``GO`` lines, then top-level ``;``; core/tsql.py says where a
  batch cannot be cut). Each step is sent as its own batch.
* **Session.** ``SET XACT_ABORT ON`` -- any error, a lock timeout included, aborts the batch and rolls the
  whole transaction back, and so does the server when the client goes away -- ``NOCOUNT ON``, autocommit
  (the engine issues ``BEGIN/COMMIT TRANSACTION`` itself).
* **Lock.** ``sp_getapplock`` with ``@LockOwner = 'Session'`` on a resource named after the default schema
  (application locks belong to one database): it survives the transactions of the protocol and the server
  frees it when the session ends. The wait is ``@LockTimeout`` = what is left of the budget; the return code
  says what happened (-1 timeout, -2 cancelled, -3 deadlock victim, -999 a refused call).
* **Deadline.** SQL Server has no server-side statement timeout. Lock waits are bounded in the server by
  ``SET LOCK_TIMEOUT`` = what is left of the budget, before every step (error 1222); everything else by the
  driver's query timeout (pymssql/FreeTDS, whole seconds, rounded up): FreeTDS then closes the connection,
  and the server, seeing its client gone, aborts the batch and -- ``XACT_ABORT`` -- rolls back. The engine
  then opens a new session, waits until the server no longer lists the old one (``sys.dm_exec_sessions``),
  and takes the lock again, so the history row is written and nothing of ours still runs when
  ``migration_timeout`` is reported.
* **db-lib's query timeout is one value per process** (pymssql sets it with ``dbsettime``). With several
  shards in one process (lanes, the drift pool), the engine sets it to the largest remaining budget among
  the SQL Server statements running at that moment (:class:`_ProcessQueryTimeout`), so no shard's statement is
  cut short by another's; a shard can then overrun its own deadline by the difference, except for lock
  waits, which the server stops at each shard's own deadline. The setting also applies to any other pymssql
  connection of the process.
* **Connecting** is inside the budget: ``login_timeout`` is what is left of it, and ``tds_version`` is fixed
  (7.4, SQL Server 2012 and later; an extra overrides it) because FreeTDS's version probing retries the login
  and doubles the wait.
* **Read-only sessions** (history listings, drift): SQL Server has none, so the session runs in a
  transaction that is never committed, and the engine refuses anything but ``SELECT``/``WITH`` in it.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from functools import partial
from typing import Any, NoReturn

from airflow_provider_shardmigrate.core.deadline import Deadline
from airflow_provider_shardmigrate.core.errors import (
    InvalidScriptError,
    LockTimeoutError,
    MigrationFailedError,
    MigrationTimeoutError,
    ShardMigrateError,
)
from airflow_provider_shardmigrate.core.history import HISTORY_COLUMNS, HISTORY_TABLE, HistoryRecord
from airflow_provider_shardmigrate.core.sqltext import preview
from airflow_provider_shardmigrate.core.tsql import split_tsql
from airflow_provider_shardmigrate.engines.dbapi import DbApiEngine, connect_seconds, connection_with_extras

log = logging.getLogger(__name__)

#: Prefix of the application lock's resource; the default schema follows.
LOCK_PREFIX = "shardmigrate:"
#: Bound (ms) for our own bookkeeping statements, which must still run after the budget is spent.
BOOKKEEPING_TIMEOUT_MS = 30_000
#: After a client-side timeout: budget (s) for the new session, and how long to wait for the old one to end.
REVIVE_CONNECT_S = 10
REVIVE_WAIT_S = 5.0
#: TDS protocol version unless the connection's extras name one (7.4: SQL Server 2012 and later).
DEFAULT_TDS_VERSION = "7.4"
DEFAULT_PORT = 1433

# SQL Server and db-lib error numbers.
ER_LOCK_TIMEOUT = 1222  # LOCK_TIMEOUT exceeded
ER_DEADLOCK = 1205
SYBETIME = 20003  # db-lib: the query timeout passed (FreeTDS closed the connection)
_TIMEOUT_NUMBERS = frozenset({ER_LOCK_TIMEOUT, SYBETIME})
#: db-lib: cannot connect, read/write failed, unexpected EOF, DBPROCESS dead, connection failed.
_CONNECTION_NUMBERS = frozenset({20002, 20004, 20006, 20009, 20017, 20020, 20047})
#: Raised by the engine's own guard when a script ended the migration's transaction.
ER_USER = 50000
_TRANSACTION_GONE = "shardmigrate: the script ended the transaction of the migration"

#: sp_getapplock's return codes.
_LOCK_RESULTS = {
    -1: "timed out",
    -2: "was cancelled",
    -3: "was chosen as a deadlock victim",
    -999: "was refused (parameter validation or another call error)",
}

HISTORY_EXISTS_SQL = "SELECT CASE WHEN OBJECT_ID(%s, 'U') IS NULL THEN 0 ELSE 1 END"
SESSION_SETUP = (
    "SET XACT_ABORT ON; SET NOCOUNT ON; SET LOCK_TIMEOUT {lock_ms}; "
    "SELECT @@SPID, DB_NAME(), SCHEMA_NAME(), CAST(SERVERPROPERTY('ProductVersion') AS nvarchar(128)), "
    "(SELECT login_time FROM sys.dm_exec_sessions WHERE session_id = @@SPID), "
    "HAS_PERMS_BY_NAME(NULL, NULL, 'VIEW SERVER STATE')"
)
#: Read-only sessions: every write of the session is undone when it closes (and the engine refuses them).
READ_ONLY_SETUP = "SET TRANSACTION ISOLATION LEVEL READ COMMITTED; BEGIN TRANSACTION"
SET_LOCK_TIMEOUT = "SET LOCK_TIMEOUT {ms}"
#: Before each step of the one transaction: the step's lock bound, and proof the transaction is still ours.
ARM_STEP = "SET LOCK_TIMEOUT {ms}; IF @@TRANCOUNT <> 1 RAISERROR(N'" + _TRANSACTION_GONE + "', 16, 1)"
BEGIN = "BEGIN TRANSACTION"
COMMIT = "COMMIT TRANSACTION"
ROLLBACK = "IF @@TRANCOUNT > 0 ROLLBACK TRANSACTION"
GET_LOCK = (
    "DECLARE @result int; "
    "EXEC @result = sys.sp_getapplock @Resource = %s, @LockMode = 'Exclusive', @LockOwner = 'Session', "
    "@LockTimeout = %s, @DbPrincipal = 'public'; "
    "SELECT @result"
)
RELEASE_LOCK = "EXEC sys.sp_releaseapplock @Resource = %s, @LockOwner = 'Session', @DbPrincipal = 'public'"
#: Whether the session that a client-side timeout abandoned is still on the server.
OLD_SESSION_ALIVE = "SELECT COUNT(*) FROM sys.dm_exec_sessions WHERE session_id = %s AND login_time = %s"
KILL_SESSION = "KILL {spid}"

# Named constraints: the same names on every shard (SQL Server would invent different ones).
CREATE_HISTORY = f"""
IF OBJECT_ID(N'{HISTORY_TABLE}', N'U') IS NULL
CREATE TABLE {HISTORY_TABLE} (
    migration_id nvarchar(200) NOT NULL CONSTRAINT {HISTORY_TABLE}_pkey PRIMARY KEY,
    checksum nvarchar(100) NOT NULL,
    description nvarchar(max) NOT NULL CONSTRAINT {HISTORY_TABLE}_description_df DEFAULT N'',
    status nvarchar(16) NOT NULL,
    statements_applied int NOT NULL CONSTRAINT {HISTORY_TABLE}_applied_df DEFAULT 0,
    statements_total int NOT NULL CONSTRAINT {HISTORY_TABLE}_total_df DEFAULT 0,
    applied_at datetime2(6) NULL,
    rolled_back_at datetime2(6) NULL,
    duration_ms bigint NULL,
    dag_id nvarchar(250) NULL,
    run_id nvarchar(250) NULL,
    error nvarchar(max) NULL
)"""
#: ``HOLDLOCK``: MERGE is not atomic against a concurrent insert of the same key without it.
UPSERT = (
    f"MERGE {HISTORY_TABLE} WITH (HOLDLOCK) AS target USING (SELECT "
    + ", ".join(f"%s AS {column}" for column in HISTORY_COLUMNS)
    + ") AS source ON target.migration_id = source.migration_id WHEN MATCHED THEN UPDATE SET "
    + ", ".join(f"{column} = source.{column}" for column in HISTORY_COLUMNS[1:])
    + f" WHEN NOT MATCHED THEN INSERT ({', '.join(HISTORY_COLUMNS)}) VALUES ("
    + ", ".join(f"source.{column}" for column in HISTORY_COLUMNS)
    + ");"
)

#: A step that opens or ends a transaction on its own (leading comments skipped): inside the engine's one
#: transaction a script's COMMIT would commit half a migration.
_TRANSACTION_CONTROL = re.compile(
    r"^(?:\s+|--[^\n]*\n?|/\*.*?\*/)*"
    r"(BEGIN\s+(?:TRAN|TRANSACTION|DISTRIBUTED)|COMMIT|ROLLBACK|SAVE\s+(?:TRAN|TRANSACTION))\b",
    re.IGNORECASE | re.DOTALL,
)
_READ_ONLY_STATEMENT = re.compile(r"^\s*(?:SELECT|WITH)\b", re.IGNORECASE)
#: db-lib's boilerplate after the server's own message.
_DBLIB_NOISE = re.compile(r"DB-Lib error message 20018, severity \d+:\s*General SQL Server error: .*$", re.DOTALL)


def lock_resource(schema: str) -> str:
    """The application lock's resource for a shard whose history lives in ``schema`` (at most 255)."""
    return (LOCK_PREFIX + schema)[:255]


def error_number(exc: BaseException) -> int | None:
    """The SQL Server / db-lib number of a pymssql error: ``args[0]`` is ``(number, message)``."""
    args = getattr(exc, "args", ())
    if args and isinstance(args[0], tuple) and args[0] and isinstance(args[0][0], int):
        return args[0][0]
    number = getattr(exc, "number", None)
    return number if isinstance(number, int) else None


def error_text(exc: BaseException) -> str:
    """The message of a pymssql error in one line, without db-lib's boilerplate."""
    args = getattr(exc, "args", ())
    raw: Any = args[0][1] if args and isinstance(args[0], tuple) and len(args[0]) > 1 else str(exc)
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes | bytearray) else str(raw)
    text = _DBLIB_NOISE.sub("", text)
    lines: list[str] = []
    for line in (" ".join(part.split()) for part in text.splitlines()):
        if line and line not in lines:  # db-lib repeats its messages
            lines.append(line)
    return " ".join(lines) or type(exc).__name__


def utc_naive(value: object) -> object:
    """datetime2 has no zone: history timestamps are stored in UTC."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)
    return value


class _ProcessQueryTimeout:
    """db-lib's query timeout, which is one value for the whole process (``dbsettime``).

    Each statement registers its deadline while it runs; the process-wide value is the largest remaining
    budget among them (whole seconds, at least 1), so no statement is cut short by another's setting.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._deadlines: dict[int, float] = {}
        self._next = 0
        self.current: int | None = None

    def seconds_for(self, now: float) -> int:
        longest = max((end - now for end in self._deadlines.values()), default=0.0)
        return max(1, math.ceil(longest))

    @contextmanager
    def bound(self, conn: Any, seconds: float) -> Iterator[None]:
        with self._lock:
            self._next += 1
            token = self._next
            self._deadlines[token] = time.monotonic() + max(seconds, 0.001)
            self._apply(conn)
        try:
            yield
        finally:
            with self._lock:
                del self._deadlines[token]

    def _apply(self, conn: Any) -> None:
        # Set every time (not cached): other pymssql users of the process may have changed it meanwhile.
        self.current = self.seconds_for(time.monotonic())
        conn._conn.query_timeout = self.current  # pymssql: dbsettime(), for every connection of the process


QUERY_TIMEOUT = _ProcessQueryTimeout()


class MsSqlEngine(DbApiEngine):
    variant = "mssql"
    transactional_ddl = True
    HISTORY_EXISTS_SQL = HISTORY_EXISTS_SQL
    FAMILY = "SQL Server"

    def __init__(self, conn_id: str, shard_id: str) -> None:
        super().__init__(conn_id, shard_id)
        self._hook: Any = None
        self._deadline_for_reads: Deadline | None = None
        self._broken = False
        self._lock_held = False
        #: A read-only session's deadline, registered for its whole life: drift reads the connection directly.
        self._session_bound = ExitStack()
        self.schema = "dbo"
        self.spid = 0
        self.login_time: Any = None
        #: VIEW SERVER STATE: the engine can see whether an abandoned session is still on the server.
        self.sees_other_sessions = False
        self.version = ""
        #: What the last client-side timeout left behind, for its message.
        self.revived_note = ""
        #: The engine's own session statements, allowed in a read-only session.
        self._internal = {READ_ONLY_SETUP}

    # -- connection --------------------------------------------------------------------------------
    def _connect(self, deadline: Deadline) -> Any:
        """``MsSqlHook.get_conn()`` on a copy of the connection whose extras bound the login.

        The hook passes extras to ``pymssql.connect``: ``login_timeout`` is what is left of the deadline
        (lower when the connection asks for less), ``tds_version`` is fixed unless set, ``appname`` labels
        the session, ``autocommit`` lets the engine issue its own transactions.
        """
        from airflow.providers.microsoft.mssql.hooks.mssql import MsSqlHook

        connection = self._airflow_connection(MsSqlHook)
        self._secret = connection.password or None
        self.address = f"{connection.host or 'localhost'}:{connection.port or DEFAULT_PORT}"
        self.database = str(connection.schema or "")
        extras = connection.extra_dejson
        bounded = {
            "login_timeout": connect_seconds(deadline, extras.get("login_timeout")),
            "tds_version": extras.get("tds_version") or DEFAULT_TDS_VERSION,
            "appname": extras.get("appname") or f"{self.session_label}:{self.shard_id}"[:128],
            "autocommit": True,
        }
        copy = connection_with_extras(connection, bounded)
        copy.port = connection.port or DEFAULT_PORT  # the hook would pass the text 'None'
        self._hook = MsSqlHook(mssql_conn_id=self.conn_id, connection=copy)
        return self._driver_connection(deadline)

    def _driver_connection(self, deadline: Deadline) -> Any:
        try:
            return self._hook.get_conn()
        except Exception as exc:
            raise self._unreachable(exc, deadline) from None  # the driver's error may carry connection parameters

    def _start_session(self, deadline: Deadline) -> None:
        import pymssql

        self._driver_errors = (pymssql.Error,)
        self._broken = False
        lock_ms = deadline.remaining_ms() if self.read_only else BOOKKEEPING_TIMEOUT_MS
        setup = SESSION_SETUP.format(lock_ms=int(lock_ms))
        self._internal.add(setup)
        row = self._guarded(lambda: self._fetchone(setup), deadline, "setting up the session")
        self.spid, database, schema, self.version, self.login_time, sees_sessions = row
        self.sees_other_sessions = bool(sees_sessions)
        self.database, self.schema = str(database or self.database), str(schema or "dbo")
        if self.read_only:
            self._deadline_for_reads = deadline
            self._session_bound.enter_context(QUERY_TIMEOUT.bound(self.conn, deadline.remaining()))
            self._guarded(lambda: self._execute(READ_ONLY_SETUP), deadline, "starting the read-only transaction")

    def close(self) -> None:
        self._session_bound.close()
        super().close()

    def _cursor(self) -> Any:
        return self.conn.cursor(as_dict=False)  # an extra may ask for dict rows; the engine reads by position

    def _describe(self, exc: BaseException) -> str:
        return self._scrub(error_text(exc))

    # -- statements --------------------------------------------------------------------------------
    def _check_read_only(self, sql: str) -> None:
        if self.read_only and sql not in self._internal and not _READ_ONLY_STATEMENT.match(sql):
            raise MigrationFailedError(
                f"read-only session: refusing to run {preview(sql)} (SQL Server has no read-only sessions; the "
                "engine runs only queries in them)",
                shard_id=self.shard_id,
            )

    def _execute(self, sql: str, params: Sequence[Any] | None = None) -> None:
        """Run one batch and read every result set: an error after the first one is raised, not dropped."""
        self._check_read_only(sql)
        cursor = self._cursor()
        try:
            if params is None:
                cursor.execute(sql)
            else:
                cursor.execute(sql, tuple(params))
            while True:
                if cursor.description:
                    cursor.fetchall()
                if not cursor.nextset():
                    break
        finally:
            cursor.close()

    def _fetchall(self, sql: str, params: Sequence[Any] | None = None) -> list[Any]:
        self._check_read_only(sql)
        return super()._fetchall(sql, tuple(params) if params is not None else None)

    @contextmanager
    def _bounded(self, deadline: Deadline | None) -> Iterator[None]:
        """The driver's query timeout for one action: what is left of ``deadline`` (bookkeeping: 30 s)."""
        if self._broken:
            self._revive()
        reads = self._deadline_for_reads
        if deadline is not None:
            seconds = deadline.remaining()
        elif reads is not None:
            seconds = reads.remaining()
        else:
            seconds = BOOKKEEPING_TIMEOUT_MS / 1000
        with QUERY_TIMEOUT.bound(self.conn, seconds):
            yield

    # -- errors ------------------------------------------------------------------------------------
    def _raise_mapped(self, exc: BaseException, deadline: Deadline | None, what: str, *, lock: bool) -> NoReturn:
        number = error_number(exc)
        detail = self._describe(exc)
        if number == SYBETIME or number in _CONNECTION_NUMBERS or "dbprocess is dead" in detail.lower():
            self._broken = True
        if number in _TIMEOUT_NUMBERS and deadline is not None:
            self._raise_timeout(number, detail, deadline, what, lock=lock)
        if number == ER_USER and _TRANSACTION_GONE in detail:
            raise MigrationFailedError(
                f"{what}: the step before it ended the engine's transaction (a COMMIT or ROLLBACK inside it); "
                "statements after that point in that step may have committed on their own -- check the shard, "
                "remove the transaction control, or set 'transactional: false'",
                shard_id=self.shard_id,
            ) from None
        if number is None or self._broken:
            raise MigrationFailedError(
                f"lost the connection to SQL Server at {self.address}, database '{self.database}' while {what}: "
                f"{detail}",
                shard_id=self.shard_id,
            ) from None
        raise MigrationFailedError(f"{what}: ({number}) {detail}", shard_id=self.shard_id) from None

    def _raise_timeout(self, number: int, detail: str, deadline: Deadline, what: str, *, lock: bool) -> NoReturn:
        note = ""
        if self._broken:  # the driver gave up and closed the connection: make sure the server did too
            self._revive_quietly()
            note = f"; {self.revived_note}"
        if lock:
            raise LockTimeoutError(
                f"another migration holds the lock '{lock_resource(self.schema)}' in database '{self.database}' at "
                f"{self.address} (waited {deadline.seconds:g}s)",
                shard_id=self.shard_id,
            ) from None
        who = "the server stopped the statement" if number == ER_LOCK_TIMEOUT else "the driver's query timeout"
        raise MigrationTimeoutError(
            f"per_shard_timeout of {deadline.seconds:g}s exceeded while {what}; {who} ({number}: {detail}){note}",
            shard_id=self.shard_id,
        ) from None

    # -- a new session after a client-side timeout ----------------------------------------------------
    def _revive_quietly(self) -> None:
        try:
            self._revive()
        except ShardMigrateError as exc:
            self._broken = True  # the next statement tries again
            self.revived_note = f"could not open a new session to check on the old one: {exc.message}"
            log.warning("shard %s: %s", self.shard_id, self.revived_note)

    def _revive(self) -> None:
        """Replace the connection the driver closed: a new session, the old one gone, the lock taken again."""
        old_spid, old_login = self.spid, self.login_time
        held, self._lock_held, self._broken = self._lock_held, False, False
        dead, self._conn = self._conn, None
        if dead is not None:
            try:
                dead.close()
            except Exception as exc:
                log.debug("shard %s: closing the dead connection: %s", self.shard_id, exc)
        deadline = Deadline(REVIVE_CONNECT_S)
        self._conn = self._driver_connection(deadline)
        self._start_session(deadline)
        self.revived_note = self._await_session_end(old_spid, old_login)
        if held:
            self._acquire(Deadline(REVIVE_WAIT_S))

    def _await_session_end(self, spid: int, login_time: Any) -> str:
        """Wait (bounded) until the server no longer lists session ``spid``; KILL it as a last resort."""
        if not self.sees_other_sessions:
            return (
                f"session {spid} is left to the server to end (this login cannot see other sessions: it lacks "
                "VIEW SERVER STATE)"
            )
        end = time.monotonic() + REVIVE_WAIT_S
        while time.monotonic() < end:
            row = self._guarded(lambda: self._fetchone(OLD_SESSION_ALIVE, (spid, login_time)), None, "checking")
            if not row or not row[0]:
                return f"the server ended session {spid}"
            time.sleep(0.1)
        try:
            self._guarded(lambda: self._execute(KILL_SESSION.format(spid=int(spid))), None, f"ending session {spid}")
        except ShardMigrateError as exc:
            return f"session {spid} was still on the server after {REVIVE_WAIT_S:g}s and KILL failed: {exc.message}"
        return f"session {spid} was still on the server after {REVIVE_WAIT_S:g}s: KILLed"

    # -- history -----------------------------------------------------------------------------------
    def _bookkeeping(self, sql: str) -> str:
        return f"{SET_LOCK_TIMEOUT.format(ms=BOOKKEEPING_TIMEOUT_MS)}; {sql}"

    def ensure_history_table(self) -> None:
        if not self._history_exists():
            self._guarded(lambda: self._execute(self._bookkeeping(CREATE_HISTORY)), None, "creating the history table")
            self._history_seen = True

    def save_history(self, record: HistoryRecord) -> None:
        row = tuple(utc_naive(value) for value in record.as_row())
        self._guarded(lambda: self._execute(self._bookkeeping(UPSERT), row), None, "writing the history row")

    # -- locking -----------------------------------------------------------------------------------
    def _acquire(self, deadline: Deadline) -> None:
        resource = lock_resource(self.schema)
        wait_ms = deadline.remaining_ms()
        # The server bounds the wait (@LockTimeout); the driver waits a second longer, so the answer is -1.
        driver = Deadline(wait_ms / 1000 + 1)
        row = self._guarded(
            lambda: self._fetchone(GET_LOCK, (resource, wait_ms)), driver, "taking the migration lock", lock=True
        )
        result = int(row[0]) if row and row[0] is not None else -999
        if result >= 0:
            self._lock_held = True
            return
        if result == -1:
            raise LockTimeoutError(
                f"another migration holds the lock '{resource}' in database '{self.database}' at {self.address} "
                f"(waited {deadline.seconds:g}s)",
                shard_id=self.shard_id,
            )
        raise MigrationFailedError(
            f"sp_getapplock on '{resource}' {_LOCK_RESULTS.get(result, f'returned {result}')} (code {result})",
            shard_id=self.shard_id,
        )

    @contextmanager
    def migration_lock(self, deadline: Deadline) -> Iterator[None]:
        self._acquire(deadline)
        try:
            yield
        finally:
            self._release_quietly()

    def _release_quietly(self) -> None:
        if not self._lock_held or self._broken or self._conn is None:
            return  # a closed session's locks are gone with it
        try:
            self._execute(RELEASE_LOCK, (lock_resource(self.schema),))
        except Exception as exc:  # connection gone: the server released the session's lock already
            log.debug("shard %s: sp_releaseapplock failed: %s", self.shard_id, exc)
        self._lock_held = False

    # -- running -----------------------------------------------------------------------------------
    def split(self, script: str) -> list[str]:
        """T-SQL steps: ``GO`` batches, then top-level statements (core/tsql.py)."""
        return split_tsql(script)

    def _arm(self, deadline: Deadline, sql: str) -> None:
        """Give the next step what is left of the deadline, enforced for lock waits by the server."""
        if deadline.expired():
            raise MigrationTimeoutError(f"per_shard_timeout of {deadline.seconds:g}s exceeded", shard_id=self.shard_id)
        self._execute(sql.format(ms=deadline.remaining_ms()))

    def _refuse_transaction_control(self, steps: list[str]) -> None:
        for number, step in enumerate(steps, start=1):
            control = _TRANSACTION_CONTROL.match(step)
            if control:
                raise InvalidScriptError(
                    f"statement {number} ({preview(step)}) is transaction control "
                    f"({' '.join(control.group(1).upper().split())}): the engine runs the whole migration and its "
                    "history row in one transaction -- remove it from the script, or set 'transactional: false' "
                    "in migration.yaml",
                    shard_id=self.shard_id,
                )

    def run_in_transaction(self, steps: list[str], record: HistoryRecord, deadline: Deadline) -> None:
        self._refuse_transaction_control(steps)
        row = tuple(utc_naive(value) for value in record.as_row())

        def run() -> None:
            self._execute(BEGIN)
            for number, step in enumerate(steps, start=1):
                what = f"running statement {number} of {len(steps)} ({preview(step)})"
                self._guarded(lambda: self._arm(deadline, ARM_STEP), deadline, what)
                self._guarded(partial(self._execute, step), deadline, what)
            self._guarded(lambda: self._arm(deadline, ARM_STEP), deadline, "writing the history row")
            self._guarded(lambda: self._execute(UPSERT, row), deadline, "writing the history row")
            self._guarded(lambda: self._execute(COMMIT), deadline, "committing")

        try:
            self._guarded(run, deadline, "running the migration transaction")
        except BaseException:
            self._rollback_quietly()
            raise

    def _rollback_quietly(self) -> None:
        if self._broken or self._conn is None:
            return  # the server rolled back when the session ended
        try:
            self._execute(ROLLBACK)
        except Exception as exc:
            log.debug("shard %s: ROLLBACK failed: %s", self.shard_id, exc)

    def run_step(self, step: str, deadline: Deadline) -> None:
        """One step in autocommit, its lock waits bounded by the server, the rest by the query timeout."""
        what = f"running {preview(step).rstrip(';')}"
        self._guarded(lambda: self._arm(deadline, SET_LOCK_TIMEOUT), deadline, what)
        self._guarded(partial(self._execute, step), deadline, what)

    def query_scalar(self, query: str, deadline: Deadline) -> Any:
        """Run a validation query in a transaction that is rolled back: a canary check must not change the
        shard (SQL Server has no read-only transactions, so a writing query is undone)."""

        def run() -> Any:
            self._execute(BEGIN)
            try:
                self._arm(deadline, SET_LOCK_TIMEOUT)
                return self._fetchone(query)
            finally:
                self._rollback_quietly()

        row = self._guarded(run, deadline, "running the validation query")
        return row[0] if row else None


def sent_statements() -> dict[str, str]:
    """Every statement text of this module by constant name, rendered with sample values: the tests parse each
    as T-SQL, and fail when a new constant is not listed here."""
    bookkeeping = SET_LOCK_TIMEOUT.format(ms=BOOKKEEPING_TIMEOUT_MS)
    return {
        "SESSION_SETUP": SESSION_SETUP.format(lock_ms=BOOKKEEPING_TIMEOUT_MS),
        "READ_ONLY_SETUP": READ_ONLY_SETUP,
        "SET_LOCK_TIMEOUT": SET_LOCK_TIMEOUT.format(ms=1500),
        "ARM_STEP": ARM_STEP.format(ms=1500),
        "BEGIN": BEGIN,
        "COMMIT": COMMIT,
        "ROLLBACK": ROLLBACK,
        "HISTORY_EXISTS_SQL": HISTORY_EXISTS_SQL,
        "CREATE_HISTORY": f"{bookkeeping}; {CREATE_HISTORY}",
        "UPSERT": f"{bookkeeping}; {UPSERT}",
        "GET_LOCK": GET_LOCK,
        "RELEASE_LOCK": RELEASE_LOCK,
        "OLD_SESSION_ALIVE": OLD_SESSION_ALIVE,
        "KILL_SESSION": KILL_SESSION.format(spid=53),
    }
