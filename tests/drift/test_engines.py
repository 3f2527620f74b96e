"""Introspection + comparison against real databases, for every engine and every depth.

A fleet per engine: a baseline and one shard per drift case (tests/drift/conftest.py CASES). At each depth,
every case must be reported -- exactly that one difference -- when the depth includes it, and nothing at
all when it does not. Then: no false drift from DDL spelled differently, the history table ignored, a
bounded number of catalog queries however many tables, and detection failures that name the shard.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_shardmigrate.core.drift import DriftReport
from airflow_provider_shardmigrate.core.health import HealthStatus, assess_health
from airflow_provider_shardmigrate.core.schema import Schema, includes
from airflow_provider_shardmigrate.core.topology import DriftDepth, Shard
from airflow_provider_shardmigrate.engines.introspect import detect_drift, introspect_shard
from tests.drift.conftest import CASES, ENGINES, PREFIX, Case, ddl, shard_id, write_topology

pytestmark = [pytest.mark.postgres, pytest.mark.mysql]

DEPTHS = list(DriftDepth)


@pytest.fixture(scope="module")
def catalogue(fleet_factory: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """``get(engine, depth)`` -> the drift report of that engine's catalogue fleet (built once, cached)."""
    fleets: dict[str, Any] = {}
    reports: dict[tuple[str, DriftDepth], DriftReport] = {}
    folder = tmp_path_factory.mktemp("catalogue")

    def get(engine: str, depth: DriftDepth) -> DriftReport:
        if engine not in fleets:
            fleet = fleet_factory(engine)
            fleet.add(shard_id(engine, "base"), ddl(engine))
            for case in CASES:
                fleet.add(shard_id(engine, case.name), ddl(engine, **case.knobs))
            fleets[engine] = fleet
        if (engine, depth) not in reports:
            ids = [shard_id(engine, "base")] + [shard_id(engine, c.name) for c in CASES]
            topology = write_topology(folder / f"{engine}.yaml", ids)
            reports[(engine, depth)] = detect_drift(topology, depth=depth, max_workers=4)
        return reports[(engine, depth)]

    return get


def _assert_case(report: DriftReport, engine: str, case: Case, depth: DriftDepth) -> None:
    shard = shard_id(engine, case.name)
    assert not report.errors, report.errors
    assert shard in report.shards_compared
    diffs = report.diffs.get(shard, ())
    if not includes(depth, case.min_depth):
        assert diffs == (), f"{case.name} must not show at depth {depth}: {[d.to_dict() for d in diffs]}"
        return
    assert len(diffs) == 1, f"{case.name} at {depth}: expected one table diff, got {[d.to_dict() for d in diffs]}"
    diff = diffs[0]
    assert diff.table.casefold() == case.table
    assert diff.kind.value == case.table_kind
    if case.part is None:
        assert not (diff.columns or diff.indexes or diff.constraints)
        return
    parts = {"columns": diff.columns, "indexes": diff.indexes, "constraints": diff.constraints}
    others = [p for name, p in parts.items() if name != case.part and p]
    assert not others, f"{case.name}: unexpected differences {diff.to_dict()}"
    objects = parts[case.part]
    assert len(objects) == 1, f"{case.name}: expected one {case.part} difference, got {diff.to_dict()}"
    found = objects[0]
    assert case.object_name is not None
    assert case.object_name.casefold() in found.name.casefold(), found
    assert found.kind.value == case.object_kind
    assert {change.attribute for change in found.changes} == set(case.attributes)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
@pytest.mark.parametrize("depth", DEPTHS, ids=[d.value for d in DEPTHS])
@pytest.mark.parametrize("engine", ENGINES)
def test_each_drift_is_found_exactly_at_the_depths_that_include_it(catalogue, engine, depth, case):
    report = catalogue(engine, depth)
    _assert_case(report, engine, case, depth)
    assert report.baseline == shard_id(engine, "base")
    assert report.depth is depth


@pytest.mark.parametrize("engine", ENGINES)
def test_catalogue_report_round_trips_and_names_shards(catalogue, engine):
    report = catalogue(engine, DriftDepth.FULL)
    assert set(report.drifted_shards) == {shard_id(engine, c.name) for c in CASES}
    again = DriftReport.from_dict(report.to_dict())
    assert again == report
    base = shard_id(engine, "base")
    schema = introspect_shard(Shard(base, base.replace("-", "_")), DriftDepth.FULL)
    assert Schema.from_dict(json.loads(json.dumps(schema.to_dict()))) == schema
    assert {t.casefold() for t in schema.tables} == {"customers", "orders", "audit"}
    health = assess_health(report, ["ORDERS"])
    assert health.status is HealthStatus.UNHEALTHY
    assert set(health.critical_drift or {}) == {"orders"}
    assert shard_id(engine, "missing_index") in health.description


# -- no false drift --------------------------------------------------------------------------------------

PG_SPELLING_A = """
CREATE TABLE accounts (
    id int4 PRIMARY KEY,
    handle varchar(20) NOT NULL DEFAULT 'x',
    code char(3),
    active bool DEFAULT true,
    score float8,
    ratio decimal(8),
    created timestamptz DEFAULT now(),
    seen time without time zone,
    big int8,
    small int2 CHECK (small > 0)
);
CREATE INDEX ix_accounts_handle ON accounts (handle);
CREATE TABLE events (id serial PRIMARY KEY, account_id int4 REFERENCES accounts(id), payload text);
"""
PG_SPELLING_B = """
CREATE TABLE accounts (
    id integer PRIMARY KEY,
    handle character varying(20) NOT NULL DEFAULT 'x'::character varying,
    code character(3),
    active boolean DEFAULT TRUE,
    score double precision,
    ratio numeric(8,0),
    created timestamp with time zone DEFAULT CURRENT_TIMESTAMP,
    seen time,
    big bigint,
    small smallint CONSTRAINT accounts_small_check CHECK ((small)>(0))
);
CREATE INDEX ix_accounts_handle ON accounts USING btree (handle ASC);
CREATE TABLE events (id integer NOT NULL DEFAULT nextval('events_id_seq'::regclass) PRIMARY KEY,
    account_id integer CONSTRAINT events_account_id_fkey REFERENCES accounts (id), payload text);
"""


def test_postgres_same_ddl_spelled_differently_is_not_drift(fleet_factory, tmp_path):
    fleet = fleet_factory("postgres")
    fleet.add("pg-spell-a", PG_SPELLING_A)
    fleet.add("pg-spell-b", "CREATE SEQUENCE events_id_seq;\n" + PG_SPELLING_B)
    topology = write_topology(tmp_path / "t.yaml", ["pg-spell-a", "pg-spell-b"])
    report = detect_drift(topology, depth=DriftDepth.FULL)
    assert not report.errors
    assert report.shards_compared == ("pg-spell-b",)
    assert not report.has_drift, [d.to_dict() for d in report.diffs.get("pg-spell-b", ())]
    schema = introspect_shard(Shard("pg-spell-a", "pg_spell_a"), DriftDepth.FULL)
    columns = {c.name: c for c in schema.tables["accounts"].columns}
    assert columns["handle"].type == "varchar(20)"
    assert columns["handle"].default == "'x'"
    assert columns["created"].type == "timestamptz"
    assert columns["ratio"].type == "numeric(8,0)"


MYSQL_SPELLING_A = """
CREATE TABLE accounts (id INT PRIMARY KEY AUTO_INCREMENT, handle VARCHAR(20) NOT NULL DEFAULT 'x',
    active BOOL DEFAULT TRUE, ratio DECIMAL(8), created TIMESTAMP NULL DEFAULT CURRENT_TIMESTAMP,
    qty INT CHECK (qty > 0), UNIQUE KEY uq_handle (handle)) ENGINE=InnoDB;
CREATE TABLE events (id INT PRIMARY KEY, account_id INT, INDEX ix_account (account_id),
    CONSTRAINT fk_events_account FOREIGN KEY (account_id) REFERENCES accounts (id)) ENGINE=InnoDB;
"""
MYSQL_SPELLING_B = """
CREATE TABLE accounts (id INTEGER(11) NOT NULL AUTO_INCREMENT, handle CHARACTER VARYING(20) NOT NULL DEFAULT 'x',
    active TINYINT(1) DEFAULT 1, ratio NUMERIC(8,0), created TIMESTAMP NULL DEFAULT current_timestamp(),
    qty INTEGER CHECK (`qty` > 0), PRIMARY KEY (id), CONSTRAINT uq_handle UNIQUE (handle)) ENGINE=InnoDB;
CREATE TABLE events (id INTEGER NOT NULL PRIMARY KEY, account_id INTEGER, KEY ix_account (account_id),
    CONSTRAINT fk_events_account FOREIGN KEY (account_id) REFERENCES accounts (id)) ENGINE=InnoDB;
"""


def test_mariadb_identical_shards_are_not_drift(fleet_factory, tmp_path):
    fleet = fleet_factory("mysql")
    fleet.add("my-same-a", MYSQL_SPELLING_A)
    fleet.add("my-same-b", MYSQL_SPELLING_A)
    fleet.add("my-spell-c", MYSQL_SPELLING_B)
    topology = write_topology(tmp_path / "t.yaml", ["my-same-a", "my-same-b", "my-spell-c"])
    report = detect_drift(topology, depth=DriftDepth.FULL)
    assert not report.errors
    assert report.shards_compared == ("my-same-b", "my-spell-c")
    assert not report.has_drift, {s: [d.to_dict() for d in t] for s, t in report.diffs.items()}


def test_sqlite_same_ddl_spelled_differently_is_not_drift(fleet_factory, tmp_path):
    fleet = fleet_factory("sqlite")
    fleet.add(
        "lite-spell-a",
        "CREATE TABLE t (id INTEGER PRIMARY KEY, name VARCHAR(20) NOT NULL DEFAULT 'x', n INT CHECK (n > 0));"
        "CREATE INDEX ix_t_name ON t (name);",
    )
    fleet.add(
        "lite-spell-b",
        "CREATE TABLE \"t\" ( id integer primary key, NAME character varying(20) not null default ('x'),"
        " n integer check ( n>0 ) ); create index IX_T_NAME on t(name);",
    )
    topology = write_topology(tmp_path / "t.yaml", ["lite-spell-a", "lite-spell-b"])
    report = detect_drift(topology, depth=DriftDepth.FULL)
    assert not report.errors
    assert not report.has_drift, [d.to_dict() for d in report.diffs.get("lite-spell-b", ())]


@pytest.mark.parametrize("engine", ENGINES)
def test_history_table_is_excluded(fleet_factory, tmp_path, engine):
    fleet = fleet_factory(engine)
    a, b = f"{PREFIX[engine]}-hist-a", f"{PREFIX[engine]}-hist-b"
    fleet.add(a, "CREATE TABLE t (id integer PRIMARY KEY);")
    fleet.add(b, "CREATE TABLE t (id integer PRIMARY KEY); CREATE TABLE shardmigrate_history (migration_id text);")
    topology = write_topology(tmp_path / "t.yaml", [a, b])
    report = detect_drift(topology, depth=DriftDepth.FULL)
    assert not report.errors and not report.has_drift


def test_mysql_table_name_case_follows_lower_case_table_names(fleet_factory, tmp_path):
    """lower_case_table_names=0 (Linux default): ``Orders`` and ``orders`` are different tables; columns
    and indexes still compare case-insensitively."""
    fleet = fleet_factory("mysql")
    fleet.add("my-case-a", "CREATE TABLE orders (id INT PRIMARY KEY, Amount INT, INDEX IX_A (Amount));")
    fleet.add("my-case-b", "CREATE TABLE orders (id INT PRIMARY KEY, amount INT, INDEX ix_a (amount));")
    fleet.add("my-case-c", "CREATE TABLE Orders (id INT PRIMARY KEY, amount INT, INDEX ix_a (amount));")
    lctn = fleet.query("my-case-a", "SELECT @@lower_case_table_names")[0][0]
    topology = write_topology(tmp_path / "t.yaml", ["my-case-a", "my-case-b", "my-case-c"])
    report = detect_drift(topology, depth=DriftDepth.FULL)
    assert "my-case-b" not in report.diffs
    if int(lctn) == 0:
        kinds = {(d.table, d.kind.value) for d in report.diffs["my-case-c"]}
        assert kinds == {("orders", "missing"), ("Orders", "extra")}
    else:
        assert "my-case-c" not in report.diffs


def test_postgres_identifiers_are_case_sensitive_sqlite_not(fleet_factory, tmp_path):
    pg = fleet_factory("postgres")
    pg.add("pg-case-a", 'CREATE TABLE orders (id int PRIMARY KEY, "Amount" int);')
    pg.add("pg-case-b", "CREATE TABLE orders (id int PRIMARY KEY, amount int);")
    report = detect_drift(write_topology(tmp_path / "pg.yaml", ["pg-case-a", "pg-case-b"]), depth="full")
    columns = {(c.name, c.kind.value) for c in report.diffs["pg-case-b"][0].columns}
    assert columns == {("Amount", "missing"), ("amount", "extra")}
    lite = fleet_factory("sqlite")
    lite.add("lite-case-a", "CREATE TABLE Orders (id INTEGER PRIMARY KEY, Amount INT);")
    lite.add("lite-case-b", "CREATE TABLE orders (id INTEGER PRIMARY KEY, amount INT);")
    report = detect_drift(write_topology(tmp_path / "lite.yaml", ["lite-case-a", "lite-case-b"]), depth="full")
    assert not report.has_drift


# -- bounded queries ---------------------------------------------------------------------------------------


class CountingConnection:
    """A real DB-API connection that counts the statements run through its cursors."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.statements: list[str] = []

    def cursor(self, *args: Any, **kwargs: Any) -> Any:
        real = self.conn.cursor(*args, **kwargs)
        outer = self

        class Cursor:
            def execute(self, sql: str, params: Any = None) -> Any:
                outer.statements.append(sql)
                return real.execute(sql, params) if params is not None else real.execute(sql)

            def __getattr__(self, name: str) -> Any:
                return getattr(real, name)

        return Cursor()


def _schema_with(tables: int) -> str:
    parts = ["CREATE TABLE parent (id integer PRIMARY KEY);"]
    for i in range(tables):
        parts.append(
            f"CREATE TABLE t{i} (id integer PRIMARY KEY, parent_id integer REFERENCES parent (id), "
            f"v varchar(10) DEFAULT 'a' CHECK (v <> 'b'));"
        )
        parts.append(f"CREATE INDEX ix_t{i}_v ON t{i} (v);")
    return "\n".join(parts)


EXPECTED_QUERIES = {
    "sqlite": {"tables_only": 1, "tables_and_columns": 2, "full": 4},
    "postgres": {"tables_only": 1, "tables_and_columns": 2, "full": 4},
    "mysql": {"tables_only": 1, "tables_and_columns": 2, "full": 5},
}


def _raw_connection(engine: str, fleet: Any, shard: str) -> Any:
    if engine == "sqlite":
        return sqlite3.connect(fleet.paths[shard])
    return fleet.connect(shard)


@pytest.mark.parametrize("engine", ENGINES)
def test_catalog_queries_are_bounded_whatever_the_table_count(fleet_factory, engine):
    from importlib import import_module

    module = import_module(f"airflow_provider_shardmigrate.engines.introspect_{engine}")
    fleet = fleet_factory(engine)
    small, large = f"{PREFIX[engine]}-count-3", f"{PREFIX[engine]}-count-40"
    fleet.add(small, _schema_with(3))
    fleet.add(large, _schema_with(40))
    for depth in DriftDepth:
        counts = {}
        for shard, tables in ((small, 4), (large, 41)):
            conn = CountingConnection(_raw_connection(engine, fleet, shard))
            try:
                schema = module.introspect(conn, depth)
            finally:
                conn.conn.close()
            assert len(schema.tables) == tables
            if includes(depth, DriftDepth.FULL):
                t0 = schema.tables["t0"]
                assert [i.name for i in t0.indexes if i.name.casefold() == "ix_t0_v"]
                assert {c.kind.value for c in t0.constraints} >= {"primary", "foreign", "check"}
            counts[shard] = len(conn.statements)
        assert counts[small] == counts[large] == EXPECTED_QUERIES[engine][depth.value], (depth, counts)


# -- detection failures -------------------------------------------------------------------------------------


def test_unreachable_shards_are_detection_failures_without_secrets(fleet_factory, tmp_path):
    pg = fleet_factory("postgres")
    my = fleet_factory("mysql")
    lite = fleet_factory("sqlite")
    pg.add("pg-up", "CREATE TABLE t (id int PRIMARY KEY);")
    pg.add("pg-down", "CREATE TABLE t (id int PRIMARY KEY);", password="pg-Secret-42", port=1)
    my.add("my-down", "CREATE TABLE t (id int PRIMARY KEY);", password="my-Secret-42", port=1)
    gone = lite.add("lite-gone", "CREATE TABLE t (id INTEGER PRIMARY KEY);")
    Path(gone).unlink()
    topology = write_topology(tmp_path / "t.yaml", ["pg-up", "pg-down", "my-down", "lite-gone"])
    report = detect_drift(topology, depth=DriftDepth.TABLES_ONLY, timeout=10)
    assert set(report.errors) == {"pg-down", "my-down", "lite-gone"}
    assert report.shards_compared == ()
    for error in report.errors.values():
        assert error.code == "shardmigrate.schema_comparison_failed"
        assert "Secret-42" not in error.message, error.message
    assert "does not exist" in report.errors["lite-gone"].message
    health = assess_health(report)
    assert health.status is HealthStatus.UNHEALTHY
    assert "pg-down" in health.description and "detection failed" in health.description
    assert "Secret-42" not in str(report.to_dict())


def test_unreachable_baseline_fails_every_comparison(fleet_factory, tmp_path):
    pg = fleet_factory("postgres")
    pg.add("pg-base-down", "", port=1)
    pg.add("pg-other", "CREATE TABLE t (id int PRIMARY KEY);")
    report = detect_drift(write_topology(tmp_path / "t.yaml", ["pg-base-down", "pg-other"]), depth="tables_only")
    assert list(report.errors) == ["pg-base-down"]
    assert report.shards_compared == () and not report.has_drift
    assert assess_health(report).status is HealthStatus.UNHEALTHY


def test_sqlite_timeout_is_enforced_inside_the_database(fleet_factory, tmp_path):
    lite = fleet_factory("sqlite")
    lite.add("lite-big", _schema_with(150))
    with pytest.raises(Exception) as caught:
        introspect_shard(Shard("lite-big", "lite_big"), DriftDepth.FULL, timeout=0.000001)
    assert caught.value.code == "shardmigrate.schema_comparison_failed"  # type: ignore[attr-defined]
    assert "timed out" in str(caught.value)
    lite.add("lite-big-2", _schema_with(150))
    report = detect_drift(write_topology(tmp_path / "t.yaml", ["lite-big", "lite-big-2"]), timeout=0.000001)
    assert "timed out" in report.errors["lite-big"].message
    health = assess_health(report)
    assert health.status is HealthStatus.UNHEALTHY and "timed out" in health.description


def test_unsupported_connection_type_is_a_detection_failure(module_env, tmp_path):
    module_env.setenv("AIRFLOW_CONN_HTTP_SHARD", '{"conn_type": "http", "host": "127.0.0.1"}')
    topology = write_topology(tmp_path / "t.yaml", ["http-shard"])
    report = detect_drift(topology, baseline="http-shard")
    assert "does not support connection type 'http'" in report.errors["http-shard"].message


@pytest.mark.parametrize("engine", ["postgres", "mysql"])
def test_connections_are_read_only_and_bounded_in_the_server(fleet_factory, engine):
    from airflow_provider_shardmigrate.core.deadline import Deadline
    from airflow_provider_shardmigrate.engines.introspect import introspection_connection

    fleet = fleet_factory(engine)
    shard = f"{PREFIX[engine]}-bounded"
    fleet.add(shard, "CREATE TABLE t (id integer PRIMARY KEY);")
    with introspection_connection(Shard(shard, shard.replace("-", "_")), Deadline(20)) as (_, conn):
        cursor = conn.cursor()
        if engine == "postgres":
            cursor.execute(
                "SELECT current_setting('statement_timeout'), current_setting('transaction_read_only'),"
                " current_setting('application_name')"
            )
            timeout, read_only, name = cursor.fetchone()
            assert timeout.endswith("s") and int(timeout.rstrip("ms")) > 0 and read_only == "on"
            assert name == f"shardmigrate-drift:{shard}"
            with pytest.raises(Exception, match="read-only"):
                cursor.execute("CREATE TABLE nope (id int)")
        else:
            cursor.execute("SELECT @@SESSION.max_statement_time, @@SESSION.lock_wait_timeout")
            limit, wait = cursor.fetchone()
            assert 0 < float(limit) <= 20 and 1 <= int(wait) <= 20
            with pytest.raises(Exception, match="READ ONLY"):
                cursor.execute("INSERT INTO t VALUES (1)")


# -- a schema per shard ---------------------------------------------------------------------------------------


def test_a_schema_per_shard_is_read_alone_and_compared_with_the_other_schemas(postgres_server, tmp_path, monkeypatch):
    """Tenants as schemas of one database (each connection's search_path names its schema): a shard is read as
    its own schema only, its tables named bare -- the other tenants are not drift, and a shard's read does not
    grow with the number of tenants -- and a tenant whose table differs is reported against the others."""
    import json

    from tests.server_fixtures import PG_HOST, PG_PORT, PG_USER, pg_connect

    database = postgres_server.create_database()
    tenants = [f"tenant_{i}" for i in range(4)]
    with pg_connect(database) as conn:
        for tenant in tenants:
            conn.execute(f"CREATE SCHEMA {tenant}")
            conn.execute(f"CREATE TABLE {tenant}.parent (id integer PRIMARY KEY)")
            extra = ", note text" if tenant == "tenant_3" else ""
            conn.execute(
                f"CREATE TABLE {tenant}.customers (id integer PRIMARY KEY, "
                f"parent_id integer REFERENCES {tenant}.parent (id){extra})"
            )
    for tenant in tenants:
        spec = {"conn_type": "postgres", "host": PG_HOST, "port": PG_PORT, "login": PG_USER, "schema": database}
        spec["extra"] = {"options": f"-c search_path={tenant}"}
        monkeypatch.setenv(f"AIRFLOW_CONN_{tenant.upper()}", json.dumps(spec))
    schema = introspect_shard(Shard("tenant-0", "tenant_0"), DriftDepth.FULL, timeout=30)
    assert sorted(schema.tables) == ["customers", "parent"]
    foreign = [c for c in schema.tables["customers"].constraints if c.kind.value == "foreign"]
    assert [c.ref_table for c in foreign] == ["parent"]  # its own schema's table, named bare too
    topology = write_topology(tmp_path / "tenants.yaml", [t.replace("_", "-") for t in tenants])
    report = detect_drift(topology, depth=DriftDepth.TABLES_AND_COLUMNS, max_workers=4)
    assert not report.errors, report.errors
    assert {shard for shard, diffs in report.diffs.items() if diffs} == {"tenant-3"}
    (diff,) = report.diffs["tenant-3"]
    assert diff.table == "customers" and [c.name for c in diff.columns] == ["note"]
