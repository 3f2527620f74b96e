"""PostgreSQL introspection into the schema model: one catalog query per level, never one per table.

``tables_only`` 1 query, ``tables_and_columns`` 2, ``full`` 4 (tables, columns, indexes, constraints),
each over every table of every user schema at once. Types come from ``format_type`` (so ``int4`` and
``integer`` are already the same word), defaults and checks from the server's own deparser
(``pg_get_expr``/``pg_get_constraintdef``), then normalized by core/schema.py.

Tables in ``public`` are named bare (``orders``), others qualified (``billing.orders``). Objects that
belong to an extension (``CREATE EXTENSION postgis`` tables) are not the application's schema and are
left out, as is the history table. PostgreSQL identifiers are compared as stored (case-sensitive).

A shard whose session's current schema is not ``public`` (a schema per tenant: its connection says
``{"options": "-c search_path=tenant_42"}``) is that schema -- where the engine keeps its history and takes its
lock --, so only that schema's tables are read, named bare like ``public``'s: the other tenants' schemas of the
same database are other shards, not drift, and reading them would make each shard's read grow with the fleet.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from airflow_provider_shardmigrate.core.history import HISTORY_TABLE
from airflow_provider_shardmigrate.core.schema import (
    Column,
    Constraint,
    ConstraintKind,
    Index,
    Schema,
    Table,
    includes,
    normalize_default,
    normalize_expression,
    normalize_rule,
    normalize_type,
)
from airflow_provider_shardmigrate.core.topology import DriftDepth

ENGINE = "postgres"

#: The application's tables: ordinary and partitioned, in user schemas, not owned by an extension.
_TABLES_CTE = """
WITH t AS (
    SELECT c.oid, CASE WHEN n.nspname = pg_catalog.current_schema() THEN 'public' ELSE n.nspname END AS nspname,
           c.relname
    FROM pg_catalog.pg_class AS c
    JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p')
      AND (pg_catalog.current_schema() IS NULL OR pg_catalog.current_schema() = 'public'
           OR n.nspname = pg_catalog.current_schema())
      AND n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND n.nspname NOT LIKE 'pg\\_toast%%' AND n.nspname NOT LIKE 'pg\\_temp\\_%%'
      AND c.relname <> %s
      AND NOT EXISTS (
          SELECT 1 FROM pg_catalog.pg_depend AS d
          WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e'
      )
)
"""
_TABLES = _TABLES_CTE + "SELECT t.nspname, t.relname FROM t ORDER BY 1, 2"
_COLUMNS = (
    _TABLES_CTE
    + """
SELECT t.nspname, t.relname, a.attname::text, pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull,
       pg_catalog.pg_get_expr(d.adbin, d.adrelid), a.attidentity::text, a.attgenerated::text
FROM t
JOIN pg_catalog.pg_attribute AS a ON a.attrelid = t.oid
LEFT JOIN pg_catalog.pg_attrdef AS d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attnum > 0 AND NOT a.attisdropped
ORDER BY 1, 2, a.attnum
"""
)
_INDEXES = (
    _TABLES_CTE
    + """
SELECT t.nspname, t.relname, i.relname::text, x.indisunique, am.amname::text,
       ARRAY(
           SELECT pg_catalog.pg_get_indexdef(x.indexrelid, k, true)
                  || CASE WHEN (x.indoption[k - 1] & 1) = 1 THEN ' desc' ELSE '' END
           FROM pg_catalog.generate_series(1, x.indnkeyatts) AS k
           ORDER BY k
       ),
       pg_catalog.pg_get_expr(x.indpred, x.indrelid, true)
FROM t
JOIN pg_catalog.pg_index AS x ON x.indrelid = t.oid
JOIN pg_catalog.pg_class AS i ON i.oid = x.indexrelid
JOIN pg_catalog.pg_am AS am ON am.oid = i.relam
WHERE NOT EXISTS (
    SELECT 1 FROM pg_catalog.pg_constraint AS con
    WHERE con.conindid = x.indexrelid AND con.conrelid = x.indrelid AND con.contype IN ('p', 'u', 'x')
)
ORDER BY 1, 2, 3
"""
)
_CONSTRAINTS = (
    _TABLES_CTE
    + """
SELECT t.nspname, t.relname, con.conname::text, con.contype::text,
       ARRAY(
           SELECT a.attname::text
           FROM unnest(con.conkey) WITH ORDINALITY AS k(attnum, ord)
           JOIN pg_catalog.pg_attribute AS a ON a.attrelid = con.conrelid AND a.attnum = k.attnum
           ORDER BY k.ord
       ),
       CASE WHEN rn.nspname = pg_catalog.current_schema() THEN 'public' ELSE rn.nspname::text END, rc.relname::text,
       ARRAY(
           SELECT a.attname::text
           FROM unnest(con.confkey) WITH ORDINALITY AS k(attnum, ord)
           JOIN pg_catalog.pg_attribute AS a ON a.attrelid = con.confrelid AND a.attnum = k.attnum
           ORDER BY k.ord
       ),
       con.confupdtype::text, con.confdeltype::text,
       CASE WHEN con.contype = 'c' THEN pg_catalog.pg_get_constraintdef(con.oid, true) END
FROM t
JOIN pg_catalog.pg_constraint AS con ON con.conrelid = t.oid
LEFT JOIN pg_catalog.pg_class AS rc ON rc.oid = con.confrelid
LEFT JOIN pg_catalog.pg_namespace AS rn ON rn.oid = rc.relnamespace
WHERE con.contype IN ('p', 'u', 'f', 'c')
ORDER BY 1, 2, 3
"""
)
_KINDS = {
    "p": ConstraintKind.PRIMARY,
    "u": ConstraintKind.UNIQUE,
    "f": ConstraintKind.FOREIGN,
    "c": ConstraintKind.CHECK,
}


def qualified(schema: str, table: str) -> str:
    return table if schema == "public" else f"{schema}.{table}"


def _fetch(conn: Any, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    cursor = conn.cursor()
    try:
        cursor.execute(sql, params)
        return [tuple(row.values()) if isinstance(row, dict) else tuple(row) for row in cursor.fetchall()]
    finally:
        cursor.close()


def _default(expression: str | None, identity: str | None, generated: str | None) -> str | None:
    if generated == "s":
        return f"generated always as ({normalize_expression(expression)}) stored"
    if identity == "a":
        return "generated always as identity"
    if identity == "d":
        return "generated by default as identity"
    return normalize_default(expression)


def introspect(conn: Any, depth: DriftDepth, *, exclude: str = HISTORY_TABLE) -> Schema:
    """The schema of the PostgreSQL database behind the DB-API connection ``conn`` at ``depth``."""
    names = [qualified(schema, table) for schema, table in _fetch(conn, _TABLES, (exclude,))]
    columns: dict[str, list[Column]] = defaultdict(list)
    indexes: dict[str, list[Index]] = defaultdict(list)
    constraints: dict[str, list[Constraint]] = defaultdict(list)
    if includes(depth, DriftDepth.TABLES_AND_COLUMNS):
        for schema, table, name, type_, notnull, default, identity, generated in _fetch(conn, _COLUMNS, (exclude,)):
            columns[qualified(schema, table)].append(
                Column(name, normalize_type(type_, ENGINE), not notnull, _default(default, identity, generated))
            )
    if includes(depth, DriftDepth.FULL):
        for schema, table, name, unique, method, keys, predicate in _fetch(conn, _INDEXES, (exclude,)):
            indexes[qualified(schema, table)].append(
                Index(
                    name,
                    tuple(normalize_expression(k) for k in keys),
                    bool(unique),
                    method,
                    normalize_expression(predicate) or None,
                )
            )
        for row in _fetch(conn, _CONSTRAINTS, (exclude,)):
            schema, table, name, kind_code, cols, ref_schema, ref_table, ref_cols, upd, dele, definition = row
            kind = _KINDS[kind_code]
            constraints[qualified(schema, table)].append(
                Constraint(
                    kind,
                    name,
                    tuple(cols or ()),
                    ref_table=qualified(ref_schema, ref_table) if kind is ConstraintKind.FOREIGN else None,
                    ref_columns=tuple(ref_cols or ()),
                    on_update=normalize_rule(upd) if kind is ConstraintKind.FOREIGN else None,
                    on_delete=normalize_rule(dele) if kind is ConstraintKind.FOREIGN else None,
                    expression=normalize_expression(definition) if kind is ConstraintKind.CHECK else None,
                )
            )
    return Schema.build(
        ENGINE,
        depth,
        (
            Table(name, tuple(columns.get(name, ())), tuple(indexes.get(name, ())), tuple(constraints.get(name, ())))
            for name in names
        ),
    )
