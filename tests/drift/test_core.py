"""The pure parts: normalization, comparison at each depth, baseline choice, health, report JSON, and the
helpers for the migration gate. No database."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from airflow_provider_shardmigrate.core.drift import (
    DiffKind,
    DriftReport,
    ShardError,
    choose_baseline,
    compare_fleet,
    compare_schemas,
    differing_tables,
    shards_to_compare,
    tables_in_script,
)
from airflow_provider_shardmigrate.core.errors import SchemaComparisonFailedError
from airflow_provider_shardmigrate.core.health import FleetHealth, HealthStatus, assess_health, is_critical
from airflow_provider_shardmigrate.core.schema import (
    Column,
    Constraint,
    ConstraintKind,
    Index,
    Schema,
    Table,
    normalize_default,
    normalize_expression,
    normalize_type,
)
from airflow_provider_shardmigrate.core.topology import DriftDepth, parse_topology

# -- normalization -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spellings", "engine", "canonical"),
    [
        (["int4", "integer", "INT", "serial"], "postgres", "integer"),
        (["int(11)", "INT", "integer(10)"], "mysql", "integer"),
        (["int(10) unsigned", "INT UNSIGNED"], "mysql", "integer unsigned"),
        (["tinyint(1)", "bool", "BOOLEAN"], "mysql", "boolean"),
        (["tinyint(4)", "TINYINT"], "mysql", "tinyint"),
        (["varchar(20)", "character varying(20)", "VARCHAR (20)"], "postgres", "varchar(20)"),
        (["bool", "boolean"], "postgres", "boolean"),
        (["timestamptz", "timestamp with time zone"], "postgres", "timestamptz"),
        (["timestamp", "timestamp without time zone"], "postgres", "timestamp"),
        (["timestamp(3) with time zone", "timestamptz(3)"], "postgres", "timestamptz(3)"),
        (["numeric(10,2)", "decimal(10, 2)", "NUMERIC(10 ,2)"], "postgres", "numeric(10,2)"),
        (["decimal(8)", "numeric(8,0)"], "mysql", "numeric(8,0)"),
        (["float8", "double precision", "float"], "postgres", "double"),
        (["float", "float4", "real"], "mysql", "real"),
        (["int4[]", "integer[]"], "postgres", "integer[]"),
        (["char(3)", "character(3)", "bpchar(3)"], "postgres", "char(3)"),
    ],
)
def test_type_aliases_fold(spellings, engine, canonical):
    assert {normalize_type(s, engine) for s in spellings} == {canonical}


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("varchar(20)", "varchar(21)"),
        ("numeric(10,2)", "numeric(10,3)"),
        ("timestamp", "timestamptz"),
        ("integer", "bigint"),
        ("enum('A')", "enum('a')"),
        ("integer", "integer unsigned"),
    ],
)
def test_types_that_differ_stay_different(a, b):
    assert normalize_type(a, "mysql") != normalize_type(b, "mysql")


@pytest.mark.parametrize(
    ("spellings", "canonical"),
    [
        (["'x'::character varying", "'x'", "('x')", "'x'::text"], "'x'"),
        (["NULL", "NULL::character varying", None, "null"], None),
        (["0", "'0'", "(0)::numeric", "((0))"], "0"),
        (["now()", "CURRENT_TIMESTAMP", "current_timestamp()", "(datetime('now'))"], "current_timestamp"),
        (["nextval('t_id_seq'::regclass)", "nextval('t_id_seq')"], "nextval('t_id_seq')"),
        (["'It''s'", "'It''s'::text"], "'It''s'"),
    ],
)
def test_defaults_normalize(spellings, canonical):
    assert {normalize_default(s) for s in spellings} == {canonical}


def test_string_literals_keep_their_case():
    assert normalize_default("'Active'") != normalize_default("'active'")


@pytest.mark.parametrize(
    "spellings",
    [
        ["CHECK ((total >= (0)::numeric))", "`total` >= 0", "total>=0", "CHECK (TOTAL >= 0)", '("total" >= 0)'],
        ["(length(name) > 2)", "length( name )>2", "LENGTH(name) > (2)"],
    ],
)
def test_check_expressions_normalize(spellings):
    assert len({normalize_expression(s) for s in spellings}) == 1


# -- comparison --------------------------------------------------------------------------------------------


def _schema(*tables: Table, depth: DriftDepth = DriftDepth.FULL, ci: bool = False) -> Schema:
    return Schema.build("postgres", depth, tables, table_names_ci=ci, column_names_ci=ci)


ORDERS = Table(
    "orders",
    (Column("id", "integer", False), Column("total", "numeric(10,2)", False, "0"), Column("note", "text")),
    (Index("ix_total", ("total",)),),
    (
        Constraint(ConstraintKind.PRIMARY, "orders_pkey", ("id",)),
        Constraint(ConstraintKind.FOREIGN, "fk", ("cid",), "customers", ("id",), "no action", "cascade"),
        Constraint(ConstraintKind.CHECK, "ck", expression="total>=0"),
    ),
)


def test_depth_decides_what_is_compared():
    changed = Table(
        "orders",
        (Column("id", "integer", False), Column("total", "numeric(12,2)", False, "0"), Column("note", "text")),
        (),
        ORDERS.constraints,
    )
    base, shard = _schema(ORDERS), _schema(changed)
    assert compare_schemas(base, shard, DriftDepth.TABLES_ONLY) == ()
    columns_only = compare_schemas(base, shard, DriftDepth.TABLES_AND_COLUMNS)
    assert [d.details() for d in columns_only] == [["column total: type numeric(10,2) -> numeric(12,2)"]]
    full = compare_schemas(base, shard, DriftDepth.FULL)[0]
    assert [d.name for d in full.indexes] == ["ix_total"] and full.indexes[0].kind is DiffKind.MISSING


def test_constraints_compare_by_meaning_not_engine_invented_names():
    renamed = Table(
        "orders",
        ORDERS.columns,
        ORDERS.indexes,
        (
            Constraint(ConstraintKind.PRIMARY, "PRIMARY", ("id",)),
            Constraint(ConstraintKind.FOREIGN, "orders_ibfk_1", ("cid",), "customers", ("id",), "no action", "cascade"),
            Constraint(ConstraintKind.CHECK, "CONSTRAINT_1", expression="total>=0"),
        ),
    )
    assert compare_schemas(_schema(ORDERS), _schema(renamed), DriftDepth.FULL) == ()
    other_rule = Table(
        "orders",
        ORDERS.columns,
        ORDERS.indexes,
        (
            *ORDERS.constraints[:1],
            Constraint(ConstraintKind.FOREIGN, "fk", ("cid",), "customers", ("id",)),
            ORDERS.constraints[2],
        ),
    )
    diff = compare_schemas(_schema(ORDERS), _schema(other_rule), DriftDepth.FULL)[0]
    assert [c.attribute for c in diff.constraints[0].changes] == ["on delete"]


def test_case_insensitive_engines_fold_names():
    upper = Table("ORDERS", (Column("ID", "integer", False),))
    lower = Table("orders", (Column("id", "integer", False),))
    assert compare_schemas(_schema(upper, ci=True), _schema(lower, ci=True), DriftDepth.FULL) == ()
    kinds = {(d.table, d.kind) for d in compare_schemas(_schema(upper), _schema(lower), DriftDepth.FULL)}
    assert kinds == {("ORDERS", DiffKind.MISSING), ("orders", DiffKind.EXTRA)}


def test_shallow_schema_cannot_be_compared_deeper():
    with pytest.raises(SchemaComparisonFailedError):
        compare_schemas(_schema(ORDERS, depth=DriftDepth.TABLES_ONLY), _schema(ORDERS), DriftDepth.FULL)


# -- baseline and fleet ------------------------------------------------------------------------------------

TOPOLOGY = parse_topology(
    {
        "shards": [
            {"id": "ref", "conn_id": "ref", "active": False},
            {"id": "s1", "conn_id": "s1"},
            {"id": "S2", "conn_id": "s2"},
            {"id": "s3", "conn_id": "s3"},
        ]
    },
    "shards.yaml",
)


def test_baseline_choice():
    assert choose_baseline(TOPOLOGY).id == "s1"  # first ACTIVE shard
    assert choose_baseline(TOPOLOGY, "s2").id == "S2"  # ids are case-insensitive
    assert choose_baseline(TOPOLOGY, "ref").id == "ref"  # an inactive baseline is allowed
    assert [s.id for s in shards_to_compare(TOPOLOGY, choose_baseline(TOPOLOGY, "ref"))] == ["s1", "S2", "s3"]
    assert [s.id for s in shards_to_compare(TOPOLOGY, choose_baseline(TOPOLOGY, "s3"))] == ["s1", "S2"]
    with pytest.raises(SchemaComparisonFailedError) as caught:
        choose_baseline(TOPOLOGY, "nope")
    assert caught.value.code == "shardmigrate.schema_comparison_failed"
    assert "nope" in str(caught.value) and "s1" in str(caught.value)


def test_topology_baseline_is_the_default():
    topology = parse_topology(
        {"shards": [{"id": "a", "conn_id": "a"}, {"id": "b", "conn_id": "b"}], "drift": {"baseline": "b"}}
    )
    assert choose_baseline(topology).id == "b"
    assert choose_baseline(topology, "a").id == "a"


def _fleet_report() -> DriftReport:
    base = _schema(ORDERS, Table("payments", (Column("id", "integer", False),)))
    drifted = _schema(
        Table("orders", ORDERS.columns[:2], ORDERS.indexes, ORDERS.constraints),
        Table("payments", (Column("id", "integer", False),)),
    )
    other = _schema(ORDERS)
    return compare_fleet(
        "s1",
        ["s2", "s3", "s4", "s5"],
        {"s1": base, "s2": drifted, "s3": base, "s4": other},
        {"s5": ShardError("shardmigrate.schema_comparison_failed", "connection refused")},
        DriftDepth.FULL,
        generated_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


def test_fleet_report():
    report = _fleet_report()
    assert report.shards_compared == ("s2", "s3", "s4")
    assert report.drifted_shards == ("s2", "s4")
    assert report.has_drift and report.detection_failed
    assert report.drifted_tables() == {"orders": ("s2",), "payments": ("s4",)}
    assert report.generated_at == "2026-01-01T00:00:00+00:00"
    assert report.diffs["s4"][0].kind is DiffKind.MISSING


def test_report_json_round_trip_and_compact_form():
    report = _fleet_report()
    text = json.dumps(report.to_dict())
    assert DriftReport.from_dict(json.loads(text)) == report
    many = DriftReport(
        "b",
        DriftDepth.TABLES_ONLY,
        "now",
        ("s",),
        {
            "s": tuple(
                compare_schemas(_schema(*(Table(f"t{i}") for i in range(120))), _schema(), DriftDepth.TABLES_ONLY)
            )
        },
    )
    compact = many.to_xcom()
    assert len(compact["diffs"]["s"]) == 50 and compact["truncated"] == {"s": 70}
    assert '"tables":' not in json.dumps(compact)  # differences only, never schemas
    assert DriftReport.from_dict(compact).truncated == {"s": 70}


def test_baseline_failure_compares_nothing():
    report = compare_fleet("s1", ["s2"], {"s2": _schema(ORDERS)}, {}, DriftDepth.FULL)
    assert list(report.errors) == ["s1"] and report.shards_compared == ()


# -- health ------------------------------------------------------------------------------------------------


def test_health_rules():
    clean = compare_fleet("s1", ["s2"], {"s1": _schema(ORDERS), "s2": _schema(ORDERS)}, {}, DriftDepth.FULL)
    healthy = assess_health(clean, ["orders"])
    assert healthy.status is HealthStatus.HEALTHY and healthy.status.exit_code == 0
    assert "1 shard(s) match baseline s1" in healthy.description

    drift = compare_fleet(
        "s1",
        ["s2", "s3"],
        {"s1": _schema(ORDERS, Table("log")), "s2": _schema(ORDERS), "s3": _schema(ORDERS)},
        {},
        DriftDepth.FULL,
    )
    degraded = assess_health(drift, ["orders", "payments"])
    assert degraded.status is HealthStatus.DEGRADED and degraded.status.exit_code == 1
    assert "s2, s3" in degraded.description and "orders, payments" in degraded.description
    assert "log" in degraded.description

    unhealthy = assess_health(drift, ["LOG"])  # critical tables match case-insensitively
    assert unhealthy.status is HealthStatus.UNHEALTHY and unhealthy.status.exit_code == 2
    assert unhealthy.critical_drift == {"log": ("s2", "s3")}
    assert "critical table(s) drifted: log on s2, s3" in unhealthy.description

    failed = assess_health(_fleet_report(), [])
    assert failed.status is HealthStatus.UNHEALTHY
    assert "detection failed on 1 shard(s) (s5: connection refused)" in failed.description
    assert FleetHealth.from_dict(json.loads(json.dumps(failed.to_dict()))) == failed


def test_critical_table_matching():
    assert is_critical("Orders", ["orders"])
    assert is_critical("billing.orders", ["ORDERS"])
    assert is_critical("billing.orders", ["billing.orders"])
    assert not is_critical("billing.orders", ["other.orders"])
    assert not is_critical("orders_archive", ["orders"])


# -- the migration gate's helpers --------------------------------------------------------------------------


def test_differing_tables():
    base = _schema(ORDERS, Table("payments", (Column("id", "integer", False),)))
    same = _schema(ORDERS, Table("payments", (Column("id", "integer", False),)))
    other = _schema(Table("orders", ORDERS.columns[:2]), Table("payments", (Column("id", "integer", False),)))
    schemas = {"s1": base, "s2": same, "s3": other}
    assert differing_tables(schemas, ["orders", "payments", "new_table"]) == {"orders": ("s3",)}
    assert differing_tables(schemas, ["orders"], DriftDepth.TABLES_ONLY) == {}
    assert differing_tables(schemas, ["public.orders"]) == {"public.orders": ("s3",)}
    partial = {"s1": base, "s2": _schema(ORDERS)}
    assert differing_tables(partial, ["payments"]) == {"payments": ("s2",)}


@pytest.mark.parametrize(
    ("script", "tables"),
    [
        (
            "CREATE TABLE IF NOT EXISTS orders (id int); ALTER TABLE ONLY public.customers ADD COLUMN x int;",
            {"orders", "public.customers"},
        ),
        ('CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS ix ON "Orders" (a); DROP INDEX ix;', {"Orders"}),
        (
            "INSERT INTO audit (a) SELECT a FROM src s INNER JOIN other o ON o.id = s.id; UPDATE user SET x = 1;",
            {"audit", "src", "other", "user"},
        ),
        ("ALTER TABLE a ADD CONSTRAINT fk FOREIGN KEY (x) REFERENCES b (id) ON DELETE CASCADE;", {"a", "b"}),
        (
            "-- ALTER TABLE fake\nDELETE FROM t1 WHERE note = 'from t2'; TRUNCATE TABLE t3; DROP TABLE t4, t5;",
            {"t1", "t3", "t4", "t5"},
        ),
        (
            "ALTER TABLE old RENAME TO new; RENAME TABLE x TO y; ALTER TABLE q RENAME COLUMN a TO b;",
            {"old", "new", "x", "y", "q"},
        ),
        (
            "CREATE INDEX ON t6 USING btree (c); COMMENT ON TABLE t7 IS 'x'; ALTER TABLE `m`.`t8` ADD INDEX i (c);",
            {"t6", "t7", "m.t8"},
        ),
        ("/* DROP TABLE nope; */ CREATE TABLE c2 AS SELECT * FROM c1;", {"c2", "c1"}),
    ],
)
def test_tables_in_script(script, tables):
    assert tables_in_script(script) == tables
