"""SQLite introspection into the schema model, with a bounded number of queries.

``PRAGMA table_info(t)`` is one statement per table; the table-valued forms (``pragma_table_info(name)``,
``pragma_index_list``, ``pragma_index_xinfo``, ``pragma_foreign_key_list``) can be joined against
``sqlite_master``, so each depth costs a fixed number of queries however many tables a shard has:
``tables_only`` 1, ``tables_and_columns`` 2, ``full`` 4.

SQLite keeps check constraints only in the ``CREATE TABLE`` text, so they are parsed from it (the
first query already returns it). SQLite compares identifiers case-insensitively: tables, columns and
indexes are folded when compared.
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

ENGINE = "sqlite"

_TABLES = """
SELECT m.name, m.sql FROM sqlite_master AS m
WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND m.name <> ?
ORDER BY m.name
"""
_COLUMNS = """
SELECT m.name, p.cid, p.name, p.type, p."notnull", p.dflt_value, p.pk
FROM sqlite_master AS m JOIN pragma_table_info(m.name) AS p
WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND m.name <> ?
ORDER BY m.name, p.cid
"""
_INDEXES = """
SELECT m.name, il.name, il."unique", il.origin, il.partial, ix.seqno, ix.name, ix."desc", im.sql
FROM sqlite_master AS m
JOIN pragma_index_list(m.name) AS il
JOIN pragma_index_xinfo(il.name) AS ix
LEFT JOIN sqlite_master AS im ON im.type = 'index' AND im.name = il.name
WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND m.name <> ? AND ix.key = 1
ORDER BY m.name, il.name, ix.seqno
"""
_FOREIGN_KEYS = """
SELECT m.name, fk.id, fk.seq, fk."table", fk."from", fk."to", fk.on_update, fk.on_delete
FROM sqlite_master AS m JOIN pragma_foreign_key_list(m.name) AS fk
WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND m.name <> ?
ORDER BY m.name, fk.id, fk.seq
"""


def _fetch(conn: Any, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    cursor = conn.cursor()
    try:
        cursor.execute(sql, params)
        return [tuple(row) for row in cursor.fetchall()]
    finally:
        cursor.close()


def introspect(conn: Any, depth: DriftDepth, *, exclude: str = HISTORY_TABLE) -> Schema:
    """The schema of the SQLite database behind the DB-API connection ``conn`` at ``depth``."""
    tables = _fetch(conn, _TABLES, (exclude,))
    sql_by_table = {name: sql or "" for name, sql in tables}
    columns: dict[str, list[Column]] = defaultdict(list)
    primary: dict[str, list[tuple[int, str]]] = defaultdict(list)
    if includes(depth, DriftDepth.TABLES_AND_COLUMNS):
        for table, _cid, name, type_, notnull, default, pk in _fetch(conn, _COLUMNS, (exclude,)):
            columns[table].append(Column(name, normalize_type(type_, ENGINE), not notnull, normalize_default(default)))
            if pk:
                primary[table].append((pk, name))
    indexes: dict[str, list[Index]] = defaultdict(list)
    constraints: dict[str, list[Constraint]] = defaultdict(list)
    if includes(depth, DriftDepth.FULL):
        for table, pk_columns in primary.items():
            constraints[table].append(
                Constraint(ConstraintKind.PRIMARY, None, tuple(name for _, name in sorted(pk_columns)))
            )
        _read_indexes(_fetch(conn, _INDEXES, (exclude,)), indexes, constraints)
        pk_of = {table: tuple(name for _, name in sorted(cols)) for table, cols in primary.items()}
        _read_foreign_keys(_fetch(conn, _FOREIGN_KEYS, (exclude,)), pk_of, constraints)
        for table, sql in sql_by_table.items():
            for name, expression in check_constraints(sql):
                constraints[table].append(
                    Constraint(ConstraintKind.CHECK, name, expression=normalize_expression(expression))
                )
    return Schema.build(
        ENGINE,
        depth,
        (
            Table(name, tuple(columns.get(name, ())), tuple(indexes.get(name, ())), tuple(constraints.get(name, ())))
            for name in sql_by_table
        ),
        table_names_ci=True,
        column_names_ci=True,
    )


def _read_indexes(
    rows: list[tuple[Any, ...]], indexes: dict[str, list[Index]], constraints: dict[str, list[Constraint]]
) -> None:
    grouped: dict[tuple[str, str], list[tuple[Any, ...]]] = defaultdict(list)
    for row in rows:
        grouped[(row[0], row[1])].append(row)
    for (table, index_name), members in grouped.items():
        _, _, unique, origin, partial, _, _, _, sql = members[0]
        expressions = index_expressions(sql or "")
        names = []
        for position, (*_, seqno, column, desc, _sql) in enumerate(members):
            name = column if column is not None else _expression_at(expressions, seqno, position)
            names.append(f"{name} desc" if desc else name)
        if origin == "pk":
            continue  # the primary key is a constraint (from table_info), not an index
        if origin == "u":  # UNIQUE in CREATE TABLE: an unnamed constraint backed by sqlite_autoindex_*
            constraints[table].append(Constraint(ConstraintKind.UNIQUE, None, tuple(names)))
            continue
        predicate = normalize_expression(index_predicate(sql or "")) if partial else None
        indexes[table].append(Index(index_name, tuple(names), bool(unique), None, predicate or None))


def _expression_at(expressions: list[str], seqno: int, position: int) -> str:
    index = seqno if seqno < len(expressions) else position
    return normalize_expression(expressions[index]) if index < len(expressions) else "<expression>"


def _read_foreign_keys(
    rows: list[tuple[Any, ...]], pk_of: dict[str, tuple[str, ...]], constraints: dict[str, list[Constraint]]
) -> None:
    grouped: dict[tuple[str, int], list[tuple[Any, ...]]] = defaultdict(list)
    for row in rows:
        grouped[(row[0], row[1])].append(row)
    folded_pk = {name.casefold(): cols for name, cols in pk_of.items()}
    for (table, _id), members in grouped.items():
        ref_table = members[0][3]
        from_columns = tuple(row[4] for row in members)
        to_columns = tuple(row[5] for row in members)
        if any(c is None for c in to_columns):  # REFERENCES t without columns: t's primary key
            to_columns = folded_pk.get(str(ref_table).casefold(), ())
        constraints[table].append(
            Constraint(
                ConstraintKind.FOREIGN,
                None,
                from_columns,
                ref_table=ref_table,
                ref_columns=tuple(to_columns),
                on_update=normalize_rule(members[0][6]),
                on_delete=normalize_rule(members[0][7]),
            )
        )


# -- reading SQLite's stored DDL ------------------------------------------------------------------------


#: opening quote -> closing quote of SQLite's string literals (') and quoted identifiers (" ` [ ]).
_QUOTES = {"'": "'", '"': '"', "`": "`", "[": "]"}


def _tokens(sql: str) -> list[tuple[str, int, int]]:
    """(kind, start, end) tokens: ``word``, ``quoted`` identifier, ``string``, ``(``, ``)``, ``,``, ``other``.

    Comments are dropped. Enough of SQLite's lexer to find clauses without being fooled by quotes.
    """
    tokens: list[tuple[str, int, int]] = []
    i, n = 0, len(sql)
    while i < n:
        if sql[i].isspace():
            i += 1
            continue
        after_comment = _comment_end(sql, i)
        if after_comment is not None:
            i = after_comment
            continue
        kind, end = _token_at(sql, i)
        tokens.append((kind, i, end))
        i = end
    return tokens


def _comment_end(sql: str, i: int) -> int | None:
    """Where the ``--`` or ``/* */`` comment starting at ``i`` ends (None: no comment starts there)."""
    if sql.startswith("--", i):
        end = sql.find("\n", i)
        return len(sql) if end < 0 else end + 1
    if sql.startswith("/*", i):
        end = sql.find("*/", i + 2)
        return len(sql) if end < 0 else end + 2
    return None


def _token_at(sql: str, i: int) -> tuple[str, int]:
    """Kind and end of the token starting at ``i`` (not a space, not a comment)."""
    ch = sql[i]
    if ch in _QUOTES:
        return ("string" if ch == "'" else "quoted"), _quoted_end(sql, i)
    if ch.isalnum() or ch == "_":
        j = i
        while j < len(sql) and (sql[j].isalnum() or sql[j] in "_$"):
            j += 1
        return "word", j
    if ch in "(),":
        return ch, i + 1
    return "other", i + 1


def _quoted_end(sql: str, i: int) -> int:
    """End of the quoted token opening at ``i``: a doubled quote is an escaped one (not for ``[...]``);
    an unterminated one runs to the end of the text."""
    close = _QUOTES[sql[i]]
    j, n = i + 1, len(sql)
    while j < n:
        if sql[j] != close:
            j += 1
        elif close != "]" and j + 1 < n and sql[j + 1] == close:
            j += 2
        else:
            return j + 1
    return n


def _closing(tokens: list[tuple[str, int, int]], open_index: int) -> int:
    depth = 0
    for index in range(open_index, len(tokens)):
        kind = tokens[index][0]
        if kind == "(":
            depth += 1
        elif kind == ")":
            depth -= 1
            if depth == 0:
                return index
    return len(tokens) - 1


def _word(sql: str, token: tuple[str, int, int]) -> str:
    kind, start, end = token
    text = sql[start:end]
    if kind == "quoted":
        return text[1:-1]
    return text.upper() if kind == "word" else text


def check_constraints(sql: str) -> list[tuple[str | None, str]]:
    """``(name, expression)`` of every CHECK clause of a CREATE TABLE statement (column or table level)."""
    tokens = _tokens(sql)
    found: list[tuple[str | None, str]] = []
    for index, token in enumerate(tokens):
        if token[0] != "word" or _word(sql, token) != "CHECK":
            continue
        if index + 1 >= len(tokens) or tokens[index + 1][0] != "(":
            continue
        close = _closing(tokens, index + 1)
        expression = sql[tokens[index + 1][2] : tokens[close][1]]
        name = None
        if index >= 2 and tokens[index - 2][0] == "word" and _word(sql, tokens[index - 2]) == "CONSTRAINT":
            name = (
                _word(sql, tokens[index - 1])
                if tokens[index - 1][0] == "quoted"
                else sql[tokens[index - 1][1] : tokens[index - 1][2]]
            )
        found.append((name, expression))
    return found


def index_expressions(sql: str) -> list[str]:
    """The key expressions of ``CREATE INDEX name ON table (a, lower(b) DESC, ...)``, in order."""
    tokens = _tokens(sql)
    for index, token in enumerate(tokens):
        if token[0] == "word" and _word(sql, token) == "ON":
            opening = next((i for i in range(index + 1, len(tokens)) if tokens[i][0] == "("), None)
            if opening is None:
                return []
            close = _closing(tokens, opening)
            parts: list[str] = []
            start = tokens[opening][2]
            depth = 0
            for i in range(opening + 1, close):
                kind = tokens[i][0]
                depth += 1 if kind == "(" else -1 if kind == ")" else 0
                if kind == "," and depth == 0:
                    parts.append(sql[start : tokens[i][1]])
                    start = tokens[i][2]
            parts.append(sql[start : tokens[close][1]])
            return [_strip_order(p.strip()) for p in parts]
    return []


def _strip_order(expression: str) -> str:
    words = expression.rsplit(None, 1)
    if len(words) == 2 and words[1].upper() in ("ASC", "DESC"):
        return words[0]
    return expression


def index_predicate(sql: str) -> str:
    """The ``WHERE`` condition of a partial index ("" when there is none)."""
    tokens = _tokens(sql)
    depth = 0
    for token in tokens:
        if token[0] == "(":
            depth += 1
        elif token[0] == ")":
            depth -= 1
        elif depth == 0 and token[0] == "word" and _word(sql, token) == "WHERE":
            return sql[token[2] :].strip().rstrip(";")
    return ""
