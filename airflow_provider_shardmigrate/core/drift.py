"""Schema drift: compare every active shard with a baseline shard, and the report.

The depth decides what is compared -- ``tables_only`` (which tables exist), ``tables_and_columns``
(+ column type, nullability, default), ``full`` (+ indexes and primary/unique/foreign/check constraints)
-- so a shallow check never reports a deep difference, and a deep one never misses it.

Also the helpers the migration gate needs: which of a script's tables already differ between shards,
and which tables a script touches. Pure: schemas in, report out; no database, no Airflow.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from airflow_provider_shardmigrate.core.errors import ErrorCode, SchemaComparisonFailedError
from airflow_provider_shardmigrate.core.schema import (
    Column,
    Constraint,
    ConstraintKind,
    Index,
    Schema,
    Table,
    casefold,
    identity,
    includes,
)
from airflow_provider_shardmigrate.core.topology import DriftDepth, Shard, Topology

#: Tables listed per shard in the XCom form of a report; the rest are counted, not listed.
XCOM_TABLES_PER_SHARD = 50


class DiffKind(StrEnum):
    MISSING = "missing"  # in the baseline, not in the shard
    EXTRA = "extra"  # in the shard, not in the baseline
    MODIFIED = "modified"  # in both, defined differently


@dataclass(frozen=True)
class Change:
    """One attribute of an object that differs: the baseline's value and the shard's."""

    attribute: str
    baseline: Any
    shard: Any

    def to_dict(self) -> dict[str, Any]:
        return {"attribute": self.attribute, "baseline": self.baseline, "shard": self.shard}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Change:
        return cls(str(data["attribute"]), data.get("baseline"), data.get("shard"))


@dataclass(frozen=True)
class ObjectDiff:
    """A column, index or constraint that is missing, extra or modified on a shard."""

    name: str
    kind: DiffKind
    #: The definition that exists: the baseline's for ``missing``, the shard's for ``extra``.
    definition: str | None = None
    changes: tuple[Change, ...] = ()

    def describe(self) -> str:
        if self.kind is DiffKind.MODIFIED:
            parts = ", ".join(f"{c.attribute} {_show(c.baseline)} -> {_show(c.shard)}" for c in self.changes)
            return f"{self.name}: {parts}"
        text = f"{self.name}: {self.kind.value}"
        if self.definition and self.definition not in self.name:
            text += f" -- {self.definition}"
        return text

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "kind": self.kind.value}
        if self.definition is not None:
            data["definition"] = self.definition
        if self.changes:
            data["changes"] = [c.to_dict() for c in self.changes]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ObjectDiff:
        return cls(
            name=str(data["name"]),
            kind=DiffKind(data["kind"]),
            definition=data.get("definition"),
            changes=tuple(Change.from_dict(c) for c in data.get("changes", ())),
        )


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return "(" + ", ".join(str(v) for v in value) + ")"
    return str(value)


@dataclass(frozen=True)
class TableDiff:
    table: str
    kind: DiffKind
    columns: tuple[ObjectDiff, ...] = ()
    indexes: tuple[ObjectDiff, ...] = ()
    constraints: tuple[ObjectDiff, ...] = ()

    def details(self) -> list[str]:
        """One line per differing object, e.g. ``column name: type varchar(50) -> varchar(80)``."""
        lines = [f"column {d.describe()}" for d in self.columns]
        lines += [f"index {d.describe()}" for d in self.indexes]
        lines += [f"constraint {d.describe()}" for d in self.constraints]
        return lines

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"table": self.table, "kind": self.kind.value}
        for part in ("columns", "indexes", "constraints"):
            diffs: tuple[ObjectDiff, ...] = getattr(self, part)
            if diffs:
                data[part] = [d.to_dict() for d in diffs]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TableDiff:
        def part(name: str) -> tuple[ObjectDiff, ...]:
            return tuple(ObjectDiff.from_dict(d) for d in data.get(name, ()))

        return cls(str(data["table"]), DiffKind(data["kind"]), part("columns"), part("indexes"), part("constraints"))


@dataclass(frozen=True)
class ShardError:
    """Why a shard could not be compared (detection failure): unreachable, timed out, unsupported."""

    code: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ShardError:
        return cls(str(data.get("code", ErrorCode.SCHEMA_COMPARISON_FAILED)), str(data.get("message", "")))


@dataclass(frozen=True)
class DriftReport:
    """The fleet compared with its baseline at one depth, at one moment."""

    baseline: str
    depth: DriftDepth
    generated_at: str  # ISO 8601, UTC
    #: Shards compared with the baseline, in topology order (the baseline itself is not listed).
    shards_compared: tuple[str, ...] = ()
    #: Differing tables per drifted shard; shards in sync are absent.
    diffs: Mapping[str, tuple[TableDiff, ...]] = field(default_factory=dict)
    #: Shards whose schema could not be read (including the baseline): detection failed.
    errors: Mapping[str, ShardError] = field(default_factory=dict)
    duration_ms: int = 0
    #: Tables left out of ``diffs`` per shard by the compact (XCom) form.
    truncated: Mapping[str, int] = field(default_factory=dict)

    @property
    def has_drift(self) -> bool:
        return any(self.diffs.values())

    @property
    def detection_failed(self) -> bool:
        return bool(self.errors)

    @property
    def drifted_shards(self) -> tuple[str, ...]:
        return tuple(shard for shard in self.shards_compared if self.diffs.get(shard))

    def drifted_tables(self) -> dict[str, tuple[str, ...]]:
        """Table -> shards on which it differs from the baseline."""
        tables: dict[str, list[str]] = {}
        for shard in self.drifted_shards:
            for diff in self.diffs[shard]:
                tables.setdefault(diff.table, []).append(shard)
        return {table: tuple(shards) for table, shards in sorted(tables.items())}

    def to_dict(self, max_tables_per_shard: int | None = None) -> dict[str, Any]:
        """JSON-ready; ``max_tables_per_shard`` bounds the size (the rest is counted in ``truncated``)."""
        diffs: dict[str, list[dict[str, Any]]] = {}
        truncated = dict(self.truncated)
        for shard, tables in self.diffs.items():
            kept = tables if max_tables_per_shard is None else tables[:max_tables_per_shard]
            diffs[shard] = [t.to_dict() for t in kept]
            if len(kept) < len(tables):
                truncated[shard] = truncated.get(shard, 0) + len(tables) - len(kept)
        data: dict[str, Any] = {
            "baseline": self.baseline,
            "depth": self.depth.value,
            "generated_at": self.generated_at,
            "has_drift": self.has_drift,
            "detection_failed": self.detection_failed,
            "shards_compared": list(self.shards_compared),
            "drifted_shards": list(self.drifted_shards),
            "diffs": diffs,
            "errors": {shard: error.to_dict() for shard, error in self.errors.items()},
            "duration_ms": self.duration_ms,
        }
        if truncated:
            data["truncated"] = truncated
        return data

    def to_xcom(self) -> dict[str, Any]:
        """The compact form for XCom: differences only (never whole schemas), bounded per shard."""
        return self.to_dict(max_tables_per_shard=XCOM_TABLES_PER_SHARD)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DriftReport:
        return cls(
            baseline=str(data["baseline"]),
            depth=DriftDepth(data["depth"]),
            generated_at=str(data["generated_at"]),
            shards_compared=tuple(data.get("shards_compared", ())),
            diffs={
                shard: tuple(TableDiff.from_dict(t) for t in tables)
                for shard, tables in (data.get("diffs") or {}).items()
            },
            errors={shard: ShardError.from_dict(e) for shard, e in (data.get("errors") or {}).items()},
            duration_ms=int(data.get("duration_ms", 0)),
            truncated=dict(data.get("truncated") or {}),
        )


# -- choosing what to compare ---------------------------------------------------------------------------


def choose_baseline(topology: Topology, requested: str | None = None) -> Shard:
    """The baseline: ``requested``, else the topology's ``drift.baseline``, else the first active shard.

    An inactive shard may be the baseline (a reference shard that takes no rollouts); a shard that is
    not in the topology may not.
    """
    wanted = requested or topology.drift.baseline
    if wanted:
        shard = topology.find(wanted)
        if shard is None:
            known = ", ".join(s.id for s in topology.shards) or "none"
            raise SchemaComparisonFailedError(
                f"baseline shard '{wanted}' is not in topology '{topology.source}' (shards: {known})"
            )
        return shard
    if not topology.active_shards:
        raise SchemaComparisonFailedError(
            f"topology '{topology.source}' has no active shard to use as the drift baseline"
        )
    return topology.active_shards[0]


def shards_to_compare(topology: Topology, baseline: Shard) -> tuple[Shard, ...]:
    """Every active shard except the baseline, in topology order."""
    return tuple(shard for shard in topology.active_shards if shard.key != baseline.key)


# -- comparing ------------------------------------------------------------------------------------------


def _folds(a: Schema, b: Schema) -> tuple[Callable[[str], str], Callable[[str], str]]:
    """Name folding for (tables, columns/indexes): case-insensitive when either engine is."""
    tables = casefold if (a.table_names_ci or b.table_names_ci) else identity
    columns = casefold if (a.column_names_ci or b.column_names_ci) else identity
    return tables, columns


def _compare_columns(base: Table, other: Table, fold: Callable[[str], str]) -> list[ObjectDiff]:
    ours = {fold(c.name): c for c in base.columns}
    theirs = {fold(c.name): c for c in other.columns}
    diffs: list[ObjectDiff] = []
    for key, column in ours.items():
        match = theirs.get(key)
        if match is None:
            diffs.append(ObjectDiff(column.name, DiffKind.MISSING, column.describe()))
            continue
        changes = _column_changes(column, match)
        if changes:
            diffs.append(ObjectDiff(column.name, DiffKind.MODIFIED, changes=changes))
    for key, column in theirs.items():
        if key not in ours:
            diffs.append(ObjectDiff(column.name, DiffKind.EXTRA, column.describe()))
    return diffs


def _column_changes(base: Column, other: Column) -> tuple[Change, ...]:
    changes = []
    if base.type != other.type:
        changes.append(Change("type", base.type, other.type))
    if base.nullable != other.nullable:
        changes.append(Change("nullable", base.nullable, other.nullable))
    if base.default != other.default:
        changes.append(Change("default", base.default, other.default))
    return tuple(changes)


def _compare_indexes(base: Table, other: Table, fold: Callable[[str], str]) -> list[ObjectDiff]:
    ours = {fold(i.name): i for i in base.indexes}
    theirs = {fold(i.name): i for i in other.indexes}
    diffs: list[ObjectDiff] = []
    for key, index in ours.items():
        match = theirs.get(key)
        if match is None:
            diffs.append(ObjectDiff(index.name, DiffKind.MISSING, index.describe()))
            continue
        changes = _index_changes(index, match, fold)
        if changes:
            diffs.append(ObjectDiff(index.name, DiffKind.MODIFIED, changes=changes))
    for key, index in theirs.items():
        if key not in ours:
            diffs.append(ObjectDiff(index.name, DiffKind.EXTRA, index.describe()))
    return diffs


def _index_changes(base: Index, other: Index, fold: Callable[[str], str]) -> tuple[Change, ...]:
    changes = []
    if [fold(c) for c in base.columns] != [fold(c) for c in other.columns]:
        changes.append(Change("columns", list(base.columns), list(other.columns)))
    if base.unique != other.unique:
        changes.append(Change("unique", base.unique, other.unique))
    if base.method and other.method and base.method != other.method:
        changes.append(Change("method", base.method, other.method))
    if (base.predicate or None) != (other.predicate or None):
        changes.append(Change("predicate", base.predicate, other.predicate))
    return tuple(changes)


def _compare_constraints(
    base: Table, other: Table, fold: Callable[[str], str], fold_table: Callable[[str], str]
) -> list[ObjectDiff]:
    ours = {c.key(fold, fold_table): c for c in base.constraints}
    theirs = {c.key(fold, fold_table): c for c in other.constraints}
    diffs: list[ObjectDiff] = []
    for key, constraint in ours.items():
        match = theirs.get(key)
        if match is None:
            diffs.append(ObjectDiff(_constraint_label(constraint, key), DiffKind.MISSING, constraint.describe()))
            continue
        changes = _constraint_changes(constraint, match, fold, fold_table)
        if changes:
            diffs.append(ObjectDiff(_constraint_label(constraint, key), DiffKind.MODIFIED, changes=changes))
    for key, constraint in theirs.items():
        if key not in ours:
            diffs.append(ObjectDiff(_constraint_label(constraint, key), DiffKind.EXTRA, constraint.describe()))
    return diffs


def _constraint_label(constraint: Constraint, key: str) -> str:
    return f"{constraint.name} [{key}]" if constraint.name else key


def _constraint_changes(
    base: Constraint, other: Constraint, fold: Callable[[str], str], fold_table: Callable[[str], str]
) -> tuple[Change, ...]:
    changes = []
    if [fold(c) for c in base.columns] != [fold(c) for c in other.columns]:
        changes.append(Change("columns", list(base.columns), list(other.columns)))
    if base.kind is ConstraintKind.FOREIGN:
        if fold_table(base.ref_table or "") != fold_table(other.ref_table or ""):
            changes.append(Change("references", base.ref_table, other.ref_table))
        if [fold(c) for c in base.ref_columns] != [fold(c) for c in other.ref_columns]:
            changes.append(Change("referenced columns", list(base.ref_columns), list(other.ref_columns)))
        if (base.on_delete or "no action") != (other.on_delete or "no action"):
            changes.append(Change("on delete", base.on_delete, other.on_delete))
        if (base.on_update or "no action") != (other.on_update or "no action"):
            changes.append(Change("on update", base.on_update, other.on_update))
    return tuple(changes)


def compare_tables(
    base: Table,
    other: Table,
    depth: DriftDepth,
    fold_columns: Callable[[str], str] = identity,
    fold_tables: Callable[[str], str] = identity,
) -> TableDiff | None:
    """How ``other`` differs from ``base`` at ``depth``; None when it does not."""
    columns: list[ObjectDiff] = []
    indexes: list[ObjectDiff] = []
    constraints: list[ObjectDiff] = []
    if includes(depth, DriftDepth.TABLES_AND_COLUMNS):
        columns = _compare_columns(base, other, fold_columns)
    if includes(depth, DriftDepth.FULL):
        indexes = _compare_indexes(base, other, fold_columns)
        constraints = _compare_constraints(base, other, fold_columns, fold_tables)
    if not (columns or indexes or constraints):
        return None
    return TableDiff(base.name, DiffKind.MODIFIED, tuple(columns), tuple(indexes), tuple(constraints))


def compare_schemas(baseline: Schema, shard: Schema, depth: DriftDepth) -> tuple[TableDiff, ...]:
    """Every table of ``shard`` that differs from ``baseline`` at ``depth``, sorted by table name."""
    for schema in (baseline, shard):
        if not includes(schema.depth, depth):
            raise SchemaComparisonFailedError(
                f"a schema introspected at depth '{schema.depth}' cannot be compared at depth '{depth}'"
            )
    fold_tables, fold_columns = _folds(baseline, shard)
    ours = {fold_tables(name): table for name, table in baseline.tables.items()}
    theirs = {fold_tables(name): table for name, table in shard.tables.items()}
    diffs: list[TableDiff] = []
    for key, table in ours.items():
        match = theirs.get(key)
        if match is None:
            diffs.append(TableDiff(table.name, DiffKind.MISSING))
            continue
        diff = compare_tables(table, match, depth, fold_columns, fold_tables)
        if diff is not None:
            diffs.append(diff)
    for key, table in theirs.items():
        if key not in ours:
            diffs.append(TableDiff(table.name, DiffKind.EXTRA))
    return tuple(sorted(diffs, key=lambda d: (fold_tables(d.table), d.kind.value)))


def compare_fleet(
    baseline: str,
    shards: Sequence[str],
    schemas: Mapping[str, Schema],
    errors: Mapping[str, ShardError],
    depth: DriftDepth,
    *,
    generated_at: datetime | None = None,
    duration_ms: int = 0,
) -> DriftReport:
    """The report for ``shards`` against ``baseline`` given what introspection produced.

    A shard without a schema is a detection failure (its error is kept); when the baseline itself
    failed, nothing can be compared and every other shard is reported as not compared.
    """
    when = (generated_at or datetime.now(UTC)).isoformat()
    failures = dict(errors)
    base = schemas.get(baseline)
    if base is None:
        failures.setdefault(
            baseline,
            ShardError(ErrorCode.SCHEMA_COMPARISON_FAILED.value, "the baseline shard's schema could not be read"),
        )
        return DriftReport(baseline, depth, when, (), {}, _ordered(failures, [baseline, *shards]), duration_ms)
    compared: list[str] = []
    diffs: dict[str, tuple[TableDiff, ...]] = {}
    for shard in shards:
        schema = schemas.get(shard)
        if schema is None:
            failures.setdefault(
                shard, ShardError(ErrorCode.SCHEMA_COMPARISON_FAILED.value, "the shard's schema could not be read")
            )
            continue
        compared.append(shard)
        found = compare_schemas(base, schema, depth)
        if found:
            diffs[shard] = found
    return DriftReport(
        baseline, depth, when, tuple(compared), diffs, _ordered(failures, [baseline, *shards]), duration_ms
    )


def _ordered(errors: Mapping[str, ShardError], order: Sequence[str]) -> dict[str, ShardError]:
    position = {shard: index for index, shard in enumerate(order)}
    return dict(sorted(errors.items(), key=lambda item: position.get(item[0], len(position))))


# -- the migration gate's helpers -------------------------------------------------------------------------


def differing_tables(
    schemas: Mapping[str, Schema], tables: Iterable[str], depth: DriftDepth = DriftDepth.FULL
) -> dict[str, tuple[str, ...]]:
    """Which of ``tables`` are not defined identically on every shard of ``schemas``.

    Returns table -> the shards whose definition differs from the first shard's (in ``schemas``
    order), for the tables that differ. A table absent from every shard (the script creates it) does
    not differ; one present on some shards only does.
    """
    items = list(schemas.items())
    if len(items) < 2:
        return {}
    first = items[0][1]
    result: dict[str, tuple[str, ...]] = {}
    for wanted in tables:
        differing: list[str] = []
        for shard_id, schema in items[1:]:
            fold_tables, fold_columns = _folds(first, schema)
            ours = _find_table(first, wanted, fold_tables)
            theirs = _find_table(schema, wanted, fold_tables)
            if ours is None and theirs is None:
                continue
            if ours is None or theirs is None or compare_tables(ours, theirs, depth, fold_columns, fold_tables):
                differing.append(shard_id)
        if differing:
            result[wanted] = tuple(differing)
    return result


def _find_table(schema: Schema, name: str, fold: Callable[[str], str]) -> Table | None:
    key = fold(name)
    unqualified = key.rsplit(".", 1)[-1] if key.startswith("public.") else key
    for table_name, table in schema.tables.items():
        if fold(table_name) in (key, unqualified):
            return table
    return None


_NAME_AFTER = {"TABLE", "INTO", "UPDATE", "FROM", "JOIN", "REFERENCES", "TRUNCATE"}
_SKIP_WORDS = {
    "IF",
    "NOT",
    "EXISTS",
    "IF EXISTS",
    "IF NOT EXISTS",
    "ONLY",
    "TABLE",
    "LOW_PRIORITY",
    "IGNORE",
    "DELAYED",
    "QUICK",
    "LATERAL",
}
_STOP_WORDS = {"SELECT", "WITH", "VALUES", "SET", "WHERE", "TO", "AS", "ON", "USING", "ADD", "DROP", "RENAME"}


def tables_in_script(script: str) -> set[str]:
    """Names of the tables an SQL script touches (creates, alters, drops, writes, reads or references).

    Parsed with sqlparse (tokens, so names inside string literals and comments are not picked up);
    quoting is removed (``"Orders"`` -> ``Orders``) and schema qualification kept (``audit.log``).
    Indexes are mapped to their table (``CREATE INDEX ... ON orders``); ``DROP INDEX name`` names no
    table in PostgreSQL and SQLite, so it contributes nothing. Renames contribute both names.
    """
    from sqlparse import tokens as T
    from sqlparse.engine import FilterStack

    found: set[str] = set()
    # Statements without sqlparse's grouping (sqlparse.parse), which refuses a statement of more than
    # 10,000 tokens -- one INSERT of ~1,250 rows -- and is what the flat token walk below does not need.
    for statement in FilterStack().run(script):  # type: ignore[no-untyped-call]
        words = [
            tok
            for tok in statement.flatten()  # type: ignore[no-untyped-call]
            if not tok.is_whitespace and tok.ttype not in T.Comment
        ]
        _collect_tables(words, found)
    return found


def _upper(token: Any) -> str:
    return " ".join(str(token.value).upper().split())


def _collect_tables(words: list[Any], found: set[str]) -> None:
    index_statement = False
    i = 0
    while i < len(words):
        token = words[i]
        upper = _upper(token)
        if not token.is_keyword:
            i += 1
            continue
        if upper == "INDEX":
            index_statement = True
        expects = upper in _NAME_AFTER or upper.endswith(" JOIN") or (upper == "ON" and index_statement)
        if upper == "TO":
            window = [_upper(w) for w in words[max(0, i - 4) : i]]
            expects = "RENAME" in window and "COLUMN" not in window and "CONSTRAINT" not in window
        if expects:
            i = _read_names(words, i + 1, found, many=upper == "TABLE")
            if upper == "ON":
                index_statement = False
            continue
        i += 1


def _read_names(words: list[Any], start: int, found: set[str], *, many: bool) -> int:
    """Read one (or, after ``TABLE``, a comma-separated list of) qualified name(s); the next index."""
    i = start
    while True:
        name, i = _read_name(words, i)
        if name:
            found.add(name)
        if many and name and i < len(words) and words[i].value == ",":
            i += 1
            continue
        return i


def _read_name(words: list[Any], start: int) -> tuple[str | None, int]:
    from sqlparse import tokens as T

    i = start
    while i < len(words) and words[i].is_keyword and _upper(words[i]) in _SKIP_WORDS:
        i += 1
    parts: list[str] = []
    while i < len(words):
        token = words[i]
        is_name = token.ttype in T.Name or token.ttype in T.Literal.String.Symbol
        if not is_name and not (token.is_keyword and _upper(token) not in _STOP_WORDS):
            break
        parts.append(str(token.value).strip('"`[]'))
        i += 1
        if i < len(words) and words[i].value == ".":
            i += 1
            continue
        break
    if not parts:
        return None, start if i == start else i
    return ".".join(parts), i
