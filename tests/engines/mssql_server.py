"""A real SQL Server for the engine contract suite, when one is configured.

No SQL Server can run on the development machine (no Docker engine, no Linux package). Where one can --
``make test-mssql`` starts the compose file's ``shard-mssql-0`` service -- ``SHARDMIGRATE_TEST_MSSQL_URL``
names it (``mssql://sa:<password>@127.0.0.1:14330/master``), and the contract suite runs against it: every
shard is a database ``sm_<pid>_<n>`` created for the test and dropped after it. Without the variable the
SQL Server parameter of the suite is reported as not run (the one skip of the test suite), naming the
missing server.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

URL_VARIABLE = "SHARDMIGRATE_TEST_MSSQL_URL"
NOT_RUN_REASON = f"no SQL Server: set {URL_VARIABLE} (make test-mssql starts one with Docker)"
HISTORY_TABLE = "shardmigrate_history"
BASE_SCHEMA = """
CREATE TABLE customers (id INT IDENTITY(1,1) PRIMARY KEY, name NVARCHAR(100) NOT NULL);
INSERT INTO customers (name) VALUES (N'ada'), (N'grace'), (N'linus');
"""
_numbers = itertools.count(1)


def server_url() -> str | None:
    return os.environ.get(URL_VARIABLE) or None


class MsSqlServer:
    """The configured server: how to reach it, and its databases' life cycle."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 1433
        self.user = unquote(parts.username or "sa")
        self.password = unquote(parts.password or "")
        self.admin_database = (parts.path or "/master").lstrip("/") or "master"

    def connect(self, database: str | None = None, *, autocommit: bool = True) -> Any:
        import pymssql

        return pymssql.connect(
            server=self.host,
            port=str(self.port),
            user=self.user,
            password=self.password,
            database=database or self.admin_database,
            autocommit=autocommit,
            login_timeout=15,
            tds_version="7.4",
            appname="shardmigrate-tests",
        )

    def execute(self, database: str | None, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        conn = self.connect(database)
        try:
            cursor = conn.cursor()
            cursor.execute(sql, tuple(params) or None)
            return list(cursor.fetchall()) if cursor.description else []
        finally:
            conn.close()

    def create_database(self) -> str:
        name = f"sm_{os.getpid()}_{next(_numbers)}"
        self.execute(None, f"CREATE DATABASE [{name}]")
        return name

    def drop_database(self, name: str) -> None:
        self.execute(
            None,
            f"IF DB_ID(N'{name}') IS NOT NULL BEGIN ALTER DATABASE [{name}] SET SINGLE_USER WITH ROLLBACK IMMEDIATE; "
            f"DROP DATABASE [{name}]; END",
        )


class MsSqlFleet:
    """SQL Server shard databases with Airflow connections (``AIRFLOW_CONN_*``) pointing at them."""

    kind = "mssql"

    def __init__(self, server: MsSqlServer, monkeypatch: pytest.MonkeyPatch) -> None:
        self.server = server
        self.monkeypatch = monkeypatch
        self.databases: dict[str, str] = {}

    def add(
        self, shard_id: str, schema: str = BASE_SCHEMA, *, password: str | None = None, port: int | None = None
    ) -> str:
        from airflow_provider_shardmigrate.core.tsql import split_tsql
        from tests.server_fixtures import conn_id_for

        database = self.server.create_database()
        self.databases[shard_id] = database
        for statement in split_tsql(schema):
            self.server.execute(database, statement)
        self.monkeypatch.setenv(
            f"AIRFLOW_CONN_{conn_id_for(shard_id).upper()}", self.conn_env(shard_id, password, port)
        )
        return database

    def conn_env(self, shard_id: str, password: str | None = None, port: int | None = None) -> str:
        return json.dumps(
            {
                "conn_type": "mssql",
                "host": self.server.host,
                "port": port or self.server.port,
                "login": self.server.user,
                "password": password or self.server.password,
                "schema": self.databases[shard_id],
            }
        )

    def query(self, shard_id: str, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        return self.server.execute(self.databases[shard_id], sql, params)

    def tables(self, shard_id: str) -> set[str]:
        return {row[0] for row in self.query(shard_id, "SELECT name FROM sys.tables WHERE is_ms_shipped = 0")}

    def objects(self, shard_id: str) -> set[str]:
        """Tables, views, modules, key/check constraints and indexes (not default constraints)."""
        rows = self.query(
            shard_id,
            "SELECT name FROM sys.objects WHERE is_ms_shipped = 0 AND type IN "
            "('U', 'V', 'P', 'FN', 'IF', 'TF', 'TR', 'PK', 'UQ', 'F', 'C') "
            "UNION SELECT i.name FROM sys.indexes AS i JOIN sys.objects AS o ON o.object_id = i.object_id "
            "WHERE o.is_ms_shipped = 0 AND i.name IS NOT NULL",
        )
        return {row[0] for row in rows}

    def history(self, shard_id: str) -> dict[str, dict[str, Any]]:
        conn = self.server.connect(self.databases[shard_id])
        try:
            cursor = conn.cursor(as_dict=True)
            cursor.execute("SELECT OBJECT_ID(N'shardmigrate_history', N'U') AS oid")
            if cursor.fetchone()["oid"] is None:
                return {}
            cursor.execute(f"SELECT * FROM {HISTORY_TABLE}")
            return {row["migration_id"]: dict(row) for row in cursor.fetchall()}
        finally:
            conn.close()

    def running(self, shard_id: str, needle: str) -> list[tuple[Any, ...]]:
        """Requests on the shard's database whose batch text holds ``needle`` (the observer's excluded)."""
        return self.query(
            shard_id,
            "SELECT r.session_id, t.text FROM sys.dm_exec_requests AS r CROSS APPLY sys.dm_exec_sql_text(r.sql_handle) "
            "AS t WHERE r.session_id <> @@SPID AND r.database_id = DB_ID() AND CHARINDEX(%s, t.text) > 0",
            (needle,),
        )

    def ours(self, shard_id: str) -> int:
        """Sessions of the engine (``appname`` shardmigrate:<shard>) on the shard's database."""
        rows = self.query(
            shard_id,
            "SELECT COUNT(*) FROM sys.dm_exec_sessions "
            "WHERE program_name LIKE 'shardmigrate:%' AND database_id = DB_ID()",
        )
        return int(rows[0][0])

    @contextmanager
    def hold_migration_lock(self, shard_id: str, schema: str = "dbo") -> Iterator[None]:
        from airflow_provider_shardmigrate.engines.mssql import lock_resource

        conn = self.server.connect(self.databases[shard_id])
        try:
            cursor = conn.cursor()
            cursor.execute(
                "DECLARE @r int; EXEC @r = sp_getapplock @Resource = %s, @LockMode = 'Exclusive', "
                "@LockOwner = 'Session'; SELECT @r",
                (lock_resource(schema),),
            )
            assert cursor.fetchone()[0] >= 0
            yield
        finally:
            conn.close()

    @contextmanager
    def hold_table_lock(self, shard_id: str, table: str = "customers") -> Iterator[None]:
        """An exclusive table lock in an open transaction: DDL on ``table`` waits for it."""
        conn = self.server.connect(self.databases[shard_id], autocommit=False)
        try:
            cursor = conn.cursor()
            cursor.execute(f"SELECT COUNT(*) FROM {table} WITH (TABLOCKX, HOLDLOCK)")
            cursor.fetchall()
            yield
        finally:
            conn.rollback()
            conn.close()

    def lock_state(self, shard_id: str, schema: str = "dbo") -> tuple[bool, int]:
        """(someone holds the migration lock, sessions waiting for it)."""
        from airflow_provider_shardmigrate.engines.mssql import lock_resource

        free = self.query(
            shard_id, "SELECT APPLOCK_TEST('public', %s, 'Exclusive', 'Session')", (lock_resource(schema),)
        )
        waiting = self.query(
            shard_id,
            "SELECT COUNT(*) FROM sys.dm_tran_locks WHERE resource_type = 'APPLICATION' AND request_status = 'WAIT' "
            "AND resource_database_id = DB_ID()",
        )
        return free[0][0] == 0, int(waiting[0][0])

    def drop_all(self) -> None:
        for database in self.databases.values():
            self.server.drop_database(database)
        self.databases.clear()


@pytest.fixture(scope="session")
def mssql_server() -> MsSqlServer:
    url = server_url()
    if url is None:
        pytest.skip(NOT_RUN_REASON)
    return MsSqlServer(url)


@pytest.fixture
def mssql_fleet(mssql_server: MsSqlServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[MsSqlFleet]:
    fleet = MsSqlFleet(mssql_server, monkeypatch)
    yield fleet
    fleet.drop_all()
