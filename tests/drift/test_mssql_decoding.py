"""SQL Server introspection without a server: rows shaped like the ``sys.*`` catalog views' answers to
engines/introspect_mssql.py's queries (the columns each query selects, SQL Server's own spellings of
defaults and checks) decoded into the schema model, and compared the way drift compares shards.

These rows are constructed, not recorded from a live server (none can run here): the contract suite reads a
real catalog when ``SHARDMIGRATE_TEST_MSSQL_URL`` is set.
"""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_shardmigrate.core.drift import compare_schemas
from airflow_provider_shardmigrate.core.schema import Column, Constraint, ConstraintKind, Index, normalize_type
from airflow_provider_shardmigrate.core.topology import DriftDepth
from airflow_provider_shardmigrate.engines.introspect_mssql import QUERIES, decode, render_type, unquote

# TABLES: ci, schema, table
TABLES = [(1, "billing", "invoices"), (1, "dbo", "customers"), (1, "dbo", "orders")]
# COLUMNS: schema, table, column, type, max_length, precision, scale, is_nullable, default, is_identity,
#          computed definition, is_persisted
COLUMNS = [
    ("dbo", "customers", "id", "int", 4, 10, 0, False, None, True, None, None),
    ("dbo", "customers", "name", "nvarchar", 100, 0, 0, False, None, False, None, None),
    ("dbo", "customers", "bio", "nvarchar", -1, 0, 0, True, None, False, None, None),
    ("dbo", "orders", "id", "bigint", 8, 19, 0, False, None, True, None, None),
    ("dbo", "orders", "customer_id", "int", 4, 10, 0, False, None, False, None, None),
    ("dbo", "orders", "total", "decimal", 9, 10, 2, False, "((0))", False, None, None),
    ("dbo", "orders", "status", "varchar", 16, 0, 0, False, "('new')", False, None, None),
    ("dbo", "orders", "note", "nvarchar", 40, 0, 0, True, "(N'a;b')", False, None, None),
    ("dbo", "orders", "created", "datetime2", 8, 27, 7, False, "(sysutcdatetime())", False, None, None),
    ("dbo", "orders", "ratio", "float", 8, 53, 0, True, None, False, None, None),
    ("dbo", "orders", "version", "timestamp", 8, 0, 0, False, None, False, None, None),
    ("dbo", "orders", "double_total", "decimal", 13, 21, 2, True, None, False, "([total]*(2))", True),
    ("billing", "invoices", "id", "int", 4, 10, 0, False, None, False, None, None),
]
# INDEXES: schema, table, index, is_unique, type_desc, filter, is_included, key_ordinal, column, is_descending
INDEXES = [
    ("dbo", "orders", "idx_orders_customer", False, "NONCLUSTERED", None, False, 1, "customer_id", False),
    ("dbo", "orders", "idx_orders_customer", False, "NONCLUSTERED", None, False, 2, "created", True),
    ("dbo", "orders", "idx_orders_customer", False, "NONCLUSTERED", None, True, 0, "total", False),
    ("dbo", "orders", "idx_orders_open", True, "NONCLUSTERED", "([status]='new')", False, 1, "id", False),
]
# CONSTRAINTS: schema, table, name, kind, ordinal, column, ref schema, ref table, ref column, on update,
#              on delete, check definition
CONSTRAINTS = [
    ("dbo", "customers", "PK__customer__3213E83F", "PK", 1, "id", None, None, None, None, None, None),
    ("dbo", "orders", "CK__orders__total__4AB81AF0", "C", 1, None, None, None, None, None, None, "([total]>=(0))"),
    (
        "dbo",
        "orders",
        "fk_orders_customer",
        "F",
        1,
        "customer_id",
        "dbo",
        "customers",
        "id",
        "NO_ACTION",
        "CASCADE",
        None,
    ),
    ("dbo", "orders", "PK__orders__3213E83F", "PK ", 1, "id", None, None, None, None, None, None),
    ("dbo", "orders", "uq_orders_status", "UQ", 1, "status", None, None, None, None, None, None),
    ("dbo", "orders", "uq_orders_status", "UQ", 2, "customer_id", None, None, None, None, None, None),
    ("billing", "invoices", "fk_invoice_order", "F", 1, "id", "dbo", "orders", "id", "SET_NULL", "NO_ACTION", None),
]


def full() -> Any:
    return decode(DriftDepth.FULL, TABLES, COLUMNS, INDEXES, CONSTRAINTS)


def test_tables_are_named_bare_in_dbo_and_qualified_elsewhere() -> None:
    schema = decode(DriftDepth.TABLES_ONLY, TABLES)
    assert list(schema.tables) == ["billing.invoices", "customers", "orders"]
    assert schema.engine == "mssql" and schema.table_names_ci and schema.column_names_ci
    assert all(not table.columns for table in schema.tables.values())


def test_an_empty_database_still_reports_its_collation() -> None:
    schema = decode(DriftDepth.TABLES_ONLY, [(0, None, None)])
    assert schema.tables == {} and not schema.table_names_ci


def test_columns_types_nullability_defaults() -> None:
    orders = {c.name: c for c in full().tables["orders"].columns}
    customers = {c.name: c for c in full().tables["customers"].columns}
    assert customers["id"] == Column("id", "integer", False, "identity")
    assert customers["name"] == Column("name", "nvarchar(50)", False, None)  # max_length counts bytes
    assert customers["bio"].type == "nvarchar(max)"
    assert orders["id"] == Column("id", "bigint", False, "identity")
    assert orders["total"] == Column("total", "numeric(10,2)", False, "0")
    assert orders["status"] == Column("status", "varchar(16)", False, "'new'")
    assert orders["note"].default == "'a;b'"  # N'...' is spelling
    assert orders["created"] == Column("created", "datetime2(7)", False, "sysutcdatetime()")
    assert orders["ratio"].type == "double" and orders["ratio"].nullable
    assert orders["version"].type == "rowversion"  # SQL Server's timestamp is no point in time
    assert orders["double_total"].default == "computed as (total*2) persisted"


def test_indexes_keys_order_direction_includes_filter() -> None:
    indexes = {i.name: i for i in full().tables["orders"].indexes}
    assert indexes["idx_orders_customer"] == Index(
        "idx_orders_customer", ("customer_id", "created desc", "include total"), False, "nonclustered", None
    )
    assert indexes["idx_orders_open"] == Index("idx_orders_open", ("id",), True, "nonclustered", "status='new'")


def test_constraints_primary_unique_foreign_check() -> None:
    orders = full().tables["orders"].constraints
    by_kind = {c.kind: c for c in orders}
    assert by_kind[ConstraintKind.PRIMARY] == Constraint(ConstraintKind.PRIMARY, "PK__orders__3213E83F", ("id",))
    assert by_kind[ConstraintKind.UNIQUE].columns == ("status", "customer_id")
    assert by_kind[ConstraintKind.FOREIGN] == Constraint(
        ConstraintKind.FOREIGN,
        "fk_orders_customer",
        ("customer_id",),
        ref_table="customers",
        ref_columns=("id",),
        on_update="no action",
        on_delete="cascade",
    )
    assert by_kind[ConstraintKind.CHECK].expression == "total>=0"
    invoice_fk = full().tables["billing.invoices"].constraints[0]
    assert invoice_fk.ref_table == "orders" and invoice_fk.on_update == "set null"


def test_depths_read_only_what_they_compare() -> None:
    columns_only = decode(DriftDepth.TABLES_AND_COLUMNS, TABLES, COLUMNS, INDEXES, CONSTRAINTS)
    assert columns_only.tables["orders"].columns and not columns_only.tables["orders"].indexes
    assert not columns_only.tables["orders"].constraints
    assert {depth: len(queries) for depth, queries in QUERIES.items()} == {
        DriftDepth.TABLES_ONLY: 1,
        DriftDepth.TABLES_AND_COLUMNS: 2,
        DriftDepth.FULL: 4,
    }


def _with(rows: list[tuple[Any, ...]], index: int, **changes: Any) -> list[tuple[Any, ...]]:
    """``rows`` with row ``index`` changed at named positions of the COLUMNS shape."""
    positions = {"type": 3, "max_length": 4, "precision": 5, "scale": 6, "nullable": 7, "default": 8}
    row = list(rows[index])
    for name, value in changes.items():
        row[positions[name]] = value
    return [*rows[:index], tuple(row), *rows[index + 1 :]]


def _drift(shard_columns: list[tuple[Any, ...]], shard_constraints: list[tuple[Any, ...]] = CONSTRAINTS) -> Any:
    baseline = full()
    shard = decode(DriftDepth.FULL, TABLES, shard_columns, INDEXES, shard_constraints)
    return compare_schemas(baseline, shard, DriftDepth.FULL)


def test_the_same_schema_spelled_differently_is_no_drift() -> None:
    # generated constraint names differ between shards built from the same DDL; so may default spellings
    renamed = [
        (*row[:2], row[2].replace("4AB81AF0", "5BC92B01").replace("3213E83F", "ABCDEF12"), *row[3:])
        for row in CONSTRAINTS
    ]
    respelled = _with(COLUMNS, 5, default="(0)")  # ((0)) and (0)
    respelled = _with(respelled, 7, default="('a;b')")  # N'a;b' and 'a;b'
    assert _drift(respelled, renamed) == ()


@pytest.mark.parametrize(
    ("index", "changes", "attribute"),
    [
        (1, {"type": "varchar", "max_length": 50}, "type"),  # nvarchar(50) -> varchar(50) is real drift
        (1, {"max_length": 200}, "type"),  # nvarchar(50) -> nvarchar(100)
        (5, {"scale": 3}, "type"),  # decimal(10,2) -> decimal(10,3)
        (4, {"nullable": True}, "nullable"),
        (6, {"default": "('old')"}, "default"),
    ],
)
def test_real_differences_are_drift(index: int, changes: dict[str, Any], attribute: str) -> None:
    diffs = _drift(_with(COLUMNS, index, **changes))
    table = COLUMNS[index][1]
    column = COLUMNS[index][2]
    diff = next(t for t in diffs if t.table == table)
    changed = next(c for c in diff.columns if c.name == column)
    assert attribute in {change.attribute for change in changed.changes}, changed


@pytest.mark.parametrize(
    ("spelled", "canonical"),
    [
        ("INT", "integer"),
        ("int", "integer"),
        ("NVARCHAR(50)", "nvarchar(50)"),
        ("nvarchar (50)", "nvarchar(50)"),
        ("national character varying(50)", "nvarchar(50)"),
        ("NVARCHAR(MAX)", "nvarchar(max)"),
        ("DECIMAL(10, 2)", "numeric(10,2)"),
        ("numeric(10)", "numeric(10,0)"),
        ("decimal", "numeric(18,0)"),
        ("datetime2", "datetime2(7)"),
        ("float", "double"),
        ("real", "real"),
        ("timestamp", "rowversion"),
        ("char varying(5)", "varchar(5)"),
    ],
)
def test_sql_server_type_spellings_normalize(spelled: str, canonical: str) -> None:
    assert normalize_type(spelled, "mssql") == canonical


def test_render_type_and_unquote() -> None:
    assert (
        render_type("nvarchar", 100, 0, 0) == "nvarchar(50)" and render_type("varbinary", -1, 0, 0) == "varbinary(max)"
    )
    assert render_type("time", 5, 16, 7) == "time(7)" and render_type("bit", 1, 1, 0) == "bit"
    assert unquote("([qty]>(0) AND [name]<>N'x''[y]')") == "(qty>(0) AND name<>'x''[y]')"
    assert unquote("[odd]]name]") == "odd]name" and unquote(None) is None
