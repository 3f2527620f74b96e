"""Helpers shared by the engine tests: the contract suite's ``engine_shard`` fixture, worker processes,
polling, a server that never answers.

``engine_shard`` is parametrised over every implemented engine. Each param is an :class:`EngineShard`: a
fresh shard database with the base schema (``customers``, three rows), its Airflow connection, how to read
back its objects and history rows, how to hold a lock from another session, what the engine can do
(transactional DDL or not) and the few SQL spellings a test needs. tests/engines/test_contract.py runs the
whole suite against each; a new engine (SQL Server, MongoDB) gets it by adding one class to
:data:`ENGINE_SHARDS`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import pytest

from airflow_provider_shardmigrate.core.topology import Shard
from airflow_provider_shardmigrate.engines.base import ShardEngine
from tests.conftest import SqliteFleet
from tests.engines import mongo_dialect
from tests.engines.mssql_server import NOT_RUN_REASON, MsSqlFleet, mssql_fleet, mssql_server, server_url
from tests.mongo_fixtures import NEEDS_REAL, MongoFleet
from tests.server_fixtures import REPO, MySqlFleet, PostgresFleet, conn_id_for

__all__ = ["mssql_fleet", "mssql_server"]  # fixtures of the SQL Server contract shards

T = TypeVar("T")


@pytest.fixture(scope="session", autouse=True)
def _warm_imports() -> None:
    """Import the hooks and drivers once up front, so no timed test pays Airflow's import cost in its deadline."""
    import airflow.providers.microsoft.mssql.hooks.mssql
    import airflow.providers.mongo.hooks.mongo
    import airflow.providers.mysql.hooks.mysql
    import airflow.providers.postgres.hooks.postgres
    import airflow.providers.sqlite.hooks.sqlite  # noqa: F401

    from airflow_provider_shardmigrate.engines import engine_class

    for conn_type in ("sqlite", "postgres", "mysql", "mssql", "mongo"):
        engine_class(conn_type)


def shard(shard_id: str) -> Shard:
    return Shard(shard_id, conn_id_for(shard_id))


def wait_for(probe: Callable[[], T], timeout: float = 15.0, interval: float = 0.05, what: str = "condition") -> T:
    """Poll ``probe`` until it returns something truthy; fail the test after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > end:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


# -- the contract suite's shards ------------------------------------------------------------------------


class EngineShard:
    """One fresh shard of one engine, and everything the contract suite needs to know about that engine."""

    #: Airflow connection type (and ``engine_class`` key).
    kind: ClassVar[str]
    #: Shard id prefix.
    prefix: ClassVar[str]
    #: Whether DDL and the history row commit together (the engine's ``transactional_ddl``).
    transactional_ddl: ClassVar[bool]
    #: Whether the shard is reached over the network (a server that never answers can be simulated).
    network: ClassVar[bool]
    #: Whether the engine cancels its statement in the database when the process is told to stop
    #: (``ShardEngine.cancel``, engines/stop.py); the others leave it to their in-database deadline.
    cancels_on_stop: ClassVar[bool] = True
    #: What ``objects()`` shows of the history table itself.
    history_objects: ClassVar[frozenset[str]]
    #: Outcome code when DDL waits on another session's lock past the deadline.
    blocked_code: ClassVar[str] = "shardmigrate.migration_timeout"
    #: Text in the message for an INSERT into a missing table / a CREATE of an existing one.
    missing_table_code: ClassVar[str]
    exists_code: ClassVar[str]
    #: Any of these in the message proves the database itself stopped the statement at the deadline
    #: (``blocked_evidence``: stopped a statement waiting for another session's lock).
    timeout_evidence: ClassVar[tuple[str, ...]]
    blocked_evidence: ClassVar[tuple[str, ...]]
    #: Sets of modules whose absence must each make the engine ask for its pip extra.
    missing_extra_blocks: ClassVar[tuple[tuple[str, ...], ...]]
    extra: ClassVar[str]

    # A migration with the engine's richer objects (a body with inner semicolons, an index), 3 statements.
    rich_up: ClassVar[str]
    rich_down: ClassVar[str]
    rich_objects: ClassVar[frozenset[str]]
    #: Statements proving the rich objects work, with the rows each returns.
    rich_probe: ClassVar[tuple[tuple[str, list[tuple[Any, ...]]], ...]]
    #: ``(down statement, object it drops)``: the first statement of a rollback that then fails.
    rich_first_down: ClassVar[tuple[str, str]]

    def __init__(self, fleet: Any, shard_id: str) -> None:
        self.fleet = fleet
        self.shard_id = shard_id
        self.conn_id = conn_id_for(shard_id)
        self.shard = Shard(shard_id, self.conn_id)

    def __repr__(self) -> str:
        return f"<{self.kind} shard {self.shard_id}>"

    @classmethod
    def create(cls, request: pytest.FixtureRequest, shard_id: str) -> EngineShard:
        raise NotImplementedError

    def sibling(self, suffix: str) -> EngineShard:
        """Another fresh shard of the same engine, base schema included."""
        shard_id = f"{self.prefix}-{suffix}"
        self.fleet.add(shard_id)
        return type(self)(self.fleet, shard_id)

    # -- SQL spellings ----------------------------------------------------------------------------------
    #: Text of the sleep statements that shows in the server's list of running statements.
    sleep_needle: ClassVar[str]

    def sleep(self, seconds: object) -> str:
        """A statement that runs ``seconds`` (interruptible by the engine's timeout)."""
        raise NotImplementedError

    def controlled_sleep(self) -> str:
        """A statement that runs as long as ``sleep_control.seconds`` says (60: for ever; 0: at once)."""
        raise NotImplementedError

    def add_column(self, table: str, column: str, type_: str) -> str:
        """``ALTER TABLE ... ADD COLUMN`` as the engine spells it."""
        return f"ALTER TABLE {table} ADD COLUMN {column} {type_}"

    # -- reading the shard from outside ------------------------------------------------------------------
    def query(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        return list(self.fleet.query(self.shard_id, sql, tuple(params)))

    def objects(self) -> set[str]:
        return set(self.fleet.objects(self.shard_id))

    def tables(self) -> set[str]:
        return set(self.fleet.tables(self.shard_id))

    def columns(self, table: str) -> set[str]:
        raise NotImplementedError

    def history(self) -> dict[str, dict[str, Any]]:
        return dict(self.fleet.history(self.shard_id))

    def set_sleep(self, seconds: int) -> None:
        if "sleep_control" not in self.tables():
            self.query("CREATE TABLE sleep_control (seconds INTEGER)")
            self.query("INSERT INTO sleep_control VALUES (0)")
        self.query(f"UPDATE sleep_control SET seconds = {int(seconds)}")

    def running(self, needle: str) -> list[Any]:
        """Statements containing ``needle`` still executing on the shard (none may be left after a timeout)."""
        raise NotImplementedError

    def sleeping(self) -> bool:
        """Whether a worker is inside ``controlled_sleep()`` (or at least inside its uncommitted work)."""
        return bool(self.running(self.sleep_needle))

    def after_client_death(self) -> None:
        """Wait until the database has noticed a killed client (where the test can see it)."""

    # -- locks from another session ----------------------------------------------------------------------
    @contextmanager
    def hold_migration_lock(self) -> Iterator[None]:
        with self.fleet.hold_migration_lock(self.shard_id):
            yield

    @contextmanager
    def hold_table_lock(self, table: str = "customers") -> Iterator[None]:
        """Block DDL on ``table`` from another session (SQLite: the whole database)."""
        with self.fleet.hold_table_lock(self.shard_id, table):
            yield

    def migration_lock_held(self) -> bool:
        raise NotImplementedError

    def lock_label(self) -> str:
        """How a lock-timeout message names this shard's migration lock."""
        raise NotImplementedError

    def migration_lock_waiters(self) -> int | None:
        """Sessions waiting for the migration lock; None when the engine cannot show it."""
        return None

    # -- connections -------------------------------------------------------------------------------------
    def unreachable(self, password: str) -> tuple[Shard, list[str]]:
        """A shard of this engine that cannot be reached, its connection holding ``password``; and the
        texts its error message must show."""
        raise NotImplementedError

    def conn_env(self, *, port: int | None = None, password: str | None = None, **extra: Any) -> str:
        """This shard's ``AIRFLOW_CONN_*`` JSON, optionally pointed at another port or with extras."""
        spec = json.loads(self.fleet.conn_env(self.shard_id, password, port))
        if extra:
            spec["extra"] = extra
        return json.dumps(spec)

    def engine(self) -> ShardEngine:
        from airflow_provider_shardmigrate.engines import engine_for

        return engine_for(self.shard)


class SqliteShard(EngineShard):
    kind = "sqlite"
    prefix = "lite"
    transactional_ddl = True
    network = False
    history_objects = frozenset({"shardmigrate_history"})
    blocked_code = "shardmigrate.lock_timeout"  # SQLite locks the whole file: busy_timeout runs out
    missing_table_code = "no such table"
    exists_code = "already exists"
    timeout_evidence = ("interrupted",)
    blocked_evidence = ("locked",)
    missing_extra_blocks = (("airflow.providers.sqlite.hooks",),)  # sqlite3 itself is the standard library
    extra = "sqlite"
    rich_up = """
CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL, note TEXT DEFAULT 'a;b');
CREATE INDEX idx_orders_customer ON orders (customer_id);
CREATE TRIGGER orders_note AFTER INSERT ON orders BEGIN UPDATE orders SET note = 'x' WHERE id = NEW.id; END;
"""
    rich_down = "DROP TRIGGER orders_note;\nDROP TABLE orders;\n"
    rich_objects = frozenset({"orders", "idx_orders_customer", "orders_note"})
    rich_probe = (("INSERT INTO orders (customer_id) VALUES (1)", []), ("SELECT note FROM orders", [("x",)]))
    rich_first_down = ("DROP TRIGGER orders_note;", "orders_note")

    @classmethod
    def create(cls, request: pytest.FixtureRequest, shard_id: str) -> EngineShard:
        fleet: SqliteFleet = request.getfixturevalue("sqlite_fleet")
        fleet.add(shard_id)
        return cls(fleet, shard_id)

    @property
    def path(self) -> Path:
        return Path(self.fleet.paths[self.shard_id])

    sleep_needle = "WITH RECURSIVE"

    def sleep(self, seconds: object) -> str:
        # No sleep() in SQLite: count far enough that only the progress-handler interrupt ends it.
        return (
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < "
            f"{seconds} * 100000000) SELECT count(*) FROM n"
        )

    def controlled_sleep(self) -> str:
        return self.sleep("(SELECT seconds FROM sleep_control)")

    def query(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(self.path, isolation_level=None)
        try:
            cursor = conn.execute(sql, tuple(params))
            return list(cursor.fetchall()) if cursor.description else []
        finally:
            conn.close()

    def tables(self) -> set[str]:
        return {row[0] for row in self.query("SELECT name FROM sqlite_master WHERE type = 'table'")}

    def columns(self, table: str) -> set[str]:
        return {row[0] for row in self.query("SELECT name FROM pragma_table_info(?)", (table,))}

    def running(self, needle: str) -> list[Any]:
        return []  # no server: an interrupted statement is gone with the call that ran it

    def sleeping(self) -> bool:
        # A write transaction in progress has a rollback journal next to the file.
        return Path(f"{self.path}-journal").exists()

    @contextmanager
    def hold_migration_lock(self) -> Iterator[None]:
        fd = os.open(f"{self.path}.shardmigrate-lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    @contextmanager
    def hold_table_lock(self, table: str = "customers") -> Iterator[None]:
        conn = sqlite3.connect(self.path, isolation_level=None)
        try:
            conn.execute("BEGIN EXCLUSIVE")
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()

    def migration_lock_held(self) -> bool:
        fd = os.open(f"{self.path}.shardmigrate-lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # also releases the probe's own lock
        return False

    def lock_label(self) -> str:
        return f"'{self.path}'"

    def unreachable(self, password: str) -> tuple[Shard, list[str]]:
        shard_id = f"{self.prefix}-down"
        path = self.fleet.add(shard_id)
        path.unlink()
        self.fleet.monkeypatch.setenv(
            f"AIRFLOW_CONN_{conn_id_for(shard_id).upper()}",
            json.dumps({"conn_type": "sqlite", "host": str(path), "password": password}),
        )
        return Shard(shard_id, conn_id_for(shard_id)), [str(path), "does not exist", conn_id_for(shard_id)]

    def conn_env(self, *, port: int | None = None, password: str | None = None, **extra: Any) -> str:
        spec: dict[str, Any] = {"conn_type": "sqlite", "host": str(self.path)}
        if extra:
            spec["extra"] = extra
        return json.dumps(spec)


class PostgresShard(EngineShard):
    kind = "postgres"
    prefix = "pg"
    transactional_ddl = True
    network = True
    history_objects = frozenset({"shardmigrate_history", "shardmigrate_history_pkey"})
    missing_table_code = "42P01"
    exists_code = "42P07"
    timeout_evidence = ("57014",)  # query_canceled
    blocked_evidence = ("55P03", "57014")  # lock_not_available (lock_timeout), or statement_timeout first
    missing_extra_blocks = (("psycopg", "psycopg2"), ("airflow.providers.postgres.hooks",))
    extra = "postgres"
    rich_up = """
-- a comment; with a semicolon
CREATE TABLE orders (id SERIAL PRIMARY KEY, customer_id INT NOT NULL, note TEXT DEFAULT 'a;b');
CREATE INDEX idx_orders_customer ON orders (customer_id);
CREATE FUNCTION order_count() RETURNS bigint AS $body$
BEGIN
    RETURN (SELECT count(*) FROM orders); -- semicolons inside the body stay in it
END;
$body$ LANGUAGE plpgsql;
"""
    rich_down = "DROP FUNCTION order_count();\nDROP TABLE orders;\n"
    rich_objects = frozenset({"orders", "idx_orders_customer", "order_count"})
    rich_probe = (("SELECT order_count()", [(0,)]),)
    rich_first_down = ("DROP FUNCTION order_count();", "order_count")

    @classmethod
    def create(cls, request: pytest.FixtureRequest, shard_id: str) -> EngineShard:
        fleet: PostgresFleet = request.getfixturevalue("pg_fleet")
        fleet.add(shard_id)
        return cls(fleet, shard_id)

    sleep_needle = "pg_sleep"

    def sleep(self, seconds: object) -> str:
        return f"SELECT pg_sleep({seconds})"

    def controlled_sleep(self) -> str:
        return "SELECT pg_sleep(seconds) FROM sleep_control"

    def columns(self, table: str) -> set[str]:
        rows = self.query("SELECT column_name FROM information_schema.columns WHERE table_name = %s", (table,))
        return {row[0] for row in rows}

    def running(self, needle: str) -> list[Any]:
        active = [
            row
            for row in self.fleet.activity(self.shard_id)
            if row["state"] == "active" and needle.lower() in str(row["query"]).lower()
        ]
        return active + self.fleet.ours_running(self.shard_id)  # and no session of ours busy at all

    def sleeping(self) -> bool:
        return any(
            "pg_sleep" in str(row["query"]) and row["state"] == "active"
            for row in self.fleet.ours_running(self.shard_id)
        )

    def after_client_death(self) -> None:
        # client_connection_check_interval: the server notices the dead client and rolls back within ~1 s.
        wait_for(lambda: not self.fleet.ours_running(self.shard_id), 10, what="the server to drop the dead session")

    def _lock_rows(self) -> list[tuple[Any, ...]]:
        from airflow_provider_shardmigrate.engines.postgres import lock_keys

        # A two-key advisory lock shows its keys as unsigned classid/objid, with objsubid 2.
        first, second = (key & 0xFFFFFFFF for key in lock_keys("public"))
        return self.query(
            "SELECT granted FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2 AND database = "
            "(SELECT oid FROM pg_database WHERE datname = current_database()) AND classid::bigint = %s AND "
            "objid::bigint = %s",
            (first, second),
        )

    def migration_lock_held(self) -> bool:
        return any(row[0] for row in self._lock_rows())

    def migration_lock_waiters(self) -> int | None:
        return sum(1 for row in self._lock_rows() if not row[0])

    def lock_label(self) -> str:
        return f"database '{self.fleet.databases[self.shard_id]}' schema 'public'"

    def unreachable(self, password: str) -> tuple[Shard, list[str]]:
        shard_id = f"{self.prefix}-down"
        database = self.fleet.add(shard_id, password=password, port=1)
        return Shard(shard_id, conn_id_for(shard_id)), ["127.0.0.1:1", database, conn_id_for(shard_id)]


class MySqlShard(EngineShard):
    kind = "mysql"
    prefix = "my"
    transactional_ddl = False
    network = True
    history_objects = frozenset({"shardmigrate_history"})
    missing_table_code = "1146"
    exists_code = "1050"
    missing_extra_blocks = (("MySQLdb", "mysql.connector"), ("airflow.providers.mysql.hooks",))
    extra = "mysql"
    rich_up = """
CREATE TABLE orders (id INT AUTO_INCREMENT PRIMARY KEY, customer_id INT NOT NULL, note VARCHAR(20) DEFAULT 'a;b');
CREATE INDEX idx_orders_customer ON orders (customer_id);
-- a trigger body keeps its inner semicolons: the engine sends it as one statement, no DELIMITER needed
CREATE TRIGGER orders_note BEFORE INSERT ON orders FOR EACH ROW
BEGIN
    IF NEW.note IS NULL THEN
        SET NEW.note = 'none';
    END IF;
END;
"""
    rich_down = "DROP TRIGGER orders_note;\nDROP TABLE orders;\n"
    rich_objects = frozenset({"orders", "idx_orders_customer", "orders_note"})
    rich_probe = (
        ("INSERT INTO orders (customer_id, note) VALUES (1, NULL)", []),
        ("SELECT note FROM orders", [("none",)]),
    )
    rich_first_down = ("DROP TRIGGER orders_note;", "orders_note")

    @classmethod
    def create(cls, request: pytest.FixtureRequest, shard_id: str) -> EngineShard:
        fleet: MySqlFleet = request.getfixturevalue("mysql_fleet")
        fleet.add(shard_id)
        return cls(fleet, shard_id)

    sleep_needle = "SLEEP("

    def sleep(self, seconds: object) -> str:
        return f"SELECT SLEEP({seconds})"

    def controlled_sleep(self) -> str:
        return "SELECT SLEEP(seconds) FROM sleep_control"

    def columns(self, table: str) -> set[str]:
        rows = self.query(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = DATABASE() AND table_name = %s",
            (table,),
        )
        return {row[0] for row in rows}

    def running(self, needle: str) -> list[Any]:
        return list(self.fleet.running(self.shard_id, needle))

    def _lock_name(self) -> str:
        from airflow_provider_shardmigrate.engines.mysql import lock_name

        return lock_name(self.fleet.databases[self.shard_id])

    @property
    def timeout_evidence(self) -> tuple[str, ...]:  # type: ignore[override]
        # MariaDB's max_statement_time (1969); MySQL 8's KILL QUERY watchdog (1317)
        return ("1969",) if self.fleet.server.is_mariadb else ("1317",)

    blocked_evidence = timeout_evidence

    def migration_lock_held(self) -> bool:
        return self.query("SELECT IS_USED_LOCK(%s)", (self._lock_name(),)) != [(None,)]

    def lock_label(self) -> str:
        return f"'{self._lock_name()}'"

    def migration_lock_waiters(self) -> int | None:
        rows = self.fleet.activity(self.shard_id)
        return sum(1 for row in rows if "GET_LOCK(" in str(row["info"] or "") and row["command"] != "Sleep")

    def unreachable(self, password: str) -> tuple[Shard, list[str]]:
        shard_id = f"{self.prefix}-down"
        database = self.fleet.add(shard_id, password=password, port=1)
        return Shard(shard_id, conn_id_for(shard_id)), ["127.0.0.1:1", database, conn_id_for(shard_id)]


class MsSqlShard(EngineShard):
    """A database on the SQL Server that ``SHARDMIGRATE_TEST_MSSQL_URL`` names (tests/engines/mssql_server.py)."""

    kind = "mssql"
    prefix = "ms"
    transactional_ddl = True
    network = True
    cancels_on_stop = False  # pymssql has no cancel: the query timeout bounds the statement
    history_objects = frozenset({"shardmigrate_history", "shardmigrate_history_pkey"})
    missing_table_code = "208"  # Invalid object name
    exists_code = "2714"  # There is already an object named ...
    timeout_evidence = ("20003",)  # the driver's query timeout (the server then aborts the batch)
    blocked_evidence = ("1222", "20003")  # LOCK_TIMEOUT in the server, or the query timeout first
    missing_extra_blocks = (("pymssql",), ("airflow.providers.microsoft.mssql.hooks",))
    extra = "mssql"
    rich_up = """
-- a comment; with a semicolon
CREATE TABLE orders (id INT IDENTITY(1,1) PRIMARY KEY, customer_id INT NOT NULL, note NVARCHAR(20) DEFAULT 'a;b');
CREATE INDEX idx_orders_customer ON orders (customer_id);
GO
CREATE TRIGGER orders_note ON orders AFTER INSERT AS
BEGIN
    SET NOCOUNT ON; -- semicolons inside the body stay in it
    UPDATE orders SET note = 'x' WHERE id IN (SELECT id FROM inserted);
END;
GO
"""
    rich_down = "DROP TRIGGER orders_note;\nDROP TABLE orders;\n"
    rich_objects = frozenset({"orders", "idx_orders_customer", "orders_note"})
    rich_probe = (("INSERT INTO orders (customer_id) VALUES (1)", []), ("SELECT note FROM orders", [("x",)]))
    rich_first_down = ("DROP TRIGGER orders_note;", "orders_note")
    sleep_needle = "WAITFOR"

    @classmethod
    def create(cls, request: pytest.FixtureRequest, shard_id: str) -> EngineShard:
        fleet: MsSqlFleet = request.getfixturevalue("mssql_fleet")
        fleet.add(shard_id)
        return cls(fleet, shard_id)

    def sleep(self, seconds: object) -> str:
        return f"WAITFOR DELAY '00:00:{int(str(seconds)):02d}'"

    def controlled_sleep(self) -> str:
        # No variable (a batch with one runs whole, as one step): poll the control row instead.
        return "WHILE (SELECT seconds FROM sleep_control) > 0 WAITFOR DELAY '00:00:00.100'"

    def add_column(self, table: str, column: str, type_: str) -> str:
        return f"ALTER TABLE {table} ADD {column} {type_}"

    def columns(self, table: str) -> set[str]:
        rows = self.query("SELECT name FROM sys.columns WHERE object_id = OBJECT_ID(%s)", (table,))
        return {row[0] for row in rows}

    def running(self, needle: str) -> list[Any]:
        return list(self.fleet.running(self.shard_id, needle))

    def after_client_death(self) -> None:
        wait_for(lambda: self.fleet.ours(self.shard_id) == 0, 30, what="SQL Server to end the dead session")

    def migration_lock_held(self) -> bool:
        return bool(self.fleet.lock_state(self.shard_id)[0])

    def migration_lock_waiters(self) -> int | None:
        return int(self.fleet.lock_state(self.shard_id)[1])

    def lock_label(self) -> str:
        return f"'shardmigrate:dbo' in database '{self.fleet.databases[self.shard_id]}'"

    def unreachable(self, password: str) -> tuple[Shard, list[str]]:
        shard_id = f"{self.prefix}-down"
        database = self.fleet.add(shard_id, password=password, port=1)
        return Shard(shard_id, conn_id_for(shard_id)), [f"{self.fleet.server.host}:1", database, conn_id_for(shard_id)]


_TXN = "another session's transaction holding the collection"


class MongoShard(EngineShard):
    """A MongoDB shard: a database on the session's MongoDB server (the nx-27017 emulator, or the real mongod
    of SHARDMIGRATE_TEST_MONGO_URL; tests/mongo_fixtures.py). The suite's SQL becomes MongoDB commands
    (tests/engines/mongo_dialect.py); :attr:`needs_real_server` names the tests whose property only a real
    mongod can show -- they are skipped, with the reason, against the emulator."""

    kind = "mongo"
    prefix = "mg"
    transactional_ddl = False
    network = True
    cancels_on_stop = False  # no killOp on SIGTERM: maxTimeMS bounds the command
    history_objects = frozenset({"shardmigrate_history", "shardmigrate_locks"})
    missing_table_code = "11000"  # the suite's failing statements become a duplicate _id (mongo_dialect.py)
    exists_code = "11000"  # CREATE TABLE inserts a marker document: a second one collides (mongo_dialect.py)
    timeout_evidence = ("MaxTimeMSExpired",)
    blocked_evidence = ("MaxTimeMSExpired",)
    missing_extra_blocks = (("pymongo",), ("airflow.providers.mongo.hooks",))
    extra = "mongo"
    rich_up = json.dumps(
        [
            {
                "create": "orders",
                "validator": {
                    "$jsonSchema": {
                        "bsonType": "object",
                        "required": ["customer_id"],
                        "properties": {"customer_id": {"bsonType": "int"}, "note": {"bsonType": "string"}},
                    }
                },
            },
            # named as the emulator names indexes (it keeps no given name): the same on both servers
            {"createIndexes": "orders", "indexes": [{"key": {"customer_id": 1}, "name": "idx_orders_customer_id"}]},
            {"insert": "orders", "documents": [{"_id": 1, "customer_id": 1, "note": "a;b"}]},
        ],
        indent=1,
    )
    rich_down = json.dumps([{"drop": "orders"}])
    rich_objects = frozenset({"orders", "idx_orders_customer_id"})
    rich_probe = (('{"find": "orders", "projection": {"_id": 0, "note": 1}}', [("a;b",)]),)
    rich_first_down = ("DROP INDEX idx_orders_customer_id ON orders;", "idx_orders_customer_id")
    #: test -> (why only a real mongod can show it, whether it needs a replica set)
    needs_real_server: ClassVar[dict[str, tuple[str, bool]]] = {
        "test_ddl_blocked_by_another_session_stops_in_the_database": (
            f"{_TXN} and maxTimeMS enforced on the blocked command; the emulator has neither",
            True,
        ),
        "test_long_statement_is_stopped_at_the_deadline": (
            "the emulator runs no server-side JavaScript ($where sleep) and ignores maxTimeMS",
            False,
        ),
        "test_worker_killed_midway_leaves_a_truthful_shard_and_rerun_applies_once": (
            "no command can be held mid-way on the emulator ($where sleep); the dead holder's lease being taken "
            "over runs on the emulator in test_mongo.py",
            False,
        ),
        "test_two_processes_at_once_apply_exactly_once": (
            f"the winner is held inside its lock by {_TXN}; the emulator version is in test_mongo.py",
            True,
        ),
        "test_waiting_longer_than_the_bound_is_lock_timeout": (
            f"the holder is held inside its lock by {_TXN}; a held lease timing out runs on the emulator",
            True,
        ),
    }

    @classmethod
    def create(cls, request: pytest.FixtureRequest, shard_id: str) -> EngineShard:
        fleet: MongoFleet = request.getfixturevalue("mongo_fleet")
        requirement = cls.needs_real_server.get(request.node.originalname)
        if requirement is not None:
            reason, replica_set = requirement
            if not fleet.server.real:
                pytest.skip(f"{NEEDS_REAL}: {reason}")
            if replica_set and not fleet.server.replica_set:
                pytest.skip(f"needs a mongod replica set (transactions), {fleet.server.name} is standalone: {reason}")
        fleet.add(shard_id)
        return cls(fleet, shard_id)

    @property
    def db(self) -> Any:
        return self.fleet.db(self.shard_id)

    sleep_needle = "sleep("

    def sleep(self, seconds: object) -> str:
        per_document = int(float(str(seconds)) * 1000) // 3  # three customers
        where = f"sleep({per_document}) || true"
        return json.dumps({"update": "customers", "updates": [{"q": {"$where": where}, "u": {"$set": {"slept": 1}}}]})

    def controlled_sleep(self) -> str:
        where = "sleep(this.seconds * 1000) || true"
        return json.dumps({"update": "sleep_control", "updates": [{"q": {"$where": where}, "u": {"$set": {"s": 1}}}]})

    def set_sleep(self, seconds: int) -> None:
        self.db["sleep_control"].replace_one({"_id": 1}, {"_id": 1, "seconds": int(seconds)}, upsert=True)

    def query(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        """The suite's SELECTs (``SELECT n FROM t ORDER BY n``, ``SELECT count(*) FROM t``), a JSON read
        command, or statements of the vocabulary to run."""
        text = " ".join(sql.split())
        ordered = re.fullmatch(r"SELECT (\w+) FROM (\w+) ORDER BY \1", text, re.I)
        if ordered:
            field, table = ordered.groups()
            return [(doc[field],) for doc in self.db[table].find({field: {"$exists": True}}).sort(field, 1)]
        counted = re.fullmatch(r"SELECT count\(\*\) FROM (\w+)", text, re.I)
        if counted:
            return [(self.db[counted.group(1)].count_documents({"n": {"$exists": True}}),)]
        if text.startswith("{") and '"find"' in text:
            reply = self.db.command(json.loads(text))
            return [tuple(doc.values()) for doc in reply["cursor"]["firstBatch"]]
        for command in mongo_dialect.to_commands(sql):
            self.db.command(command)
        return []

    def columns(self, table: str) -> set[str]:
        names: set[str] = set()
        for doc in self.db[table].find():
            names |= set(doc) - {"_id"}
        for info in self.db.list_collections(filter={"name": table}):
            schema = (info.get("options") or {}).get("validator", {}).get("$jsonSchema", {})
            names |= set(schema.get("properties") or {})
        return names

    def running(self, needle: str) -> list[Any]:
        if not self.fleet.server.real:
            return []  # the emulator shows no operations (currentOp answers nothing)
        ops = self.fleet.client.admin.command("currentOp", {"appName": {"$regex": "^shardmigrate"}})["inprog"]
        return [op for op in ops if op.get("active") and op.get("ns", "").startswith(self.db.name)]

    @contextmanager
    def hold_table_lock(self, table: str = "customers") -> Iterator[None]:
        """An open transaction that wrote every document of ``table`` (a replica set only): writes to those
        documents wait for it, and so does DDL on the collection."""
        client = self.fleet.server.client()
        try:
            with client.start_session() as session:
                session.start_transaction()
                client[self.db.name][table].update_many({}, {"$set": {"held": 1}}, session=session)
                try:
                    yield
                finally:
                    session.abort_transaction()
        finally:
            client.close()

    def migration_lock_held(self) -> bool:
        lease = self.fleet.lease(self.shard_id)
        return bool(lease and lease.get("owner") and lease.get("expires_at_ms", 0) > self.fleet.server_now_ms())

    def lock_label(self) -> str:
        return f"database '{self.db.name}'"

    def migration_lock_waiters(self) -> int | None:
        return int(self.db["shardmigrate_locks"].count_documents({"waiting_for": "migration"}))

    def unreachable(self, password: str) -> tuple[Shard, list[str]]:
        shard_id = f"{self.prefix}-down"
        database = self.fleet.add(shard_id, password=password, port=1)
        return Shard(shard_id, conn_id_for(shard_id)), ["127.0.0.1:1", database, conn_id_for(shard_id)]

    @staticmethod
    def write_scripts(folder: Path, scripts: dict[str, str]) -> None:
        """The MongoDB twins of a migration's SQL scripts (``up.sql`` -> ``up.mongo.json``, variants too)."""
        for name, text in scripts.items():
            direction, _, rest = name.partition(".")
            if rest in ("sql", "mongo.sql"):
                (folder / f"{direction}.mongo.json").write_text(mongo_dialect.to_script(text))
            else:
                (folder / name).write_text(text)


#: Every implemented engine, with the pytest marks its server needs. One line per engine.
ENGINE_SHARDS: list[Any] = [
    pytest.param(SqliteShard, id="sqlite"),
    pytest.param(PostgresShard, id="postgres", marks=pytest.mark.postgres),
    pytest.param(MySqlShard, id="mysql", marks=pytest.mark.mysql),
    # The one skip of the suite: no SQL Server can run on the development machine (tests/engines/mssql_server.py).
    pytest.param(
        MsSqlShard,
        id="mssql",
        marks=[pytest.mark.mssql, pytest.mark.skipif(server_url() is None, reason=NOT_RUN_REASON)],
    ),
    pytest.param(MongoShard, id="mongo", marks=pytest.mark.mongo),
]
#: The engines reached over the network (a server that never answers can hang them).
NETWORK_SHARDS: list[Any] = [param for param in ENGINE_SHARDS if param.values[0].network]
#: The engines that cancel a statement in the database on SIGTERM/SIGINT.
CANCELLING_SHARDS: list[Any] = [param for param in ENGINE_SHARDS if param.values[0].cancels_on_stop]


@pytest.fixture(params=ENGINE_SHARDS)
def engine_shard(request: pytest.FixtureRequest) -> EngineShard:
    """A fresh shard (``<prefix>-0``, base schema) of each engine in turn."""
    cls: type[EngineShard] = request.param
    return cls.create(request, f"{cls.prefix}-0")


@pytest.fixture(params=NETWORK_SHARDS)
def network_shard(request: pytest.FixtureRequest) -> EngineShard:
    """A fresh shard of each engine that is reached over the network."""
    cls: type[EngineShard] = request.param
    return cls.create(request, f"{cls.prefix}-0")


@pytest.fixture(params=CANCELLING_SHARDS)
def cancelling_shard(request: pytest.FixtureRequest) -> EngineShard:
    """A fresh shard of each engine that cancels its statement when the process is told to stop."""
    cls: type[EngineShard] = request.param
    return cls.create(request, f"{cls.prefix}-0")


@pytest.fixture
def write_migration(write_migration: Callable[..., Path], request: pytest.FixtureRequest) -> Callable[..., Path]:
    """The migration writer of tests/conftest.py; for a MongoDB contract shard it also writes the MongoDB
    twins of the scripts (``up.mongo.json`` / ``down.mongo.json``, tests/engines/mongo_dialect.py), which
    are what such a shard runs."""
    callspec = getattr(request.node, "callspec", None)
    params = callspec.params if callspec is not None else {}
    if MongoShard not in (params.get("engine_shard"), params.get("network_shard")):
        return write_migration
    placeholder = "-- a MongoDB shard runs the .mongo.json twin\nSELECT 1;\n"

    def write(migration_id: str, *, extra: dict[str, str] | None = None, **kwargs: Any) -> Path:
        scripts = {"up.sql": kwargs.get("up", "CREATE INDEX idx_customers_name ON customers (name);")}
        scripts["down.sql"] = kwargs.get("down", "DROP INDEX idx_customers_name;")
        sql = {k: placeholder if mongo_dialect.is_json(v) else v for k, v in scripts.items()}
        folder = write_migration(
            migration_id,
            up=sql["up.sql"],
            down=sql["down.sql"],
            **{k: v for k, v in kwargs.items() if k not in ("up", "down")},
        )
        MongoShard.write_scripts(folder, {**scripts, **(extra or {})})
        return folder

    return write


# -- a server that never answers --------------------------------------------------------------------------


class SilentServer:
    """A loopback TCP server that accepts every connection and never sends a byte (a hung database)."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.port: int = self._listener.getsockname()[1]
        self._accepted: list[socket.socket] = []
        self.connections = 0
        self._thread = threading.Thread(target=self._serve, name="silent-server", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:  # closed
                return
            self._accepted.append(conn)
            self.connections += 1

    def close(self) -> None:
        self._listener.close()
        for conn in self._accepted:
            with contextlib.suppress(OSError):
                conn.close()


def hung_shard(network_shard: EngineShard, server: SilentServer, password: str, **extra: str) -> Shard:
    """A shard of ``network_shard``'s engine whose connection (holding ``password``) points at ``server``."""
    hung = Shard(f"{network_shard.prefix}-hung", conn_id_for(f"{network_shard.prefix}-hung"))
    network_shard.fleet.monkeypatch.setenv(
        f"AIRFLOW_CONN_{hung.conn_id.upper()}",
        network_shard.conn_env(port=server.port, password=password, **extra),
    )
    return hung


@pytest.fixture
def silent_server() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


# -- worker processes --------------------------------------------------------------------------------------


def worker_env() -> dict[str, str]:
    """The test process's env (AIRFLOW_HOME, AIRFLOW_CONN_*), with bytecode caching so imports are quick."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.setdefault("PYTHONPYCACHEPREFIX", str(REPO / ".cache" / "pycache"))
    return env


class Workers:
    """Worker processes running ``tests/engines/apply_worker.py``; killed at teardown if still alive."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, migration: Path, shard_id: str, *, name: str = "w", sync: bool = False) -> subprocess.Popen[str]:
        cmd = [
            sys.executable,
            "-m",
            "tests.engines.apply_worker",
            "--migration",
            str(migration),
            "--shard",
            shard_id,
            "--conn-id",
            conn_id_for(shard_id),
        ]
        if sync:
            cmd += ["--ready", str(self.tmp_path / f"{name}.ready"), "--go", str(self.tmp_path / "go")]
        proc = subprocess.Popen(
            cmd, cwd=REPO, env=worker_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.procs.append(proc)
        return proc

    def wait_ready(self, *names: str, timeout: float = 60.0) -> None:
        wait_for(
            lambda: all((self.tmp_path / f"{n}.ready").exists() for n in names),
            timeout,
            what=f"workers {names} to import",
        )

    def go(self) -> None:
        (self.tmp_path / "go").write_text("go")

    @staticmethod
    def result(proc: subprocess.Popen[str], timeout: float = 60.0) -> dict[str, Any]:
        out, err = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, f"worker failed ({proc.returncode}): {err[-3000:]}"
        lines = [line for line in out.splitlines() if line.startswith("{")]
        assert lines, f"worker printed no status: {out[-2000:]} {err[-2000:]}"
        return dict(json.loads(lines[-1]))

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    pool = Workers(tmp_path)
    yield pool
    pool.close()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say in the summary that the SQL Server contract tests did not run, and why."""
    skipped = [report for report in terminalreporter.stats.get("skipped", []) if NOT_RUN_REASON in str(report.longrepr)]
    if skipped:
        terminalreporter.write_line(
            f"NOT RUN: {len(skipped)} SQL Server contract test(s) -- {NOT_RUN_REASON}", yellow=True
        )
