"""Fixtures for real PostgreSQL and MariaDB shard databases.

The servers are the machine's own (``make services`` / scripts/ensure-services.sh start them): PostgreSQL on
127.0.0.1:5432 (user ``postgres``, trust auth) and MariaDB on 127.0.0.1:3306 (``root``, empty password). A test
that needs one and cannot reach it FAILS with a message saying how to start it -- a skipped engine suite would
look green while proving nothing.

Every shard is a database named ``sm_<pid>_<n>``, unique to this test session, registered with Airflow as an
``AIRFLOW_CONN_<ID>`` env var (JSON form) and dropped when the test ends; the session drops whatever is left and
sweeps databases of earlier sessions whose process is gone.

``PostgresFleet`` and ``MySqlFleet`` have the shape of ``SqliteFleet`` (tests/conftest.py): ``add``,
``topology``, ``query``, ``objects``, ``history``. All three name a shard's Airflow connection the same way
(``shard_id`` with ``-`` -> ``_``), so any fleet's ``topology([...])`` lists shards of every fleet: a mixed
topology is ``sqlite_fleet.topology(["lite-0", "pg-0", "my-0"])``, or :func:`topology_yaml`.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

PG_HOST = os.environ.get("SHARDMIGRATE_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("SHARDMIGRATE_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("SHARDMIGRATE_TEST_PG_USER", "postgres")
MYSQL_HOST = os.environ.get("SHARDMIGRATE_TEST_MYSQL_HOST", "127.0.0.1")
MYSQL_PORT = int(os.environ.get("SHARDMIGRATE_TEST_MYSQL_PORT", "3306"))
MYSQL_USER = os.environ.get("SHARDMIGRATE_TEST_MYSQL_USER", "root")

REPO = Path(__file__).resolve().parents[1]
DB_PREFIX = f"sm_{os.getpid()}_"
_numbers = itertools.count(1)

PG_BASE_SCHEMA = """
CREATE TABLE customers (id SERIAL PRIMARY KEY, name TEXT NOT NULL);
INSERT INTO customers (name) VALUES ('ada'), ('grace'), ('linus');
"""
MYSQL_BASE_SCHEMA = """
CREATE TABLE customers (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(100) NOT NULL) ENGINE=InnoDB;
INSERT INTO customers (name) VALUES ('ada'), ('grace'), ('linus');
"""
HISTORY_TABLE = "shardmigrate_history"


def conn_id_for(shard_id: str) -> str:
    """The Airflow connection id every fleet gives a shard (same rule as SqliteFleet)."""
    return shard_id.replace("-", "_")


def topology_yaml(shard_ids: Sequence[str], *, inactive: Sequence[str] = ()) -> str:
    """A topology file for shards of any mix of fleets, in the given order."""
    lines = ["shards:"]
    for shard_id in shard_ids:
        lines.append(f"  - id: {shard_id}\n    conn_id: {conn_id_for(shard_id)}")
        if shard_id in inactive:
            lines.append("    active: false")
    return "\n".join(lines) + "\n"


def _new_database_name() -> str:
    return f"{DB_PREFIX}{next(_numbers)}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stale(name: str) -> bool:
    """A database of an earlier test session whose process is gone (``sm_<pid>_<n>``)."""
    parts = name.split("_")
    if len(parts) != 3 or parts[0] != "sm" or not parts[1].isdigit():
        return False
    pid = int(parts[1])
    return pid != os.getpid() and not _pid_alive(pid)


_services_tried = False


def _start_services() -> str:
    """Run scripts/ensure-services.sh once per session (what ``make services`` does)."""
    global _services_tried
    if _services_tried:
        return "already tried"
    _services_tried = True
    script = REPO / "scripts" / "ensure-services.sh"
    try:
        done = subprocess.run([str(script)], capture_output=True, text=True, timeout=90, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{script.name} failed: {exc}"
    return (done.stdout + done.stderr).strip() or f"{script.name} exited {done.returncode}"


def _reach(connect: Any) -> BaseException | None:
    """None when ``connect()`` works, else the error (returned, so a failure does not chain tracebacks)."""
    try:
        connect().close()
    except Exception as exc:
        return exc
    return None


def _unreachable(name: str, address: str, error: BaseException, attempt: str) -> None:
    pytest.fail(
        f"{name} is not reachable at {address} ({type(error).__name__}: {error}). The engine tests need the real "
        f"server: start it with `make services` (runs scripts/ensure-services.sh; `make test` does it for you). "
        f"Automatic start attempt: {attempt}",
        pytrace=False,
    )


# -- PostgreSQL ------------------------------------------------------------------------------------------
def pg_connect(dbname: str = "postgres", *, autocommit: bool = True, **kwargs: Any) -> Any:
    import psycopg

    return psycopg.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=dbname, autocommit=autocommit, connect_timeout=5, **kwargs
    )


class PostgresServer:
    """The session's PostgreSQL server: creates and drops the shard databases."""

    kind = "postgres"

    def __init__(self) -> None:
        self.created: set[str] = set()

    def create_database(self) -> str:
        name = _new_database_name()
        with pg_connect() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.created.add(name)
        return name

    def drop_database(self, name: str) -> None:
        with pg_connect() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.created.discard(name)

    def sweep_stale(self) -> None:
        with pg_connect() as conn:
            names = [row[0] for row in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'sm\\_%'")]
        for name in names:
            if _stale(name):
                self.drop_database(name)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The reachable local PostgreSQL (started via ensure-services.sh when down), or a failing test."""
    problem = _reach(pg_connect)
    if problem is not None:
        attempt = _start_services()
        problem = _reach(pg_connect)
        if problem is not None:
            _unreachable("PostgreSQL", f"{PG_HOST}:{PG_PORT} (user {PG_USER})", problem, attempt)
    server = PostgresServer()
    server.sweep_stale()
    yield server
    for name in sorted(server.created):
        server.drop_database(name)


class PostgresFleet:
    """PostgreSQL shard databases with Airflow connections (``AIRFLOW_CONN_*``) pointing at them."""

    kind = "postgres"

    def __init__(self, server: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> None:
        self.server = server
        self.monkeypatch = monkeypatch
        self.databases: dict[str, str] = {}

    def add(
        self,
        shard_id: str,
        schema: str = PG_BASE_SCHEMA,
        *,
        conn_id: str | None = None,
        password: str | None = None,
        port: int | None = None,
    ) -> str:
        """Create the shard's database, run ``schema`` in it, register the connection; returns the db name.

        ``password`` is sent but ignored (trust auth): tests use it to prove no message leaks it.
        ``port`` points the connection elsewhere (e.g. a closed port, for an unreachable shard).
        """
        database = self.server.create_database()
        self.databases[shard_id] = database
        if schema.strip():
            from airflow_provider_shardmigrate.core.sqltext import split_sql

            with pg_connect(database) as conn:
                for statement in split_sql(schema):
                    conn.execute(statement)
        conn_id = conn_id or conn_id_for(shard_id)
        self.monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", self.conn_env(shard_id, password, port))
        return database

    def conn_env(self, shard_id: str, password: str | None = None, port: int | None = None) -> str:
        spec: dict[str, Any] = {
            "conn_type": "postgres",
            "host": PG_HOST,
            "port": port or PG_PORT,
            "login": PG_USER,
            "schema": self.databases[shard_id],
        }
        if password:
            spec["password"] = password
        return json.dumps(spec)

    def topology(self, shard_ids: list[str] | None = None, *, inactive: tuple[str, ...] = ()) -> str:
        return topology_yaml(shard_ids or list(self.databases), inactive=inactive)

    def connect(self, shard_id: str, **kwargs: Any) -> Any:
        """A new psycopg (3) connection to the shard, autocommit unless told otherwise."""
        return pg_connect(self.databases[shard_id], **kwargs)

    def query(self, shard_id: str, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        """Run ``sql`` in autocommit; the rows (``[]`` for a statement without a result)."""
        with self.connect(shard_id) as conn:
            cursor = conn.execute(sql, params or None)
            return list(cursor.fetchall()) if cursor.description else []

    def tables(self, shard_id: str) -> set[str]:
        return {row[0] for row in self.query(shard_id, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}

    def indexes(self, shard_id: str) -> set[str]:
        return {row[0] for row in self.query(shard_id, "SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")}

    def objects(self, shard_id: str) -> set[str]:
        """Tables, views, indexes and functions of the public schema (the catalog, not our history)."""
        relations = self.query(
            shard_id,
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'i', 'I', 'f')",
        )
        functions = self.query(
            shard_id,
            "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public'",
        )
        return {row[0] for row in relations + functions}

    def history(self, shard_id: str) -> dict[str, dict[str, Any]]:
        from psycopg.rows import dict_row

        with self.connect(shard_id, row_factory=dict_row) as conn:
            if conn.execute("SELECT to_regclass(%s)", (HISTORY_TABLE,)).fetchone()["to_regclass"] is None:
                return {}
            rows = conn.execute(f"SELECT * FROM {HISTORY_TABLE}").fetchall()
        return {row["migration_id"]: dict(row) for row in rows}

    def activity(self, shard_id: str) -> list[dict[str, Any]]:
        """Other sessions on the shard's database (``pg_stat_activity``), the observer's own excluded."""
        from psycopg.rows import dict_row

        with self.connect(shard_id, row_factory=dict_row) as conn:
            return list(
                conn.execute(
                    "SELECT pid, application_name, state, query, wait_event_type FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                ).fetchall()
            )

    def ours_running(self, shard_id: str) -> list[dict[str, Any]]:
        """Statements of shardmigrate sessions still executing on the shard (must be none after a timeout)."""
        return [
            row
            for row in self.activity(shard_id)
            if str(row["application_name"]).startswith("shardmigrate") and row["state"] not in ("idle", None)
        ]

    @contextmanager
    def hold_migration_lock(self, shard_id: str, schema: str = "public") -> Iterator[None]:
        """Hold the shard's advisory migration lock from another session (like a concurrent migration)."""
        from airflow_provider_shardmigrate.engines.postgres import lock_keys

        with self.connect(shard_id) as conn:
            conn.execute("SELECT pg_advisory_lock(%s, %s)", lock_keys(schema))
            yield

    @contextmanager
    def hold_table_lock(self, shard_id: str, table: str = "customers") -> Iterator[None]:
        """Keep ``table`` ACCESS EXCLUSIVE-locked in an open transaction (blocks any DDL on it)."""
        with self.connect(shard_id, autocommit=False) as conn:
            conn.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
            try:
                yield
            finally:
                conn.rollback()

    def drop_all(self) -> None:
        for database in self.databases.values():
            self.server.drop_database(database)
        self.databases.clear()


@pytest.fixture
def pg_fleet(postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[PostgresFleet]:
    fleet = PostgresFleet(postgres_server, monkeypatch)
    yield fleet
    fleet.drop_all()


# -- MariaDB / MySQL -------------------------------------------------------------------------------------
def mysql_connect(database: str | None = None, **kwargs: Any) -> Any:
    import MySQLdb

    conn = MySQLdb.connect(
        host=MYSQL_HOST,
        port=MYSQL_PORT,
        user=MYSQL_USER,
        passwd="",
        db=database or "",
        connect_timeout=5,
        charset="utf8mb4",
        **kwargs,
    )
    conn.autocommit(True)
    return conn


class MySqlServer:
    """The session's MariaDB (or MySQL) server: creates and drops the shard databases."""

    kind = "mysql"

    def __init__(self) -> None:
        self.created: set[str] = set()
        conn = mysql_connect()
        try:
            cursor = conn.cursor()
            cursor.execute("SELECT VERSION()")
            self.version = str(cursor.fetchone()[0])
        finally:
            conn.close()
        self.is_mariadb = "mariadb" in self.version.lower()

    def create_database(self) -> str:
        name = _new_database_name()
        conn = mysql_connect()
        try:
            conn.cursor().execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        finally:
            conn.close()
        self.created.add(name)
        return name

    def drop_database(self, name: str) -> None:
        conn = mysql_connect()
        try:
            cursor = conn.cursor()
            # Sessions left in the database (a killed worker's zombie, a test's blocker) would make DROP wait.
            cursor.execute(
                "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = %s AND ID <> CONNECTION_ID()", (name,)
            )
            for (thread_id,) in cursor.fetchall():
                with contextlib.suppress(Exception):  # already gone
                    cursor.execute(f"KILL {int(thread_id)}")
            cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
        finally:
            conn.close()
        self.created.discard(name)

    def sweep_stale(self) -> None:
        conn = mysql_connect()
        try:
            cursor = conn.cursor()
            cursor.execute("SHOW DATABASES LIKE 'sm\\_%'")
            names = [row[0] for row in cursor.fetchall()]
        finally:
            conn.close()
        for name in names:
            if _stale(name):
                self.drop_database(name)


@pytest.fixture(scope="session")
def mysql_server() -> Iterator[MySqlServer]:
    """The reachable local MariaDB (started via ensure-services.sh when down), or a failing test."""
    problem = _reach(mysql_connect)
    if problem is not None:
        attempt = _start_services()
        problem = _reach(mysql_connect)
        if problem is not None:
            _unreachable("MariaDB", f"{MYSQL_HOST}:{MYSQL_PORT} (user {MYSQL_USER})", problem, attempt)
    server = MySqlServer()
    server.sweep_stale()
    yield server
    for name in sorted(server.created):
        server.drop_database(name)


class MySqlFleet:
    """MariaDB/MySQL shard databases with Airflow connections (``AIRFLOW_CONN_*``) pointing at them."""

    kind = "mysql"

    def __init__(self, server: MySqlServer, monkeypatch: pytest.MonkeyPatch) -> None:
        self.server = server
        self.monkeypatch = monkeypatch
        self.databases: dict[str, str] = {}

    def add(
        self,
        shard_id: str,
        schema: str = MYSQL_BASE_SCHEMA,
        *,
        conn_id: str | None = None,
        password: str | None = None,
        port: int | None = None,
    ) -> str:
        """Create the shard's database, run ``schema`` in it, register the connection; returns the db name.

        ``password`` is stored in the connection (root has none, so only with ``port`` pointing at a closed
        port -- the unreachable-shard tests use it to prove no message leaks it).
        """
        database = self.server.create_database()
        self.databases[shard_id] = database
        if schema.strip():
            from airflow_provider_shardmigrate.core.sqltext import split_sql

            conn = mysql_connect(database)
            try:
                for statement in split_sql(schema):
                    conn.cursor().execute(statement)
            finally:
                conn.close()
        conn_id = conn_id or conn_id_for(shard_id)
        self.monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", self.conn_env(shard_id, password, port))
        return database

    def conn_env(self, shard_id: str, password: str | None = None, port: int | None = None) -> str:
        spec: dict[str, Any] = {
            "conn_type": "mysql",
            "host": MYSQL_HOST,
            "port": port or MYSQL_PORT,
            "login": MYSQL_USER,
            "schema": self.databases[shard_id],
        }
        if password:
            spec["password"] = password
        return json.dumps(spec)

    def topology(self, shard_ids: list[str] | None = None, *, inactive: tuple[str, ...] = ()) -> str:
        return topology_yaml(shard_ids or list(self.databases), inactive=inactive)

    def connect(self, shard_id: str) -> Any:
        """A new MySQLdb connection to the shard (autocommit)."""
        return mysql_connect(self.databases[shard_id])

    def query(self, shard_id: str, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        conn = self.connect(shard_id)
        try:
            cursor = conn.cursor()
            cursor.execute(sql, tuple(params) or None)
            return list(cursor.fetchall()) if cursor.description else []
        finally:
            conn.close()

    def tables(self, shard_id: str) -> set[str]:
        return {
            row[0]
            for row in self.query(
                shard_id,
                "SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE() "
                "AND table_type = 'BASE TABLE'",
            )
        }

    def indexes(self, shard_id: str) -> set[str]:
        return {
            row[0]
            for row in self.query(
                shard_id,
                "SELECT DISTINCT index_name FROM information_schema.statistics WHERE table_schema = DATABASE() "
                "AND index_name <> 'PRIMARY'",
            )
        }

    def objects(self, shard_id: str) -> set[str]:
        """Tables, views, secondary indexes, triggers and routines of the shard database."""
        rows = self.query(
            shard_id,
            "SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE() "
            "UNION SELECT trigger_name FROM information_schema.triggers WHERE trigger_schema = DATABASE() "
            "UNION SELECT routine_name FROM information_schema.routines WHERE routine_schema = DATABASE()",
        )
        return {row[0] for row in rows} | self.indexes(shard_id)

    def history(self, shard_id: str) -> dict[str, dict[str, Any]]:
        import MySQLdb.cursors

        conn = self.connect(shard_id)
        try:
            cursor = conn.cursor(MySQLdb.cursors.DictCursor)
            cursor.execute(
                "SELECT COUNT(*) AS n FROM information_schema.tables WHERE table_schema = DATABASE() "
                "AND table_name = %s",
                (HISTORY_TABLE,),
            )
            if not cursor.fetchone()["n"]:
                return {}
            cursor.execute(f"SELECT * FROM {HISTORY_TABLE}")
            return {row["migration_id"]: dict(row) for row in cursor.fetchall()}
        finally:
            conn.close()

    def activity(self, shard_id: str) -> list[dict[str, Any]]:
        """Other sessions on the shard's database (``information_schema.processlist``), the observer excluded."""
        import MySQLdb.cursors

        conn = self.connect(shard_id)
        try:
            cursor = conn.cursor(MySQLdb.cursors.DictCursor)
            cursor.execute(
                "SELECT ID AS id, COMMAND AS command, STATE AS state, INFO AS info, TIME AS time "
                "FROM information_schema.PROCESSLIST WHERE DB = DATABASE() AND ID <> CONNECTION_ID()"
            )
            return [dict(row) for row in cursor.fetchall()]
        finally:
            conn.close()

    def running(self, shard_id: str, needle: str) -> list[dict[str, Any]]:
        """Statements containing ``needle`` still executing on the shard's database."""
        return [
            row
            for row in self.activity(shard_id)
            if row["command"] != "Sleep" and needle.lower() in str(row["info"] or "").lower()
        ]

    @contextmanager
    def hold_migration_lock(self, shard_id: str) -> Iterator[None]:
        """Hold the shard's GET_LOCK migration lock from another session (like a concurrent migration)."""
        from airflow_provider_shardmigrate.engines.mysql import lock_name

        conn = self.connect(shard_id)
        try:
            cursor = conn.cursor()
            cursor.execute("SELECT GET_LOCK(%s, 5)", (lock_name(self.databases[shard_id]),))
            assert cursor.fetchone()[0] == 1
            yield
        finally:
            conn.close()

    @contextmanager
    def hold_table_lock(self, shard_id: str, table: str = "customers") -> Iterator[None]:
        """Hold a metadata lock on ``table`` in an open transaction (blocks ALTER/DROP/CREATE INDEX on it)."""
        conn = self.connect(shard_id)
        try:
            cursor = conn.cursor()
            cursor.execute("START TRANSACTION")
            cursor.execute(f"SELECT COUNT(*) FROM {table}")
            cursor.fetchall()
            yield
        finally:
            conn.close()

    def drop_all(self) -> None:
        for database in self.databases.values():
            self.server.drop_database(database)
        self.databases.clear()


@pytest.fixture
def mysql_fleet(mysql_server: MySqlServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[MySqlFleet]:
    fleet = MySqlFleet(mysql_server, monkeypatch)
    yield fleet
    fleet.drop_all()
