"""MySQL and MariaDB shards, through the DB-API connection of Airflow's official ``MySqlHook``.

MySQL commits every DDL statement implicitly, so a migration cannot be one transaction. The engine says
so (``transactional_ddl = False``) and the runner uses the statement-by-statement protocol: a ``running``
row first, ``statements_applied`` updated after every statement, then ``applied``; a re-run resumes after
the last statement that completed.

Why it is built this way:

* **Connecting** is inside the shard's time budget: the driver's ``connect_timeout`` is what is left of the
  deadline, and ``read_timeout``/``write_timeout`` bound every read a little beyond the longest statement
  the server itself bounds, so a server that accepts the connection and never answers ends in
  ``migration_timeout`` instead of hanging the task (:func:`connect_with_timeouts`).
* **Lock.** ``GET_LOCK`` is a session lock with a server-side bounded wait, released when the session ends
  (a killed worker frees the shard as soon as the server notices the disconnect). Its names are global to
  the *server*, not the database, so the name includes the shard's database.
* **Deadline in the server, per flavour, detected at runtime (``SELECT VERSION()``).**
  MariaDB: ``max_statement_time`` (any statement, including DDL waiting for a metadata lock) plus
  ``lock_wait_timeout``/``innodb_lock_wait_timeout``, set from the remaining deadline before each statement.
  MySQL 8: ``max_execution_time`` only covers ``SELECT``, so a watchdog thread opens a second connection and
  issues ``KILL QUERY <connection id>`` when the deadline passes; the lock-wait timeouts are set as a backstop
  one second later, in case the watchdog cannot connect. Either way, when the engine reports
  ``migration_timeout``, the server has already stopped our statement.
* **Not verified against a real MySQL 8 here** (this machine runs MariaDB 10.11): the watchdog path is exercised
  on MariaDB by forcing ``timeout_mode="watchdog"``. MySQL-8-only behaviour that is assumed from its manual,
  not tested: ``SLEEP()`` interrupted by ``KILL QUERY`` returns 1 without an error (the engine treats a fired
  watchdog as a timeout whatever the statement returned); ``GET_LOCK`` with a fractional timeout; ``VALUES()``
  in ``ON DUPLICATE KEY UPDATE`` (deprecated in 8.0.20, still accepted); a ``KILL QUERY`` that reaches an idle
  connection does not hit its next statement (the engine absorbs one with a no-op statement anyway).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Literal, NoReturn, TypeVar

from airflow_provider_shardmigrate.core.deadline import Deadline
from airflow_provider_shardmigrate.core.errors import (
    InvalidScriptError,
    LockTimeoutError,
    MigrationFailedError,
    MigrationTimeoutError,
)
from airflow_provider_shardmigrate.core.history import HISTORY_COLUMNS, HISTORY_TABLE, HistoryRecord
from airflow_provider_shardmigrate.core.sqltext import preview, split_sql
from airflow_provider_shardmigrate.engines.dbapi import DbApiEngine, connect_seconds

log = logging.getLogger(__name__)

T = TypeVar("T")

TimeoutMode = Literal["auto", "server", "watchdog"]

#: Prefix of the ``GET_LOCK`` name; the shard's database follows (hashed when the name would pass 64 chars).
LOCK_PREFIX = "shardmigrate:"
#: Bound (seconds) for our own bookkeeping statements, which must still run after the deadline passed.
BOOKKEEPING_TIMEOUT_S = 30
#: In watchdog mode the server-side lock-wait timeouts fire this much after the watchdog, as a backstop.
WATCHDOG_BACKSTOP_S = 1
#: Seconds the watchdog may spend opening its second connection.
WATCHDOG_CONNECT_S = 5
#: A read may wait this much longer than the longest statement the server bounds (client-side backstop).
READ_SLACK_S = 5

# Server error numbers (same on MySQL and MariaDB unless noted).
ER_LOCK_WAIT_TIMEOUT = 1205  # lock_wait_timeout / innodb_lock_wait_timeout
ER_QUERY_INTERRUPTED = 1317  # KILL QUERY
ER_STATEMENT_TIMEOUT = 1969  # MariaDB max_statement_time
ER_QUERY_TIMEOUT = 3024  # MySQL max_execution_time
_TIMEOUT_ERRNOS = frozenset({ER_LOCK_WAIT_TIMEOUT, ER_STATEMENT_TIMEOUT, ER_QUERY_TIMEOUT})
_CONNECTION_ERRNOS = frozenset({2002, 2003, 2005, 2006, 2013, 2055})  # can't connect / gone away / lost

_CREATE_HISTORY = f"""
CREATE TABLE IF NOT EXISTS {HISTORY_TABLE} (
    migration_id VARCHAR(200) NOT NULL PRIMARY KEY,
    checksum VARCHAR(100) NOT NULL,
    description TEXT NULL,
    status VARCHAR(16) NOT NULL,
    statements_applied INT NOT NULL DEFAULT 0,
    statements_total INT NOT NULL DEFAULT 0,
    applied_at DATETIME(6) NULL COMMENT 'UTC',
    rolled_back_at DATETIME(6) NULL COMMENT 'UTC',
    duration_ms BIGINT NULL,
    dag_id VARCHAR(250) NULL,
    run_id VARCHAR(250) NULL,
    error TEXT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"""
_UPSERT = (
    f"INSERT INTO {HISTORY_TABLE} ({', '.join(HISTORY_COLUMNS)}) "
    f"VALUES ({', '.join('%s' for _ in HISTORY_COLUMNS)}) "
    "ON DUPLICATE KEY UPDATE " + ", ".join(f"{column} = VALUES({column})" for column in HISTORY_COLUMNS[1:])
)


def lock_name(database: str) -> str:
    """The ``GET_LOCK`` name of a shard database (names are server-wide and at most 64 characters)."""
    name = LOCK_PREFIX + database
    if len(name) <= 64:
        return name
    return LOCK_PREFIX + hashlib.sha256(database.encode("utf-8")).hexdigest()[: 64 - len(LOCK_PREFIX)]


def _errno(exc: BaseException) -> int | None:
    """Server/client error number of a mysqlclient (``args[0]``) or mysql-connector (``errno``) error."""
    number = getattr(exc, "errno", None)
    if isinstance(number, int):
        return number
    args = getattr(exc, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def _detail(exc: BaseException) -> str:
    args: tuple[Any, ...] = tuple(getattr(exc, "args", ()))
    message = getattr(exc, "msg", None)  # mysql-connector-python keeps the bare server message here
    if isinstance(message, str) and message:
        text = message
    else:
        text = str(args[1]) if len(args) >= 2 and isinstance(args[0], int) else str(exc)
    return " ".join(text.split()) or type(exc).__name__


def _utc_naive(value: object) -> object:
    """DATETIME has no zone: store UTC (the session ``time_zone`` must not shift history timestamps)."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)
    return value


def connect_with_timeouts(hook: Any, connection: Any, *, connect_timeout: int, read_timeout: int) -> Any:
    """``MySqlHook.get_conn()`` plus the driver's connect, read and write timeouts.

    The one place that reaches past MySqlHook's public surface: the hook (provider 6.x) turns the Airflow
    connection into the driver's keyword arguments but has no setting, extra or argument for the driver's
    timeouts, and without them a server that accepts the TCP connection and never answers blocks the task
    in C code forever. So this does what ``get_conn()`` does -- the hook's own keyword arguments
    (``_get_conn_config_*``: IAM, SSL, charset and cursor extras included) handed to the driver the hook
    would pick -- and adds the timeouts. tests/engines/test_mysql.py fails when the installed provider's
    ``get_conn()`` stops working this way.
    """
    client = connection.extra_dejson.get("client", "mysqlclient")
    if client == "mysqlclient":
        import MySQLdb

        config = hook._get_conn_config_mysql_client(connection)
        return MySQLdb.connect(
            **config, connect_timeout=connect_timeout, read_timeout=read_timeout, write_timeout=read_timeout
        )
    if client == "mysql-connector-python":
        import mysql.connector

        config = hook._get_conn_config_mysql_connector_python(connection)
        return mysql.connector.connect(
            **config, connection_timeout=connect_timeout, read_timeout=read_timeout, write_timeout=read_timeout
        )
    return hook.get_conn()  # any other client: the hook's own behaviour (and its error for an unknown one)


def _check_no_delimiter(script: str) -> None:
    for number, line in enumerate(script.splitlines(), start=1):
        words = line.split(None, 1)
        if words and words[0].upper() == "DELIMITER":
            raise InvalidScriptError(
                f"line {number}: DELIMITER is a command of the mysql command-line client, not SQL; remove the "
                "DELIMITER lines and end each statement (including CREATE TRIGGER/PROCEDURE ... BEGIN ... END) "
                "with a plain ';' -- the engine sends statements one at a time, so bodies keep their inner ';'"
            )


def kill_query(connect: Callable[[], Any], connection_id: int) -> None:
    """``KILL QUERY <connection_id>`` from a second connection: the statement in flight stops with error 1317
    (the session and its ``GET_LOCK`` stay)."""
    conn = connect()
    try:
        cursor = conn.cursor()
        cursor.execute(f"KILL QUERY {int(connection_id)}")
        cursor.close()
    finally:
        conn.close()


class KillQueryWatchdog:
    """Issue ``KILL QUERY <id>`` from a second connection if a statement outlives the deadline (MySQL 8).

    ``stop()`` and the kill share a lock, so once ``stop()`` returns the kill has either happened
    (``fired``) or never will: a late kill cannot land on the statement after the one it was meant for.
    """

    def __init__(self, connect: Callable[[], Any], connection_id: int, seconds: float) -> None:
        self._connect = connect
        self._connection_id = int(connection_id)
        self._lock = threading.Lock()
        self._done = False
        self.fired = False
        self.error: BaseException | None = None
        self._timer = threading.Timer(max(0.0, seconds), self._fire)
        self._timer.daemon = True

    def start(self) -> None:
        self._timer.start()

    def _fire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.fired = True
            try:
                kill_query(self._connect, self._connection_id)
            except Exception as exc:  # the lock-wait backstops still bound the statement
                self.error = exc
                log.warning("KILL QUERY %s failed: %s", self._connection_id, exc)

    def stop(self) -> None:
        self._timer.cancel()
        with self._lock:
            self._done = True


class MySqlEngine(DbApiEngine):
    variant = "mysql"
    transactional_ddl = False
    HISTORY_EXISTS_SQL = (
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = %s"
    )
    FAMILY = "MySQL/MariaDB"

    def __init__(self, conn_id: str, shard_id: str, *, timeout_mode: TimeoutMode = "auto") -> None:
        """``timeout_mode``: ``auto`` (MariaDB -> server, MySQL -> watchdog), or force ``server``/``watchdog``.

        Forcing ``watchdog`` on MariaDB is how the MySQL 8 path is tested on a machine without MySQL 8.
        """
        super().__init__(conn_id, shard_id)
        if timeout_mode not in ("auto", "server", "watchdog"):
            raise ValueError(f"timeout_mode must be auto, server or watchdog, not {timeout_mode!r}")
        self.requested_timeout_mode: TimeoutMode = timeout_mode
        self.timeout_mode: Literal["server", "watchdog"] = "server"
        self._hook: Any = None
        self._connection: Any = None
        self._cursor_class: Any = None
        self.version = ""
        self.is_mariadb = False
        self.connection_id = 0
        #: The watchdog of the last statement (tests read ``fired`` from it).
        self.last_watchdog: KillQueryWatchdog | None = None

    # -- connection --------------------------------------------------------------------------------
    def _connect(self, deadline: Deadline) -> Any:
        from airflow.providers.mysql.hooks.mysql import MySqlHook

        self._connection = self._airflow_connection(MySqlHook)
        self._secret = self._connection.password or None
        self.address = f"{self._connection.host or 'localhost'}:{self._connection.port or 3306}"
        self.database = str(self._connection.schema or "")
        if not self.database:
            raise MigrationFailedError(
                f"Airflow connection '{self.conn_id}' names no database (set its schema): the history table "
                "and the migration lock belong to one database",
                shard_id=self.shard_id,
            )
        self._hook = MySqlHook(mysql_conn_id=self.conn_id, connection=self._connection)
        return self._driver_connection(deadline)

    def _driver_connection(self, deadline: Deadline) -> Any:
        """A new driver connection (the shard's, or the watchdog's second one), connected within ``deadline``.

        Every read of the connection is bounded client-side too: a single read legitimately waits at most
        for the longest statement the server itself bounds (the deadline, or the bookkeeping bound), so a
        server that stops answering is given up on a few seconds after that instead of never.
        """
        read_timeout = max(math.ceil(deadline.remaining()), BOOKKEEPING_TIMEOUT_S) + READ_SLACK_S
        try:
            return connect_with_timeouts(
                self._hook, self._connection, connect_timeout=connect_seconds(deadline), read_timeout=read_timeout
            )
        except Exception as exc:
            raise self._unreachable(exc, deadline) from None  # the driver's error may carry connection parameters

    def _start_session(self, deadline: Deadline) -> None:
        self._bind_driver()
        self._hook.set_autocommit(self.conn, True)
        version, self.connection_id, database = self._guarded(
            lambda: self._fetchone("SELECT VERSION(), CONNECTION_ID(), DATABASE()"), None, "reading the version"
        )
        self.version, self.database = str(version), str(database)
        self.is_mariadb = "mariadb" in self.version.lower()
        if self.read_only:
            self._start_read_only(deadline)
            return
        self.timeout_mode = self._choose_timeout_mode()
        self._set_wait_timeouts(BOOKKEEPING_TIMEOUT_S)

    def _choose_timeout_mode(self) -> Literal["server", "watchdog"]:
        if self.requested_timeout_mode == "auto":
            return "server" if self.is_mariadb else "watchdog"
        if self.requested_timeout_mode == "server" and not self.is_mariadb:
            raise MigrationFailedError(
                f"server-side statement timeouts need MariaDB's max_statement_time; {self.address} runs MySQL "
                f"{self.version} (use timeout_mode 'watchdog' or 'auto')",
                shard_id=self.shard_id,
            )
        return self.requested_timeout_mode

    def _start_read_only(self, deadline: Deadline) -> None:
        """Read-only session whose every statement the server stops at the deadline (MySQL: SELECTs only,
        which is all a read-only session runs)."""
        seconds = max(0.001, deadline.remaining())
        limit = (
            f"max_statement_time = {seconds:.3f}" if self.is_mariadb else f"max_execution_time = {int(seconds * 1000)}"
        )
        self._guarded(
            lambda: self._execute(f"SET SESSION {limit}, SESSION lock_wait_timeout = {max(1, math.ceil(seconds))}"),
            deadline,
            "setting timeouts",
        )
        self._guarded(lambda: self._execute("SET SESSION TRANSACTION READ ONLY"), deadline, "starting read-only")

    def _bind_driver(self) -> None:
        """mysqlclient (the hook's default) or mysql-connector-python (``{"client": ...}`` in the extras)."""
        module = type(self.conn).__module__
        if module.startswith("MySQLdb"):
            import MySQLdb
            import MySQLdb.cursors

            self._driver_errors = (MySQLdb.Error,)
            # A connection extra may ask the hook for dict cursors; the engine reads rows by position.
            self._cursor_class = MySQLdb.cursors.Cursor
        else:
            import mysql.connector

            self._driver_errors = (mysql.connector.Error,)

    def _cursor(self) -> Any:
        return self.conn.cursor(self._cursor_class) if self._cursor_class else self.conn.cursor()

    def _describe(self, exc: BaseException) -> str:
        return self._scrub(_detail(exc))

    def _raise_mapped(self, exc: BaseException, deadline: Deadline | None, what: str, *, lock: bool) -> NoReturn:
        number = _errno(exc)
        detail = self._describe(exc)
        if deadline is not None and (
            number in _TIMEOUT_ERRNOS or (number == ER_QUERY_INTERRUPTED and self._watchdog_fired())
        ):
            raise MigrationTimeoutError(
                f"per_shard_timeout of {deadline.seconds:g}s exceeded while {what}; the server stopped the "
                f"statement ({number}: {detail})",
                shard_id=self.shard_id,
            ) from None
        if number in _CONNECTION_ERRNOS or number is None:
            raise MigrationFailedError(
                f"lost the connection to MySQL/MariaDB at {self.address}, database '{self.database}' while {what}: "
                f"{detail}",
                shard_id=self.shard_id,
            ) from None
        raise MigrationFailedError(f"{what}: ({number}) {detail}", shard_id=self.shard_id) from None

    def _watchdog_fired(self) -> bool:
        return self.last_watchdog is not None and self.last_watchdog.fired

    def _set_wait_timeouts(self, seconds: int, statement_seconds: float | None = None) -> None:
        """Session lock-wait bounds (integer seconds, both flavours) and MariaDB's ``max_statement_time``."""
        assignments = [f"lock_wait_timeout = {int(seconds)}", f"innodb_lock_wait_timeout = {int(seconds)}"]
        if self.is_mariadb:
            assignments.append(f"max_statement_time = {statement_seconds or 0:.6f}")
        self._guarded(lambda: self._execute("SET SESSION " + ", ".join(assignments)), None, "setting timeouts")

    def _reset_quietly(self) -> None:
        try:
            self._set_wait_timeouts(BOOKKEEPING_TIMEOUT_S)
        except Exception as exc:  # the connection may be gone; never mask the statement's own error
            log.debug("shard %s: resetting timeouts failed: %s", self.shard_id, exc)

    # -- history -----------------------------------------------------------------------------------
    def ensure_history_table(self) -> None:
        if not self._history_exists():
            self._guarded(lambda: self._execute(_CREATE_HISTORY), None, "creating the history table")
            self._history_seen = True

    def save_history(self, record: HistoryRecord) -> None:
        row = tuple(_utc_naive(value) for value in record.as_row())
        self._guarded(lambda: self._execute(_UPSERT, row), None, "writing the history row")

    # -- locking -----------------------------------------------------------------------------------
    @contextmanager
    def migration_lock(self, deadline: Deadline) -> Iterator[None]:
        name = lock_name(self.database)
        wait = round(deadline.remaining(), 3)
        row = self._guarded(
            lambda: self._fetchone("SELECT GET_LOCK(%s, %s)", (name, wait)), None, "taking the migration lock"
        )
        if not row or row[0] != 1:
            raise LockTimeoutError(
                f"another migration holds the lock '{name}' on {self.address} (waited {deadline.seconds:g}s)",
                shard_id=self.shard_id,
            )
        try:
            yield
        finally:
            try:
                self._execute("SELECT RELEASE_LOCK(%s)", (name,))
            except Exception as exc:  # connection gone: the server released the session's locks
                log.debug("shard %s: RELEASE_LOCK failed: %s", self.shard_id, exc)

    # -- running -----------------------------------------------------------------------------------
    def split(self, script: str) -> list[str]:
        """Statements via sqlparse (keeps ``BEGIN ... END`` bodies of triggers/procedures in one statement)."""
        _check_no_delimiter(script)
        return split_sql(script)

    def run_in_transaction(self, steps: list[str], record: HistoryRecord, deadline: Deadline) -> None:
        """Not offered: MySQL commits DDL implicitly, so "all or nothing" cannot be promised.

        The runner never calls this for MySQL (``transactional_ddl`` is False); a caller that does gets a
        clear error instead of a transaction that silently is not one.
        """
        raise MigrationFailedError(
            "MySQL/MariaDB commit DDL implicitly, so a migration cannot run as one transaction; it runs statement "
            "by statement with a 'running' history row instead",
            shard_id=self.shard_id,
        )

    def run_step(self, step: str, deadline: Deadline) -> None:
        self._run_bounded(lambda: self._execute(step), deadline, f"running {preview(step).rstrip(';')}")

    def _run_bounded(self, action: Callable[[], T], deadline: Deadline, what: str) -> T:
        """Run ``action`` with the rest of the deadline enforced by the server (or the KILL QUERY watchdog)."""
        remaining = deadline.remaining()
        if remaining <= 0:
            raise MigrationTimeoutError(
                f"per_shard_timeout of {deadline.seconds:g}s exceeded before {what}", shard_id=self.shard_id
            )
        self.last_watchdog = None
        if self.timeout_mode == "server":
            # max_statement_time = 0 means "no limit": never let a sliver of time round down to it.
            self._set_wait_timeouts(max(1, math.ceil(remaining)), max(remaining, 0.001))
        else:
            self._set_wait_timeouts(math.ceil(remaining) + WATCHDOG_BACKSTOP_S)
            self.last_watchdog = KillQueryWatchdog(self._watchdog_connection, self.connection_id, remaining)
            self.last_watchdog.start()
        try:
            result = self._guarded(action, deadline, what)
        except BaseException:
            self._stop_watchdog()
            self._reset_quietly()
            raise
        self._stop_watchdog()
        if self._watchdog_fired():
            # MySQL's SLEEP() (and a statement that finished just as the kill arrived) return without an error
            # even though KILL QUERY went out: the deadline passed during this statement.
            self._reset_quietly()
            raise MigrationTimeoutError(
                f"per_shard_timeout of {deadline.seconds:g}s exceeded while {what}; the watchdog issued KILL QUERY",
                shard_id=self.shard_id,
            )
        self._set_wait_timeouts(BOOKKEEPING_TIMEOUT_S)
        return result

    def _watchdog_connection(self) -> Any:
        return self._driver_connection(Deadline(WATCHDOG_CONNECT_S))

    def _settle_after_interrupt(self) -> None:
        """A signal's exception between mysqlclient's ``query()`` and its reading of the result (a statement that
        ended normally, like ``SLEEP()`` after ``KILL QUERY``) leaves that result pending ("Commands out of
        sync"): discard it, so the failure can be recorded and the lock released on this connection."""
        discard = getattr(self._conn, "discard_result", None)  # mysqlclient; mysql-connector has no such state
        if discard is not None:
            with contextlib.suppress(Exception):  # nothing pending
                discard()

    def cancel(self) -> None:
        """Stop the statement in flight (called from another thread, see engines/stop.py): ``KILL QUERY`` from
        a second connection, the watchdog's way."""
        if self._conn is not None and self.connection_id:
            kill_query(self._watchdog_connection, self.connection_id)

    def _stop_watchdog(self) -> None:
        dog = self.last_watchdog
        if dog is None:
            return
        dog.stop()
        if dog.fired:
            # A kill that reached the connection between statements must not hit our next one.
            try:
                self._execute("DO 0")
            except self._driver_errors as exc:
                if _errno(exc) != ER_QUERY_INTERRUPTED:
                    log.debug("shard %s: statement after KILL QUERY failed: %s", self.shard_id, exc)

    def query_scalar(self, query: str, deadline: Deadline) -> Any:
        """Run a validation query in a READ ONLY transaction: a canary check must not change the shard."""

        def run() -> Any:
            self._execute("START TRANSACTION READ ONLY")
            try:
                return self._fetchone(query)
            finally:
                try:
                    self._execute("ROLLBACK")
                except Exception as exc:
                    log.debug("shard %s: ROLLBACK failed: %s", self.shard_id, exc)

        row = self._run_bounded(run, deadline, "running the validation query")
        return row[0] if row else None
