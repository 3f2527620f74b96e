"""MongoDB introspection into the schema model (core/schema.py), with the rules of the SQL engines.

What maps onto what:

* a **collection** is a table (views and ``system.*`` collections are not compared, like SQL views; the history
  and lock collections are left out);
* the **validator's** ``$jsonSchema`` gives the columns: every property (nested ones as ``a.b``) and every
  ``required`` field is a column whose type is its ``bsonType``/``type`` (several sorted and joined by ``|``;
  JSON-schema names folded to BSON ones: ``boolean`` = ``bool``, ``integer`` = ``int``), not nullable when it is
  required -- a field that may be absent is MongoDB's NULL; whether ``null`` is an allowed value stays in the
  type. Whatever else the validator says (query operators, ``enum``, bounds, ``additionalProperties``) and a
  ``validationLevel``/``validationAction`` other than the defaults is one check constraint, compared at ``full``;
* **indexes**: keys in order (``field``, ``field desc``), ``unique``, the partial filter as the predicate
  (canonical JSON), and the kind as the method: ``btree`` for ordinary keys, ``text``/``2dsphere``/``hashed``/...
  for special ones, with ``ttl=<seconds>s`` and ``sparse`` appended. The ``_id`` index is the primary key.

Queries: ``listCollections`` (validators included) for every depth, plus one ``listIndexes`` per collection at
``full`` -- MongoDB has no catalog query for every collection's indexes at once. Each is bounded by the
session's deadline (``maxTimeMS``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
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
)
from airflow_provider_shardmigrate.core.topology import DriftDepth

ENGINE = "mongo"
#: Collections of the provider itself: never compared.
EXCLUDED = frozenset({HISTORY_TABLE, "shardmigrate_locks"})
#: JSON-schema ``type`` names -> the ``bsonType`` names mongod uses for the same values.
_JSON_TYPES = {"boolean": "bool", "integer": "int", "number": "number"}
_DEFAULT_LEVEL, _DEFAULT_ACTION = "strict", "error"
#: Keys of a ``$jsonSchema`` property that the columns already show.
_COLUMN_KEYS = frozenset({"bsonType", "type", "properties", "required"})


def canonical(value: Any) -> str:
    """Compact JSON with sorted keys: the same document spelled the same whatever its key order."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


# -- columns from the validator ----------------------------------------------------------------------------


def _type_of(spec: Mapping[str, Any]) -> str:
    raw = spec.get("bsonType", spec.get("type"))
    if raw is None:
        return "any"
    names = raw if isinstance(raw, list) else [raw]
    return "|".join(sorted({_JSON_TYPES.get(str(name), str(name)) for name in names}))


def _columns(schema: Mapping[str, Any], prefix: str = "") -> list[Column]:
    """Columns of a ``$jsonSchema`` object (nested objects' properties as ``parent.child``)."""
    required = {str(name) for name in schema.get("required", ())}
    properties: Mapping[str, Any] = schema.get("properties") or {}
    columns: list[Column] = []
    for name, spec in properties.items():
        spec = spec if isinstance(spec, Mapping) else {}
        columns.append(Column(prefix + name, _type_of(spec), name not in required))
        if isinstance(spec.get("properties"), Mapping):
            columns.extend(_columns(spec, f"{prefix}{name}."))
    columns.extend(Column(prefix + name, "any", False) for name in sorted(required - set(properties)))
    return columns


def _json_schema(validator: Mapping[str, Any]) -> Mapping[str, Any]:
    schema = validator.get("$jsonSchema")
    return schema if isinstance(schema, Mapping) else {}


# -- what else the validator says ---------------------------------------------------------------------------


def _rest_of_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """A ``$jsonSchema`` without what the columns show (types, properties' names, required), recursively."""
    rest = {key: value for key, value in schema.items() if key not in _COLUMN_KEYS}
    nested = {}
    for name, spec in (schema.get("properties") or {}).items():
        inner = _rest_of_schema(spec) if isinstance(spec, Mapping) else {}
        if inner:
            nested[name] = inner
    if nested:
        rest["properties"] = nested
    return rest


def _validator_rule(options: Mapping[str, Any]) -> str | None:
    """One canonical text of everything the validator enforces beyond the columns, or None."""
    validator = options.get("validator") or {}
    rule: dict[str, Any] = {key: value for key, value in validator.items() if key != "$jsonSchema"}
    rest = _rest_of_schema(_json_schema(validator))
    if rest:
        rule["$jsonSchema"] = rest
    level = options.get("validationLevel", _DEFAULT_LEVEL)
    action = options.get("validationAction", _DEFAULT_ACTION)
    if validator and level != _DEFAULT_LEVEL:
        rule["validationLevel"] = level
    if validator and action != _DEFAULT_ACTION:
        rule["validationAction"] = action
    return canonical(rule) if rule else None


# -- indexes --------------------------------------------------------------------------------------------------


def _index_method(spec: Mapping[str, Any]) -> str:
    kinds = sorted({str(value) for value in (spec.get("key") or {}).values() if isinstance(value, str)})
    parts = ["+".join(kinds) if kinds else "btree"]
    if "expireAfterSeconds" in spec:
        parts.append(f"ttl={int(spec['expireAfterSeconds'])}s")
    if spec.get("sparse"):
        parts.append("sparse")
    return " ".join(parts)


def _index_columns(spec: Mapping[str, Any]) -> tuple[str, ...]:
    key: Mapping[str, Any] = spec.get("key") or {}
    if "_fts" in key:  # a text index lists its fields in ``weights``; other keys of it are ordinary prefixes
        plain = [name for name in key if name not in ("_fts", "_ftsx")]
        return (*plain, *sorted(spec.get("weights") or {}))
    columns = []
    for name, direction in key.items():
        descending = isinstance(direction, int | float) and direction < 0
        columns.append(f"{name} desc" if descending else name)
    return tuple(columns)


def read_indexes(specs: Iterable[Mapping[str, Any]]) -> tuple[tuple[Index, ...], tuple[Constraint, ...]]:
    """Indexes and the primary key of one collection from its ``listIndexes`` documents."""
    indexes: list[Index] = []
    constraints: list[Constraint] = []
    for spec in specs:
        if spec.get("name") == "_id_":
            constraints.append(Constraint(ConstraintKind.PRIMARY, None, ("_id",)))
            continue
        partial = spec.get("partialFilterExpression")
        indexes.append(
            Index(
                str(spec.get("name")),
                _index_columns(spec),
                bool(spec.get("unique", False)),
                _index_method(spec),
                canonical(partial) if partial else None,
            )
        )
    return tuple(sorted(indexes, key=lambda i: i.name)), tuple(constraints)


# -- a whole shard --------------------------------------------------------------------------------------------


def compared_collections(collections: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The collections that count as tables: not views, not ``system.*``, not the provider's own."""
    return [
        info
        for info in collections
        if info.get("type", "collection") in ("collection", "timeseries")
        and not str(info.get("name", "")).startswith("system.")
        and info.get("name") not in EXCLUDED
    ]


def table_from_catalog(
    info: Mapping[str, Any], index_specs: Iterable[Mapping[str, Any]] | None, depth: DriftDepth
) -> Table:
    """One collection as a table at ``depth`` (``index_specs``: its ``listIndexes`` documents, for ``full``)."""
    options: Mapping[str, Any] = info.get("options") or {}
    columns: tuple[Column, ...] = ()
    indexes: tuple[Index, ...] = ()
    constraints: tuple[Constraint, ...] = ()
    if includes(depth, DriftDepth.TABLES_AND_COLUMNS):
        columns = tuple(_columns(_json_schema(options.get("validator") or {})))
    if includes(depth, DriftDepth.FULL):
        indexes, constraints = read_indexes(index_specs or ())
        rule = _validator_rule(options)
        if rule is not None:
            constraints += (Constraint(ConstraintKind.CHECK, "validator", expression=rule),)
    return Table(str(info["name"]), columns, indexes, constraints)


def introspect(conn: Any, depth: DriftDepth) -> Schema:
    """The schema of the shard database behind ``conn`` (engines/mongo.py ``MongoCatalog``) at ``depth``."""
    collections = compared_collections(conn.list_collections())
    full = includes(depth, DriftDepth.FULL)
    tables = [
        table_from_catalog(info, conn.list_indexes(str(info["name"])) if full else None, depth) for info in collections
    ]
    return Schema.build(ENGINE, depth, tables)
