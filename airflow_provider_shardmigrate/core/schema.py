"""The schema model every engine's introspection produces, and the normalizers that make it comparable.

Drift detection is only as good as its normalization: two shards built from the same DDL must read the
same even when the DDL was spelled differently (``int4`` vs ``integer``, ``varchar(20)`` vs
``character varying(20)``, ``DEFAULT 'x'`` vs ``DEFAULT 'x'::character varying``, MariaDB's ``int(11)``
display width). So types, defaults and check expressions are normalized here, once, for every engine,
and the comparison (core/drift.py) only ever compares normalized values.

Names keep the spelling the database stores (that is what a human looks for), and each schema records
whether its engine compares table and column names case-insensitively; the comparison folds accordingly.
Pure: no database, no Airflow.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from airflow_provider_shardmigrate.core.topology import DriftDepth

#: Depths in increasing order of what they compare.
DEPTH_ORDER = (DriftDepth.TABLES_ONLY, DriftDepth.TABLES_AND_COLUMNS, DriftDepth.FULL)


def includes(depth: DriftDepth, level: DriftDepth) -> bool:
    """Whether introspection/comparison at ``depth`` covers what ``level`` adds."""
    return DEPTH_ORDER.index(depth) >= DEPTH_ORDER.index(level)


# -- identifiers ---------------------------------------------------------------------------------------


def identity(name: str) -> str:
    return name


def casefold(name: str) -> str:
    return name.casefold()


# -- types ---------------------------------------------------------------------------------------------

#: Spelling -> canonical name. Multi-word spellings are matched after whitespace is collapsed.
_TYPE_ALIASES: dict[str, str] = {
    "int": "integer",
    "int4": "integer",
    "integer": "integer",
    "mediumint": "mediumint",
    "int2": "smallint",
    "smallint": "smallint",
    "tinyint": "tinyint",
    "int8": "bigint",
    "bigint": "bigint",
    "serial": "integer",
    "serial4": "integer",
    "bigserial": "bigint",
    "serial8": "bigint",
    "smallserial": "smallint",
    "serial2": "smallint",
    "bool": "boolean",
    "boolean": "boolean",
    "float8": "double",
    "double": "double",
    "double precision": "double",
    "float4": "real",
    "real": "real",
    "varchar": "varchar",
    "character varying": "varchar",
    "nvarchar": "varchar",
    "char": "char",
    "character": "char",
    "bpchar": "char",
    "nchar": "char",
    "decimal": "numeric",
    "numeric": "numeric",
    "dec": "numeric",
    "timestamptz": "timestamptz",
    "timestamp with time zone": "timestamptz",
    "timestamp": "timestamp",
    "timestamp without time zone": "timestamp",
    "timetz": "timetz",
    "time with time zone": "timetz",
    "time": "time",
    "time without time zone": "time",
    "varbit": "varbit",
    "bit varying": "varbit",
    "bytea": "bytea",
    "blob": "blob",
    "text": "text",
    "clob": "text",
}
#: SQL Server (engine ``mssql``): its ``n`` types hold Unicode and differ from the plain ones, its ``timestamp``
#: is a row version (not a point in time), and ISO spellings fold into the names its catalog reports.
_MSSQL_TYPE_ALIASES: dict[str, str] = {
    **_TYPE_ALIASES,
    "nvarchar": "nvarchar",
    "national character varying": "nvarchar",
    "national char varying": "nvarchar",
    "nchar varying": "nvarchar",
    "nchar": "nchar",
    "national character": "nchar",
    "national char": "nchar",
    "ntext": "ntext",
    "national text": "ntext",
    "char varying": "varchar",
    "binary varying": "varbinary",
    "timestamp": "rowversion",
    "rowversion": "rowversion",
}
#: SQL Server's sizes when DDL gives none (``datetime2`` is ``datetime2(7)``, ``decimal`` is ``decimal(18,0)``).
_MSSQL_DEFAULT_ARGS: dict[str, list[str]] = {
    "datetime2": ["7"],
    "datetimeoffset": ["7"],
    "time": ["7"],
    "numeric": ["18", "0"],
    "varchar": ["1"],
    "nvarchar": ["1"],
    "char": ["1"],
    "nchar": ["1"],
    "binary": ["1"],
    "varbinary": ["1"],
}
_INTEGER_TYPES = {"integer", "smallint", "bigint", "tinyint", "mediumint"}
_TYPE_RE = re.compile(r"^(?P<base>[^(]+?)\s*(?:\((?P<args>[^)]*)\)\s*(?P<rest>[^()]*))?$")


def normalize_type(raw: str | None, engine: str = "") -> str:
    """A canonical spelling of a column type that keeps what matters (length, precision, scale,
    ``unsigned``, array-ness) and folds engine aliases.

    ``engine`` matters where a spelling means different things: MySQL's ``float`` is 4 bytes (``real``)
    where PostgreSQL's is 8 (``double``); MySQL's ``tinyint(1)`` is how ``BOOLEAN`` is stored, and other
    integer display widths (``int(11)``) carry no meaning at all.
    """
    # lower-case outside quotes only: enum('A') and enum('a') are different types
    text = "".join(p if is_string else " ".join(p.lower().split()) for is_string, p in _segments((raw or "").strip()))
    text = text.strip()
    if not text:
        return ""
    array = ""
    while text.endswith("[]"):
        array += "[]"
        text = text[:-2].rstrip()
    match = _TYPE_RE.match(text)
    if match is None:  # nested parentheses (enum values with parens, ...): keep as written
        return text + array
    base = match["base"].strip()
    args = [a.strip() for a in match["args"].split(",")] if match["args"] is not None else []
    rest = (match["rest"] or "").strip()
    name, suffix = _canonical_name(base, rest, _MSSQL_TYPE_ALIASES if engine == "mssql" else _TYPE_ALIASES)
    if engine == "mssql" and not args:
        args = list(_MSSQL_DEFAULT_ARGS.get(name, ()))
    name, args = _engine_rules(name, args, engine)
    rendered = name + ("(" + ",".join(args) + ")" if args else "")
    if suffix:
        rendered += " " + suffix
    return rendered + array


def _canonical_name(base: str, rest: str, aliases: Mapping[str, str] = _TYPE_ALIASES) -> tuple[str, str]:
    """(canonical type name, trailing modifiers) for ``base(args) rest``."""
    words = f"{base} {rest}".strip()
    if words in aliases:  # "timestamp(6) with time zone", "double precision", ...
        return aliases[words], ""
    tokens = base.split()  # the longest known head: "int unsigned", "double precision zerofill"
    for cut in range(len(tokens), 0, -1):
        head = " ".join(tokens[:cut])
        if head in aliases:
            return aliases[head], " ".join([*tokens[cut:], rest]).strip()
    return base, rest


def _engine_rules(name: str, args: list[str], engine: str) -> tuple[str, list[str]]:
    """Where a spelling's meaning depends on the engine (float sizes, integer display widths)."""
    if name == "float":
        if engine == "mysql":  # MySQL reports 8-byte floats as "double": a "float" is 4 bytes
            return "real", args
        # SQL standard float(p): p <= 24 is real, else double precision
        return ("real" if args and args[0].isdigit() and int(args[0]) <= 24 else "double"), []
    if name in _INTEGER_TYPES:
        if engine == "mysql" and name == "tinyint" and args == ["1"]:
            return "boolean", []
        return name, []  # display width only
    if name == "numeric" and len(args) == 1 and args[0].isdigit():
        return name, [args[0], "0"]
    return name, args


# -- expressions and defaults -----------------------------------------------------------------------------

_CAST_TYPE = (
    r"(?:character varying|double precision|timestamp with(?:out)? time zone|time with(?:out)? time zone|"
    r"bit varying|\"?[a-z_][a-z0-9_]*\"?(?:\.\"?[a-z_][a-z0-9_]*\"?)?)"
)
_CAST_RE = re.compile(r"::\s*" + _CAST_TYPE + r"(?:\s*\([0-9,\s]*\))?(?:\[\])*", re.IGNORECASE)
_SYNONYMS = {
    "now()": "current_timestamp",
    "current_timestamp()": "current_timestamp",
    "localtimestamp()": "localtimestamp",
    "curdate()": "current_date",
    "current_date()": "current_date",
    "curtime()": "current_time",
    "current_time()": "current_time",
    "datetime('now')": "current_timestamp",
}
#: A synonym only where it stands alone (``snow()`` is not ``now()``).
_SYNONYM_RE = re.compile(r"(?<![\w.])(?:" + "|".join(re.escape(k) for k in _SYNONYMS) + r")")
_ATOM_PARENS = re.compile(r"(?<![\w)\]])\((-?[\w.]+|'(?:[^']|'')*')\)")
_NUMBER = re.compile(r"^'(-?\d+(?:\.\d+)?)'$")


def _segments(text: str) -> list[tuple[bool, str]]:
    """Split ``text`` into (is_string_literal, piece); identifier quotes are removed from code pieces."""
    pieces: list[tuple[bool, str]] = []
    i, start, n = 0, 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "'":
            if i > start:
                pieces.append((False, text[start:i]))
            j = i + 1
            while j < n:
                if text[j] == "'":
                    if j + 1 < n and text[j + 1] == "'":
                        j += 2
                        continue
                    break
                if text[j] == "\\" and j + 1 < n:  # MySQL backslash escapes
                    j += 2
                    continue
                j += 1
            pieces.append((True, text[i : j + 1]))
            i = start = j + 1
            continue
        i += 1
    if start < n:
        pieces.append((False, text[start:]))
    return pieces


def _strip_outer_parens(text: str) -> str:
    while text.startswith("(") and text.endswith(")"):
        depth = 0
        in_string = False
        balanced_outer = True
        for index, ch in enumerate(text):
            if ch == "'":
                in_string = not in_string
            elif not in_string:
                if ch == "(":
                    depth += 1
                elif ch == ")":
                    depth -= 1
                    if depth == 0 and index != len(text) - 1:
                        balanced_outer = False
                        break
        if not balanced_outer:
            break
        text = text[1:-1].strip()
    return text


def normalize_expression(raw: str | None) -> str:
    """A canonical spelling of an SQL expression (check constraints, index predicates, defaults).

    Case and whitespace outside string literals, identifier quotes, PostgreSQL's deparser casts
    (``(0)::numeric``) and redundant parentheses are all things databases add or drop on their own,
    so none of them may count as drift. String literals are kept exactly.
    """
    if raw is None:
        return ""
    text = raw.strip()
    if text[:5].lower() == "check":
        text = text[5:].strip()
    code_parts: list[str] = []
    for is_string, piece in _segments(text):
        if is_string:
            code_parts.append(piece)
            continue
        piece = _CAST_RE.sub("", piece)
        piece = piece.replace("`", "").replace('"', "")
        piece = " ".join(piece.lower().split())
        piece = re.sub(r"\s*([^\w\s.'])\s*", r"\1", piece)
        code_parts.append(piece)
    text = "".join(code_parts)
    # a cast directly after a string literal was split off with the literal: strip it once more
    text = _CAST_RE.sub("", text)
    previous = None
    while previous != text:
        previous = text
        text = _ATOM_PARENS.sub(r"\1", text)
        text = _strip_outer_parens(text)
    return _SYNONYM_RE.sub(lambda match: _SYNONYMS[match.group(0)], text)


def normalize_default(raw: str | None) -> str | None:
    """A canonical column default; ``None`` for no default (an explicit ``DEFAULT NULL`` is no default)."""
    if raw is None:
        return None
    text = normalize_expression(raw)
    if text in ("", "null"):
        return None
    number = _NUMBER.match(text)
    if number:  # '0' and 0 are the same default for a numeric column
        return number.group(1)
    return text


# -- the model ------------------------------------------------------------------------------------------


class ConstraintKind(StrEnum):
    PRIMARY = "primary"
    UNIQUE = "unique"
    FOREIGN = "foreign"
    CHECK = "check"


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    nullable: bool = True
    default: str | None = None

    def describe(self) -> str:
        text = f"{self.type}{'' if self.nullable else ' not null'}"
        return f"{text} default {self.default}" if self.default is not None else text

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "nullable": self.nullable, "default": self.default}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Column:
        return cls(str(data["name"]), str(data["type"]), bool(data.get("nullable", True)), data.get("default"))


@dataclass(frozen=True)
class Index:
    name: str
    columns: tuple[str, ...]
    unique: bool = False
    method: str | None = None  # btree, hash, gin, fulltext ... (None: the engine has only one kind)
    predicate: str | None = None  # partial index condition, normalized

    def describe(self) -> str:
        text = f"{'unique ' if self.unique else ''}({', '.join(self.columns)})"
        if self.method and self.method != "btree":
            text += f" using {self.method}"
        return f"{text} where {self.predicate}" if self.predicate else text

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "columns": list(self.columns),
            "unique": self.unique,
            "method": self.method,
            "predicate": self.predicate,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Index:
        return cls(
            str(data["name"]),
            tuple(data.get("columns", ())),
            bool(data.get("unique", False)),
            data.get("method"),
            data.get("predicate"),
        )


_RULES = {"a": "no action", "r": "restrict", "c": "cascade", "n": "set null", "d": "set default"}


def normalize_rule(raw: str | None) -> str:
    """``ON DELETE``/``ON UPDATE`` action; PostgreSQL's one-letter codes and every engine's spelling."""
    if raw is None:
        return "no action"
    text = " ".join(raw.strip().lower().replace("_", " ").split())
    return _RULES.get(text, text) or "no action"


@dataclass(frozen=True)
class Constraint:
    kind: ConstraintKind
    name: str | None = None
    columns: tuple[str, ...] = ()
    ref_table: str | None = None
    ref_columns: tuple[str, ...] = ()
    on_update: str | None = None
    on_delete: str | None = None
    expression: str | None = None  # check constraints, normalized

    def key(self, fold: Callable[[str], str] = identity, fold_table: Callable[[str], str] = identity) -> str:
        """What identifies the constraint across shards.

        Not the name: SQLite does not name constraints, and engines invent names for unnamed ones
        (``orders_ibfk_1``, ``CONSTRAINT_1``), so the same DDL run twice may name them differently.
        """
        columns = ", ".join(fold(c) for c in self.columns)
        if self.kind is ConstraintKind.PRIMARY:
            return "primary key"
        if self.kind is ConstraintKind.UNIQUE:
            return f"unique ({columns})"
        if self.kind is ConstraintKind.FOREIGN:
            return f"foreign key ({columns})"
        return f"check ({self.expression})"

    def describe(self) -> str:
        columns = ", ".join(self.columns)
        if self.kind is ConstraintKind.PRIMARY:
            return f"primary key ({columns})"
        if self.kind is ConstraintKind.UNIQUE:
            return f"unique ({columns})"
        if self.kind is ConstraintKind.FOREIGN:
            text = f"foreign key ({columns}) references {self.ref_table} ({', '.join(self.ref_columns)})"
            if self.on_delete and self.on_delete != "no action":
                text += f" on delete {self.on_delete}"
            if self.on_update and self.on_update != "no action":
                text += f" on update {self.on_update}"
            return text
        return f"check ({self.expression})"

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"kind": self.kind.value, "name": self.name, "columns": list(self.columns)}
        if self.kind is ConstraintKind.FOREIGN:
            data.update(
                ref_table=self.ref_table,
                ref_columns=list(self.ref_columns),
                on_update=self.on_update,
                on_delete=self.on_delete,
            )
        if self.kind is ConstraintKind.CHECK:
            data["expression"] = self.expression
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Constraint:
        return cls(
            kind=ConstraintKind(data["kind"]),
            name=data.get("name"),
            columns=tuple(data.get("columns", ())),
            ref_table=data.get("ref_table"),
            ref_columns=tuple(data.get("ref_columns", ())),
            on_update=data.get("on_update"),
            on_delete=data.get("on_delete"),
            expression=data.get("expression"),
        )


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...] = ()
    indexes: tuple[Index, ...] = ()
    constraints: tuple[Constraint, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "columns": [c.to_dict() for c in self.columns],
            "indexes": [i.to_dict() for i in self.indexes],
            "constraints": [c.to_dict() for c in self.constraints],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Table:
        return cls(
            name=str(data["name"]),
            columns=tuple(Column.from_dict(c) for c in data.get("columns", ())),
            indexes=tuple(Index.from_dict(i) for i in data.get("indexes", ())),
            constraints=tuple(Constraint.from_dict(c) for c in data.get("constraints", ())),
        )


@dataclass(frozen=True)
class Schema:
    """One shard's schema as introspected at ``depth`` (deeper parts are simply empty)."""

    engine: str
    depth: DriftDepth
    tables: Mapping[str, Table] = field(default_factory=dict)
    #: MySQL with lower_case_table_names != 0, SQLite: ``Orders`` and ``orders`` are the same table.
    table_names_ci: bool = False
    #: MySQL and SQLite compare column (and index) names case-insensitively; PostgreSQL does not.
    column_names_ci: bool = False

    @classmethod
    def build(
        cls,
        engine: str,
        depth: DriftDepth,
        tables: Iterable[Table],
        *,
        table_names_ci: bool = False,
        column_names_ci: bool = False,
    ) -> Schema:
        ordered = sorted(tables, key=lambda t: t.name)
        return cls(engine, depth, {t.name: t for t in ordered}, table_names_ci, column_names_ci)

    def to_dict(self) -> dict[str, Any]:
        return {
            "engine": self.engine,
            "depth": self.depth.value,
            "table_names_ci": self.table_names_ci,
            "column_names_ci": self.column_names_ci,
            "tables": [t.to_dict() for t in self.tables.values()],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Schema:
        return cls.build(
            str(data["engine"]),
            DriftDepth(data["depth"]),
            (Table.from_dict(t) for t in data.get("tables", ())),
            table_names_ci=bool(data.get("table_names_ci", False)),
            column_names_ci=bool(data.get("column_names_ci", False)),
        )
