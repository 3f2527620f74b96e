"""MySQL / MariaDB introspection into the schema model, from ``information_schema`` of the connection's
database, a bounded number of queries per shard: ``tables_only`` 1, ``tables_and_columns`` 2, ``full`` 5
(tables, columns, indexes, primary/foreign keys, checks).

What differs from the other engines, and why:

- The first query also returns ``@@lower_case_table_names`` and ``VERSION()``, so ``tables_only`` stays
  one query: with ``lower_case_table_names`` 1 or 2 table names compare case-insensitively, with 0
  (the Linux default) case-sensitively. Column and index names always compare case-insensitively.
- A unique constraint and a unique index are the same object in MySQL, so every non-primary key is
  modeled as an index (``unique`` or not); primary and foreign keys and checks are constraints.
- ``COLUMN_DEFAULT`` differs by server: MariaDB returns SQL literals (``'x'``, ``NULL`` for none);
  MySQL 8 returns raw values, so MySQL defaults of character/temporal columns are quoted here.
- Display widths (``int(11)``) are noise, but ``tinyint(1)`` is how ``BOOLEAN`` is stored.
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

ENGINE = "mysql"

_TABLES = """
SELECT v.lctn, v.ver, v.db, t.TABLE_NAME
FROM (SELECT @@lower_case_table_names AS lctn, VERSION() AS ver, DATABASE() AS db) AS v
LEFT JOIN information_schema.TABLES AS t
  ON t.TABLE_SCHEMA = v.db AND t.TABLE_TYPE = 'BASE TABLE' AND t.TABLE_NAME <> %s
ORDER BY t.TABLE_NAME
"""
_COLUMNS = """
SELECT TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE, COLUMN_DEFAULT, EXTRA, GENERATION_EXPRESSION
FROM information_schema.COLUMNS
WHERE TABLE_SCHEMA = DATABASE()
ORDER BY TABLE_NAME, ORDINAL_POSITION
"""
_INDEXES = """
SELECT TABLE_NAME, INDEX_NAME, NON_UNIQUE, SEQ_IN_INDEX, COLUMN_NAME, SUB_PART, INDEX_TYPE, COLLATION
FROM information_schema.STATISTICS
WHERE TABLE_SCHEMA = DATABASE() AND INDEX_NAME <> 'PRIMARY'
ORDER BY TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX
"""
_KEYS = """
SELECT k.TABLE_NAME, k.CONSTRAINT_NAME, tc.CONSTRAINT_TYPE, k.COLUMN_NAME,
       k.REFERENCED_TABLE_SCHEMA, k.REFERENCED_TABLE_NAME, k.REFERENCED_COLUMN_NAME,
       rc.UPDATE_RULE, rc.DELETE_RULE
FROM information_schema.TABLE_CONSTRAINTS AS tc
JOIN information_schema.KEY_COLUMN_USAGE AS k
  ON k.CONSTRAINT_SCHEMA = tc.CONSTRAINT_SCHEMA AND k.TABLE_NAME = tc.TABLE_NAME
 AND k.CONSTRAINT_NAME = tc.CONSTRAINT_NAME
LEFT JOIN information_schema.REFERENTIAL_CONSTRAINTS AS rc
  ON rc.CONSTRAINT_SCHEMA = tc.CONSTRAINT_SCHEMA AND rc.TABLE_NAME = tc.TABLE_NAME
 AND rc.CONSTRAINT_NAME = tc.CONSTRAINT_NAME
WHERE tc.CONSTRAINT_SCHEMA = DATABASE() AND tc.CONSTRAINT_TYPE IN ('PRIMARY KEY', 'FOREIGN KEY')
ORDER BY k.TABLE_NAME, k.CONSTRAINT_NAME, k.ORDINAL_POSITION
"""
#: MariaDB names column-level checks after the column, so names repeat across tables: it keeps
#: TABLE_NAME in CHECK_CONSTRAINTS. MySQL (8.0.16+) does not, and its names are schema-unique.
_CHECKS_MARIADB = """
SELECT TABLE_NAME, CONSTRAINT_NAME, CHECK_CLAUSE
FROM information_schema.CHECK_CONSTRAINTS
WHERE CONSTRAINT_SCHEMA = DATABASE()
ORDER BY TABLE_NAME, CONSTRAINT_NAME
"""
_CHECKS_MYSQL = """
SELECT tc.TABLE_NAME, cc.CONSTRAINT_NAME, cc.CHECK_CLAUSE
FROM information_schema.TABLE_CONSTRAINTS AS tc
JOIN information_schema.CHECK_CONSTRAINTS AS cc
  ON cc.CONSTRAINT_SCHEMA = tc.CONSTRAINT_SCHEMA AND cc.CONSTRAINT_NAME = tc.CONSTRAINT_NAME
WHERE tc.CONSTRAINT_SCHEMA = DATABASE() AND tc.CONSTRAINT_TYPE = 'CHECK'
ORDER BY tc.TABLE_NAME, cc.CONSTRAINT_NAME
"""
_QUOTED_TYPES = (
    "char",
    "varchar",
    "text",
    "tinytext",
    "mediumtext",
    "longtext",
    "enum",
    "set",
    "date",
    "time",
    "datetime",
    "timestamp",
    "year",
    "binary",
    "varbinary",
    "blob",
    "json",
)


def _fetch(conn: Any, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    cursor = conn.cursor()
    try:
        cursor.execute(sql, params or None)
        return [tuple(row.values()) if isinstance(row, dict) else tuple(row) for row in cursor.fetchall()]
    finally:
        cursor.close()


def _text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes | bytearray) else value


def _version_tuple(version: str) -> tuple[int, ...]:
    numbers = []
    for part in version.split("-")[0].split(".")[:3]:
        digits = "".join(ch for ch in part if ch.isdigit())
        numbers.append(int(digits or 0))
    return tuple(numbers)


def _default(raw: Any, column_type: str, extra: str, generation: Any, mariadb: bool) -> str | None:
    extra = (extra or "").lower()
    if generation:
        kind = "stored" if "stored" in extra or "persistent" in extra else "virtual"
        return f"generated always as ({normalize_expression(_text(generation))}) {kind}"
    value = _text(raw)
    if value is not None and not mariadb and "default_generated" not in extra:
        base = column_type.split("(")[0].split()[0].lower()
        if base in _QUOTED_TYPES:
            value = "'" + str(value).replace("'", "''") + "'"
    if mariadb and value == "NULL":  # MariaDB's way of saying "no default" for a nullable column
        value = None
    default = normalize_default(value)
    if "auto_increment" in extra:
        default = "auto_increment"
    if "on update" in extra:
        clause = extra[extra.index("on update") :].split(" ", 2)[-1]
        default = f"{default or 'none'} on update {normalize_expression(clause)}"
    return default


def introspect(conn: Any, depth: DriftDepth, *, exclude: str = HISTORY_TABLE) -> Schema:
    """The schema of the connection's MySQL/MariaDB database behind the DB-API ``conn`` at ``depth``."""
    rows = _fetch(conn, _TABLES, (exclude,))
    lctn, version, database = (int(rows[0][0] or 0), str(_text(rows[0][1])), rows[0][2]) if rows else (0, "", None)
    if database is None:
        raise ValueError("the connection names no database (set the Airflow connection's schema)")
    mariadb = "mariadb" in version.lower()
    names = [str(_text(row[3])) for row in rows if row[3] is not None]
    known = {name.casefold() if lctn else name for name in names}

    def ours(table: Any) -> str | None:
        name = str(_text(table))
        return name if (name.casefold() if lctn else name) in known else None

    columns: dict[str, list[Column]] = defaultdict(list)
    indexes: dict[str, list[Index]] = defaultdict(list)
    constraints: dict[str, list[Constraint]] = defaultdict(list)
    if includes(depth, DriftDepth.TABLES_AND_COLUMNS):
        for table, name, type_, nullable, default, extra, generation in _fetch(conn, _COLUMNS):
            owner = ours(table)
            if owner is None:  # a view's columns
                continue
            type_text = str(_text(type_))
            columns[owner].append(
                Column(
                    str(_text(name)),
                    normalize_type(type_text, ENGINE),
                    str(_text(nullable)).upper() == "YES",
                    _default(default, type_text, str(_text(extra) or ""), generation, mariadb),
                )
            )
    if includes(depth, DriftDepth.FULL):
        _read_indexes(_fetch(conn, _INDEXES), ours, indexes)
        _read_keys(_fetch(conn, _KEYS), ours, constraints)
        checks = _CHECKS_MARIADB if mariadb else _CHECKS_MYSQL if _version_tuple(version) >= (8, 0, 16) else None
        if checks is not None:
            for table, name, clause in _fetch(conn, checks):
                owner = ours(table)
                if owner is not None:
                    constraints[owner].append(
                        Constraint(
                            ConstraintKind.CHECK, str(_text(name)), expression=normalize_expression(_text(clause))
                        )
                    )
    return Schema.build(
        ENGINE,
        depth,
        (
            Table(name, tuple(columns.get(name, ())), tuple(indexes.get(name, ())), tuple(constraints.get(name, ())))
            for name in names
        ),
        table_names_ci=lctn != 0,
        column_names_ci=True,
    )


def _read_indexes(rows: list[tuple[Any, ...]], ours: Any, indexes: dict[str, list[Index]]) -> None:
    grouped: dict[tuple[str, str], list[tuple[Any, ...]]] = defaultdict(list)
    for row in rows:
        owner = ours(row[0])
        if owner is not None:
            grouped[(owner, str(_text(row[1])))].append(row)
    for (table, name), members in grouped.items():
        keys = []
        for row in members:
            column, sub_part, collation = _text(row[4]), row[5], _text(row[7])
            key = str(column) if column is not None else "<expression>"
            if sub_part:
                key += f"({int(sub_part)})"
            if collation == "D":
                key += " desc"
            keys.append(key)
        non_unique = int(members[0][2])
        method = str(_text(members[0][6]) or "").lower() or None
        indexes[table].append(Index(name, tuple(keys), non_unique == 0, method, None))


def _read_keys(rows: list[tuple[Any, ...]], ours: Any, constraints: dict[str, list[Constraint]]) -> None:
    grouped: dict[tuple[str, str], list[tuple[Any, ...]]] = defaultdict(list)
    for row in rows:
        owner = ours(row[0])
        if owner is not None:
            grouped[(owner, str(_text(row[1])))].append(row)
    for (table, name), members in grouped.items():
        kind_text = str(_text(members[0][2]))
        cols = tuple(str(_text(row[3])) for row in members)
        if kind_text == "PRIMARY KEY":
            constraints[table].append(Constraint(ConstraintKind.PRIMARY, name, cols))
            continue
        # a cross-database reference keeps the bare table name: the same DDL gives the same name
        ref_table = _text(members[0][5])
        constraints[table].append(
            Constraint(
                ConstraintKind.FOREIGN,
                name,
                cols,
                ref_table=str(ref_table),
                ref_columns=tuple(str(_text(row[6])) for row in members),
                on_update=normalize_rule(_text(members[0][7])),
                on_delete=normalize_rule(_text(members[0][8])),
            )
        )
