"""SQL Server introspection into the schema model, from the ``sys.*`` catalog views of the connection's
database: one query per level over every table at once -- ``tables_only`` 1, ``tables_and_columns`` 2,
``full`` 4 (tables, columns, indexes, constraints).

**Not verified against a live SQL Server** (none can run on the development machine): the queries are parsed
as T-SQL by sqlglot and :func:`decode` is tested with rows shaped like the catalog's
(tests/drift/test_mssql_decoding.py); the contract suite runs them on a real server when one is configured.

What differs from the other engines, and why:

- Types are rebuilt from ``sys.types`` plus ``max_length``/``precision``/``scale`` the way SQL Server spells
  them (``nvarchar(50)`` -- ``max_length`` counts bytes, two per character --, ``varchar(max)``,
  ``decimal(10,2)``, ``datetime2(7)``), then normalized by core/schema.py with the ``mssql`` rules (``nvarchar``
  stays apart from ``varchar``, ``timestamp`` is ``rowversion``).
- Defaults and check definitions come back as SQL Server stores them (``((0))``, ``(N'x')``, ``([qty]>(0))``):
  the ``N`` of Unicode literals and ``[...]`` identifier quotes are spelling, dropped before the shared
  normalization.
- Identity columns read as ``identity``, computed columns as ``computed as (...)`` (``persisted`` when so).
- Primary keys and unique constraints are constraints (SQL Server backs them with indexes, which are not
  listed again); other indexes list their key columns (``desc`` where descending), then ``include`` columns;
  the method is the index kind (``clustered``, ``nonclustered``, ``columnstore``...); filtered indexes keep
  their filter as the predicate.
- Names compare case-insensitively when the database's collation does (``N'a' = N'A'``, read in the first
  query). Tables in ``dbo`` are named bare, others qualified (``billing.orders``).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
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

ENGINE = "mssql"
DEFAULT_SCHEMA = "dbo"

_USER_TABLES = """
    FROM sys.tables AS t
    JOIN sys.schemas AS s ON s.schema_id = t.schema_id
"""
_USER_TABLES_WHERE = "t.is_ms_shipped = 0 AND t.name <> %s"

TABLES = f"""
SELECT v.ci, x.schema_name, x.table_name
FROM (SELECT CASE WHEN N'a' = N'A' THEN 1 ELSE 0 END AS ci) AS v
LEFT JOIN (
    SELECT s.name AS schema_name, t.name AS table_name
    {_USER_TABLES}
    WHERE {_USER_TABLES_WHERE}
) AS x ON 1 = 1
ORDER BY 2, 3
"""
COLUMNS = f"""
SELECT s.name, t.name, c.name, ty.name, c.max_length, c.precision, c.scale, c.is_nullable,
       dc.definition, c.is_identity, cc.definition, cc.is_persisted
{_USER_TABLES}
JOIN sys.columns AS c ON c.object_id = t.object_id
JOIN sys.types AS ty ON ty.user_type_id = c.user_type_id
LEFT JOIN sys.default_constraints AS dc ON dc.object_id = c.default_object_id
LEFT JOIN sys.computed_columns AS cc ON cc.object_id = c.object_id AND cc.column_id = c.column_id
WHERE {_USER_TABLES_WHERE}
ORDER BY s.name, t.name, c.column_id
"""
INDEXES = f"""
SELECT s.name, t.name, i.name, i.is_unique, i.type_desc, i.filter_definition,
       ic.is_included_column, ic.key_ordinal, c.name, ic.is_descending_key
{_USER_TABLES}
JOIN sys.indexes AS i ON i.object_id = t.object_id
JOIN sys.index_columns AS ic ON ic.object_id = i.object_id AND ic.index_id = i.index_id
JOIN sys.columns AS c ON c.object_id = ic.object_id AND c.column_id = ic.column_id
WHERE {_USER_TABLES_WHERE} AND i.type > 0 AND i.is_primary_key = 0 AND i.is_unique_constraint = 0
  AND i.is_hypothetical = 0
ORDER BY s.name, t.name, i.name, ic.is_included_column, ic.key_ordinal, ic.index_column_id
"""
#: Primary keys and unique constraints, foreign keys, checks: one row per column (checks: one row).
CONSTRAINTS = f"""
SELECT s.name, t.name, kc.name, kc.type, ic.key_ordinal, c.name,
       NULL, NULL, NULL, NULL, NULL, NULL
{_USER_TABLES}
JOIN sys.key_constraints AS kc ON kc.parent_object_id = t.object_id
JOIN sys.index_columns AS ic ON ic.object_id = kc.parent_object_id AND ic.index_id = kc.unique_index_id
JOIN sys.columns AS c ON c.object_id = ic.object_id AND c.column_id = ic.column_id
WHERE {_USER_TABLES_WHERE}
UNION ALL
SELECT s.name, t.name, fk.name, 'F', fkc.constraint_column_id, pc.name,
       rs.name, rt.name, rc.name, fk.update_referential_action_desc, fk.delete_referential_action_desc, NULL
{_USER_TABLES}
JOIN sys.foreign_keys AS fk ON fk.parent_object_id = t.object_id
JOIN sys.foreign_key_columns AS fkc ON fkc.constraint_object_id = fk.object_id
JOIN sys.columns AS pc ON pc.object_id = fkc.parent_object_id AND pc.column_id = fkc.parent_column_id
JOIN sys.tables AS rt ON rt.object_id = fk.referenced_object_id
JOIN sys.schemas AS rs ON rs.schema_id = rt.schema_id
JOIN sys.columns AS rc ON rc.object_id = fkc.referenced_object_id AND rc.column_id = fkc.referenced_column_id
WHERE {_USER_TABLES_WHERE}
UNION ALL
SELECT s.name, t.name, ck.name, 'C', 1, NULL, NULL, NULL, NULL, NULL, NULL, ck.definition
{_USER_TABLES}
JOIN sys.check_constraints AS ck ON ck.parent_object_id = t.object_id
WHERE {_USER_TABLES_WHERE}
ORDER BY 1, 2, 3, 5
"""
#: Catalog queries per depth (the README's table).
QUERIES = {
    DriftDepth.TABLES_ONLY: (TABLES,),
    DriftDepth.TABLES_AND_COLUMNS: (TABLES, COLUMNS),
    DriftDepth.FULL: (TABLES, COLUMNS, INDEXES, CONSTRAINTS),
}

_KINDS = {"PK": ConstraintKind.PRIMARY, "UQ": ConstraintKind.UNIQUE, "F": ConstraintKind.FOREIGN}
#: Types whose length is a byte count (``n``-types: two bytes per character); -1 is ``max``.
_LENGTH_TYPES = {"char": 1, "varchar": 1, "binary": 1, "varbinary": 1, "nchar": 2, "nvarchar": 2}
_PRECISION_TYPES = frozenset({"decimal", "numeric"})
_SCALE_TYPES = frozenset({"datetime2", "datetimeoffset", "time"})
#: String literals (kept), ``N`` before a literal and ``[identifier]`` quotes (spelling, removed).
_SPELLING = re.compile(r"'(?:[^']|'')*'|(?<![\w@#$])[Nn](?=')|\[((?:[^\]]|\]\])*)\]")

Row = Sequence[Any]


def qualified(schema: Any, table: Any) -> str:
    return str(table) if schema == DEFAULT_SCHEMA else f"{schema}.{table}"


def unquote(definition: Any) -> str | None:
    """A stored default/check/filter without ``N'...'`` prefixes and ``[...]`` quotes (strings untouched)."""
    if definition is None:
        return None

    def replace(match: re.Match[str]) -> str:
        text = match.group(0)
        if text.startswith("'"):
            return text
        if text.startswith("["):
            return match.group(1).replace("]]", "]")
        return ""  # the N of N'...'

    return _SPELLING.sub(replace, str(definition))


def render_type(name: Any, max_length: Any, precision: Any, scale: Any) -> str:
    """The type as SQL Server spells it, from ``sys.types.name`` and the column's sizes."""
    base = str(name).lower()
    if base in _LENGTH_TYPES:
        length = int(max_length)
        return f"{base}(max)" if length == -1 else f"{base}({length // _LENGTH_TYPES[base]})"
    if base in _PRECISION_TYPES:
        return f"{base}({int(precision)},{int(scale)})"
    if base in _SCALE_TYPES:
        return f"{base}({int(scale)})"
    if base == "float":
        return f"float({int(precision)})"
    return base


def column_default(definition: Any, identity: Any, computed: Any, persisted: Any) -> str | None:
    if computed is not None:
        text = f"computed as ({normalize_expression(unquote(computed))})"
        return text + " persisted" if persisted else text
    if identity:
        return "identity"
    return normalize_default(unquote(definition))


def _fetch(conn: Any, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    cursor = conn.cursor()
    try:
        cursor.execute(sql, params)
        return [tuple(row.values()) if isinstance(row, dict) else tuple(row) for row in cursor.fetchall()]
    finally:
        cursor.close()


def introspect(conn: Any, depth: DriftDepth, *, exclude: str = HISTORY_TABLE) -> Schema:
    """The schema of the SQL Server database behind the DB-API connection ``conn`` at ``depth``."""
    level = DriftDepth(depth)
    queries = QUERIES[level]
    params = (exclude,) * 3  # CONSTRAINTS filters its three parts; the others take the first only
    results = [_fetch(conn, sql, params[: sql.count("%s")]) for sql in queries]
    return decode(level, *results)


def decode(
    depth: DriftDepth,
    tables: Iterable[Row],
    columns: Iterable[Row] = (),
    indexes: Iterable[Row] = (),
    constraints: Iterable[Row] = (),
) -> Schema:
    """The schema model from the rows of :data:`TABLES`, :data:`COLUMNS`, :data:`INDEXES`, :data:`CONSTRAINTS`."""
    rows = list(tables)
    ci = bool(rows and rows[0][0])
    names = [qualified(schema, table) for _, schema, table in rows if table is not None]
    by_table: dict[str, list[Column]] = defaultdict(list)
    if includes(depth, DriftDepth.TABLES_AND_COLUMNS):
        for row in columns:
            schema, table, name, type_name, length, precision, scale, nullable = row[:8]
            by_table[qualified(schema, table)].append(
                Column(
                    str(name),
                    normalize_type(render_type(type_name, length, precision, scale), ENGINE),
                    bool(nullable),
                    column_default(*row[8:12]),
                )
            )
    index_map = _indexes(indexes) if includes(depth, DriftDepth.FULL) else {}
    constraint_map = _constraints(constraints) if includes(depth, DriftDepth.FULL) else {}
    return Schema.build(
        ENGINE,
        depth,
        (
            Table(
                name,
                tuple(by_table.get(name, ())),
                tuple(index_map.get(name, ())),
                tuple(constraint_map.get(name, ())),
            )
            for name in names
        ),
        table_names_ci=ci,
        column_names_ci=ci,
    )


def _grouped(rows: Iterable[Row]) -> dict[tuple[str, str], list[Row]]:
    """Rows by (qualified table, object name), in catalog order."""
    grouped: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for row in rows:
        grouped[(qualified(row[0], row[1]), str(row[2]))].append(row)
    return grouped


def _indexes(rows: Iterable[Row]) -> dict[str, list[Index]]:
    out: dict[str, list[Index]] = defaultdict(list)
    for (table, name), members in _grouped(rows).items():
        keys = [f"{m[8]} desc" if m[9] else str(m[8]) for m in members if not m[6]]
        keys += [f"include {m[8]}" for m in members if m[6]]
        first = members[0]
        predicate = normalize_expression(unquote(first[5])) or None
        out[table].append(Index(name, tuple(keys), bool(first[3]), str(first[4] or "").lower() or None, predicate))
    return out


def _constraints(rows: Iterable[Row]) -> dict[str, list[Constraint]]:
    out: dict[str, list[Constraint]] = defaultdict(list)
    for (table, name), members in _grouped(rows).items():
        out[table].append(_constraint(name, members))
    return out


def _constraint(name: str, members: list[Row]) -> Constraint:
    first = members[0]
    code = str(first[3]).strip().upper()
    if code == "C":
        return Constraint(ConstraintKind.CHECK, name, expression=normalize_expression(unquote(first[11])))
    kind = _KINDS[code]
    columns = tuple(str(m[5]) for m in members)
    if kind is not ConstraintKind.FOREIGN:
        return Constraint(kind, name, columns)
    return Constraint(
        kind,
        name,
        columns,
        ref_table=qualified(first[6], first[7]),
        ref_columns=tuple(str(m[8]) for m in members),
        on_update=normalize_rule(first[9]),
        on_delete=normalize_rule(first[10]),
    )
