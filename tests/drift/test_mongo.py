"""MongoDB drift: collections, validators (required fields and types) and indexes, at the three depths.

Two halves. The catalog decoding runs on documents shaped as mongod answers ``listCollections`` and
``listIndexes`` (validators, partial filters, index directions: what the emulator does not keep). The live half
reads shards of the session's MongoDB server (the nx-27017 emulator, or SHARDMIGRATE_TEST_MONGO_URL) through
the real introspection path (MongoHook, read-only, ``maxTimeMS``): collections, index keys, unique and TTL run
against the emulator; validators, partial filters and descending keys need a real mongod.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_shardmigrate.core.drift import compare_schemas
from airflow_provider_shardmigrate.core.scripts import load_migration
from airflow_provider_shardmigrate.core.topology import DriftDepth, Shard, load_topology
from airflow_provider_shardmigrate.engines.introspect import detect_drift, introspect_shard
from airflow_provider_shardmigrate.engines.introspect_mongo import ENGINE, table_from_catalog
from airflow_provider_shardmigrate.engines.runner import apply_to_shard
from tests.mongo_fixtures import CommandRecorder, MongoFleet, needs_real_mongod

pytestmark = pytest.mark.mongo

TABLES_ONLY, COLUMNS, FULL = DriftDepth.TABLES_ONLY, DriftDepth.TABLES_AND_COLUMNS, DriftDepth.FULL

ORDERS_VALIDATOR = {
    "$jsonSchema": {
        "bsonType": "object",
        "required": ["customer_id", "total"],
        "properties": {
            "customer_id": {"bsonType": "int"},
            "total": {"bsonType": ["decimal", "double"]},
            "note": {"bsonType": ["string", "null"]},
            "paid": {"type": "boolean"},
            "address": {"bsonType": "object", "required": ["city"], "properties": {"city": {"bsonType": "string"}}},
        },
    }
}
ORDERS_INDEXES = [
    {"v": 2, "key": {"_id": 1}, "name": "_id_"},
    {"v": 2, "key": {"customer_id": 1, "created": -1}, "name": "customer_id_1_created_-1"},
    {
        "v": 2,
        "key": {"email": 1},
        "name": "email_1",
        "unique": True,
        "partialFilterExpression": {"email": {"$exists": True}},
    },
    {"v": 2, "key": {"created": 1}, "name": "created_1", "expireAfterSeconds": 3600},
    {"v": 2, "key": {"_fts": "text", "_ftsx": 1}, "name": "note_text", "weights": {"note": 1}},
]


def orders(**options: Any) -> dict[str, Any]:
    return {"name": "orders", "type": "collection", "options": {"validator": ORDERS_VALIDATOR, **options}}


def schema_of(infos: list[dict[str, Any]], indexes: dict[str, list[dict[str, Any]]], depth: DriftDepth) -> Any:
    from airflow_provider_shardmigrate.core.schema import Schema
    from airflow_provider_shardmigrate.engines.introspect_mongo import compared_collections

    tables = [table_from_catalog(i, indexes.get(i["name"], []), depth) for i in compared_collections(infos)]
    return Schema.build(ENGINE, depth, tables)


# -- decoding mongod's catalog --------------------------------------------------------------------------------


def test_validator_fields_become_columns() -> None:
    table = table_from_catalog(orders(), ORDERS_INDEXES, COLUMNS)
    columns = {c.name: (c.type, c.nullable) for c in table.columns}

    assert columns == {
        "customer_id": ("int", False),
        "total": ("decimal|double", False),
        "note": ("null|string", True),  # may be absent, and may be null
        "paid": ("bool", True),  # JSON-schema ``boolean`` is BSON ``bool``
        "address": ("object", True),
        "address.city": ("string", False),
    }
    assert table.indexes == () and table.constraints == ()  # indexes are for ``full``


def test_indexes_keys_unique_partial_filter_and_ttl() -> None:
    table = table_from_catalog(orders(), ORDERS_INDEXES, FULL)
    indexes = {i.name: i for i in table.indexes}

    assert indexes["customer_id_1_created_-1"].columns == ("customer_id", "created desc")
    assert (indexes["email_1"].unique, indexes["email_1"].predicate) == (True, '{"email":{"$exists":true}}')
    assert indexes["created_1"].method == "btree ttl=3600s"
    assert (indexes["note_text"].columns, indexes["note_text"].method) == (("note",), "text")
    assert "_id_" not in indexes
    assert [c.describe() for c in table.constraints] == ["primary key (_id)"]


def test_the_same_validator_spelled_differently_is_not_drift() -> None:
    respelled = json.loads(json.dumps(ORDERS_VALIDATOR))
    schema = respelled["$jsonSchema"]
    schema["required"] = ["total", "customer_id"]
    schema["properties"]["total"]["bsonType"] = ["double", "decimal"]
    schema["properties"]["paid"] = {"bsonType": "bool"}
    schema["properties"] = dict(reversed(list(schema["properties"].items())))
    reordered = list(reversed(ORDERS_INDEXES))
    base = schema_of([orders()], {"orders": ORDERS_INDEXES}, FULL)
    other = schema_of(
        [{"name": "orders", "type": "collection", "options": {"validator": respelled}}], {"orders": reordered}, FULL
    )

    assert compare_schemas(base, other, FULL) == ()


def _changed(**changes: Any) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    validator = json.loads(json.dumps(ORDERS_VALIDATOR))
    indexes = json.loads(json.dumps(ORDERS_INDEXES))
    options: dict[str, Any] = {}
    if "type" in changes:
        validator["$jsonSchema"]["properties"]["customer_id"]["bsonType"] = changes["type"]
    if "optional" in changes:
        validator["$jsonSchema"]["required"].remove(changes["optional"])
    if "enum" in changes:
        validator["$jsonSchema"]["properties"]["note"]["enum"] = changes["enum"]
    if "level" in changes:
        options["validationLevel"] = changes["level"]
    if "ttl" in changes:
        indexes[3]["expireAfterSeconds"] = changes["ttl"]
    if "partial" in changes:
        indexes[2]["partialFilterExpression"] = changes["partial"]
    if "direction" in changes:
        indexes[1]["key"]["created"] = changes["direction"]
    infos = [{"name": "orders", "type": "collection", "options": {"validator": validator, **options}}]
    if "extra_collection" in changes:
        infos.append({"name": changes["extra_collection"], "type": "collection", "options": {}})
    return infos, {"orders": indexes}


#: (change, the shallowest depth that sees it, what the report says)
CASES = [
    ({"extra_collection": "audit"}, TABLES_ONLY, "audit extra"),
    ({"type": "long"}, COLUMNS, "column customer_id: type int -> long"),
    ({"optional": "total"}, COLUMNS, "column total: nullable no -> yes"),
    ({"enum": ["a", "b"]}, FULL, "constraint validator"),
    ({"level": "moderate"}, FULL, "constraint validator"),
    ({"ttl": 60}, FULL, "index created_1: method btree ttl=3600s -> btree ttl=60s"),
    ({"partial": {"email": {"$type": "string"}}}, FULL, "index email_1: predicate"),
    (
        {"direction": 1},
        FULL,
        "index customer_id_1_created_-1: columns (customer_id, created desc) -> (customer_id, created)",
    ),
]


@pytest.mark.parametrize("depth", [TABLES_ONLY, COLUMNS, FULL], ids=lambda d: d.value)
@pytest.mark.parametrize(("change", "shallowest", "says"), CASES, ids=[next(iter(c[0])) for c in CASES])
def test_each_difference_is_found_exactly_at_the_depths_that_include_it(
    change: dict[str, Any], shallowest: DriftDepth, says: str, depth: DriftDepth
) -> None:
    base = schema_of([orders()], {"orders": ORDERS_INDEXES}, depth)
    other = schema_of(*_changed(**change), depth)

    diffs = compare_schemas(base, other, depth)

    levels = [TABLES_ONLY, COLUMNS, FULL]
    if levels.index(depth) < levels.index(shallowest):
        assert diffs == ()
        return
    lines = [f"{d.table} {d.kind.value}" for d in diffs] + [line for d in diffs for line in d.details()]
    assert any(says in line for line in lines), lines


def test_views_system_history_and_lock_collections_are_not_tables() -> None:
    infos = [
        orders(),
        {"name": "orders_view", "type": "view", "options": {"viewOn": "orders", "pipeline": []}},
        {"name": "system.views", "type": "collection", "options": {}},
        {"name": "shardmigrate_history", "type": "collection", "options": {}},
        {"name": "shardmigrate_locks", "type": "collection", "options": {}},
    ]

    assert list(schema_of(infos, {}, TABLES_ONLY).tables) == ["orders"]


# -- live shards ------------------------------------------------------------------------------------------------


def topology_file(tmp_path: Path, fleet: MongoFleet, shard_ids: list[str]) -> Any:
    path = tmp_path / "shards.yaml"
    path.write_text(fleet.topology(shard_ids))
    return load_topology(path)


def _indexed(fleet: MongoFleet, shard_id: str, **index: Any) -> None:
    db = fleet.db(shard_id)
    db.command({"createIndexes": "customers", "indexes": [{"key": {"name": 1}, "name": "idx_customers_name", **index}]})


def test_live_fleet_collections_and_indexes(mongo_fleet: MongoFleet, tmp_path: Path) -> None:
    for shard_id in ("mg-0", "mg-same", "mg-extra", "mg-noindex", "mg-unique", "mg-ttl"):
        mongo_fleet.add(shard_id)
        if shard_id != "mg-noindex":
            _indexed(
                mongo_fleet,
                shard_id,
                **({"unique": True} if shard_id == "mg-unique" else {}),
                **({"expireAfterSeconds": 60} if shard_id == "mg-ttl" else {}),
            )
    mongo_fleet.db("mg-extra")["audit"].insert_one({"at": 1})
    topology = topology_file(tmp_path, mongo_fleet, list(mongo_fleet.databases))

    shallow = detect_drift(topology, depth="tables_only")
    full = detect_drift(topology, depth="full")

    assert shallow.errors == {} and shallow.drifted_shards == ("mg-extra",)
    assert full.errors == {} and set(full.drifted_shards) == {"mg-extra", "mg-noindex", "mg-unique", "mg-ttl"}
    details = {shard: [line for diff in diffs for line in diff.details()] for shard, diffs in full.diffs.items()}
    assert details["mg-noindex"] == ["index idx_customers_name: missing -- (name)"]
    assert details["mg-unique"] == ["index idx_customers_name: unique no -> yes"]
    assert details["mg-ttl"] == ["index idx_customers_name: method btree -> btree ttl=60s"]
    assert [d.table for d in full.diffs["mg-extra"]] == ["audit"]


def test_live_history_and_lock_collections_are_excluded(
    mongo_fleet: MongoFleet, tmp_path: Path, write_migration: Any
) -> None:
    mongo_fleet.add("mg-0")
    mongo_fleet.add("mg-1")
    folder = write_migration("001_noop")
    (folder / "up.mongo.json").write_text('[{"ping": 1}]')
    (folder / "down.mongo.json").write_text('[{"ping": 1}]')
    assert apply_to_shard(Shard("mg-1", "mg_1"), load_migration(folder)).outcome == "succeeded"
    assert {"shardmigrate_history", "shardmigrate_locks"} <= mongo_fleet.tables("mg-1")

    report = detect_drift(topology_file(tmp_path, mongo_fleet, ["mg-0", "mg-1"]), depth="full")

    assert report.errors == {} and not report.has_drift


@pytest.mark.parametrize(("depth", "list_indexes"), [(TABLES_ONLY, 0), (COLUMNS, 0), (FULL, 3)])
def test_live_catalog_reads_per_depth_are_bounded(
    mongo_fleet: MongoFleet, mongo_commands: CommandRecorder, depth: DriftDepth, list_indexes: int
) -> None:
    mongo_fleet.add("mg-0")
    for name in ("a", "b"):
        mongo_fleet.db("mg-0")[name].insert_one({"x": 1})
    mongo_commands.sent.clear()

    introspect_shard(Shard("mg-0", "mg_0"), depth, timeout=20)

    catalog = mongo_commands.named("listCollections", "listIndexes")
    assert [c for c in catalog if "listCollections" in c] and len(mongo_commands.named("listCollections")) == 1
    assert len(mongo_commands.named("listIndexes")) == list_indexes  # one per collection: customers, a, b
    assert all(0 < c["maxTimeMS"] <= 20_000 for c in catalog)
    writes = mongo_commands.named("create", "insert", "update", "delete", "drop", "createIndexes", "collMod")
    assert writes == []  # read-only


def test_live_unreachable_shard_is_a_detection_failure_without_the_password(
    mongo_fleet: MongoFleet, tmp_path: Path
) -> None:
    mongo_fleet.add("mg-0")
    mongo_fleet.add("mg-down", password="n0t-for-logs", port=1)

    report = detect_drift(topology_file(tmp_path, mongo_fleet, ["mg-0", "mg-down"]), depth="full")

    assert set(report.errors) == {"mg-down"}
    assert "127.0.0.1:1" in report.errors["mg-down"].message
    assert "n0t-for-logs" not in json.dumps(report.to_dict())


@needs_real_mongod("the emulator keeps no validator, partial filter, index name or key direction")
def test_live_validators_partial_filters_and_directions(mongo_fleet: MongoFleet, tmp_path: Path) -> None:
    for shard_id in ("mg-0", "mg-types", "mg-partial"):
        mongo_fleet.add(shard_id)
        db = mongo_fleet.db(shard_id)
        kind = "long" if shard_id == "mg-types" else "int"
        db.command(
            {
                "create": "orders",
                "validator": {"$jsonSchema": {"required": ["n"], "properties": {"n": {"bsonType": kind}}}},
            }
        )
        spec: dict[str, Any] = {"key": {"n": 1, "at": -1}, "name": "n_at"}
        if shard_id == "mg-partial":
            spec["partialFilterExpression"] = {"n": {"$gt": 0}}
        db.command({"createIndexes": "orders", "indexes": [spec]})
    topology = topology_file(tmp_path, mongo_fleet, ["mg-0", "mg-types", "mg-partial"])

    columns = detect_drift(topology, depth="tables_and_columns")
    full = detect_drift(topology, depth="full")

    assert columns.drifted_shards == ("mg-types",)
    assert [line for d in columns.diffs["mg-types"] for line in d.details()] == ["column n: type int -> long"]
    assert set(full.drifted_shards) == {"mg-types", "mg-partial"}
    partial = [line for d in full.diffs["mg-partial"] for line in d.details()]
    assert partial == ['index n_at: predicate none -> {"n":{"$gt":0}}']
    schema = introspect_shard(Shard("mg-0", "mg_0"), FULL)
    assert schema.tables["orders"].indexes[0].columns == ("n", "at desc")
