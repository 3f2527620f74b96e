"""MongoDB scripts at load time (core/scripts.py): a JSON list of command documents, each with a known first
key and the fields its command needs, refused with the file, the field and the code, every problem at once;
and which shards a migration lacks a script for (engines/coverage.py, the preflight's check). Pure: no server."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from airflow_provider_shardmigrate.core.errors import InvalidScriptError, InvalidTopologyError
from airflow_provider_shardmigrate.core.scripts import load_migration
from airflow_provider_shardmigrate.core.topology import Shard
from airflow_provider_shardmigrate.engines.coverage import missing_scripts, refusal

WriteMigration = Callable[..., Path]


def mongo_folder(write_migration: WriteMigration, up: object, down: object = None, *, keep_sql: bool = False) -> Path:
    folder = write_migration("001_mongo")
    if not keep_sql:
        (folder / "up.sql").unlink()
        (folder / "down.sql").unlink()
    (folder / "up.mongo.json").write_text(up if isinstance(up, str) else json.dumps(up))
    (folder / "down.mongo.json").write_text(json.dumps(down or [{"ping": 1}]))
    return folder


def problems(folder: Path) -> list[tuple[str | None, str | None, str]]:
    with pytest.raises(InvalidScriptError) as caught:
        load_migration(folder)
    assert caught.value.code == "shardmigrate.invalid_script"
    return [(p.source, p.field, p.message) for p in caught.value.problems]


def test_a_script_of_known_commands_loads_and_is_checksummed(write_migration: WriteMigration) -> None:
    up = [
        {"create": "orders", "validator": {"$jsonSchema": {"required": ["customer_id"]}}},
        {"createIndexes": "orders", "indexes": [{"key": {"customer_id": 1}, "name": "c"}]},
        {"update": "orders", "updates": [{"q": {}, "u": {"$set": {"s": "new"}}, "multi": True}]},
        {"renameCollection": "orders", "to": "orders_v2"},
    ]
    folder = mongo_folder(write_migration, up)
    first = load_migration(folder)
    (folder / "up.mongo.json").write_text(json.dumps(up[:3]))

    assert first.variants == ("mongo",)
    assert load_migration(folder).checksum != first.checksum


@pytest.mark.parametrize(
    ("command", "field", "says"),
    [
        ({"createIndex": "orders"}, "[1].createIndex", "unknown MongoDB command 'createIndex'"),
        ({"dropDatabase": 1}, "[1].dropDatabase", "drop the shard's whole database"),
        ({"create": ""}, "[1].create", "must name a collection"),
        ({"drop": 5}, "[1].drop", "must name a collection"),
        ({"createIndexes": "orders"}, "[1].indexes", "needs 'indexes'"),
        ({"renameCollection": "a"}, "[1].to", "needs 'to'"),
        ({"insert": "orders", "documents": [], "$db": "admin"}, "[1].$db", "runs against the shard's own database"),
    ],
)
def test_a_bad_command_is_refused_naming_file_and_field(
    write_migration: WriteMigration, command: dict[str, object], field: str, says: str
) -> None:
    folder = mongo_folder(write_migration, [{"create": "ok"}, command])

    found = problems(folder)

    assert len(found) == 1, found
    source, where, message = found[0]
    assert source == str(folder / "up.mongo.json") and where == field
    assert message.startswith("command 2: ") and says in message, message


def test_every_bad_command_is_reported_at_once(write_migration: WriteMigration) -> None:
    folder = mongo_folder(write_migration, [{"eval": "x"}, {"create": "fine"}, {"shutdown": 1}])

    assert [field for _, field, _ in problems(folder)] == ["[0].eval", "[2].shutdown"]


def test_which_shards_lack_a_script_for_their_engine(write_migration: WriteMigration) -> None:
    sql_only = load_migration(write_migration("002_sql"))
    both = load_migration(mongo_folder(write_migration, [{"ping": 1}], keep_sql=True))
    types = {"s_sqlite": "sqlite", "s_mongo": "mongo", "s_pg": "postgres", "s_http": "http"}
    asked: list[str] = []

    def lookup(conn_id: str, shard_id: str) -> str:
        asked.append(conn_id)
        if conn_id == "s_missing":
            raise InvalidTopologyError(f"Airflow connection '{conn_id}' is not defined", shard_id=shard_id)
        return types[conn_id]

    shards = [Shard(conn.replace("_", "-"), conn) for conn in (*types, "s_missing")]

    missing = missing_scripts(shards, sql_only, lookup=lookup)

    # the unknown type and the undefined connection are left to their own tasks, which fail saying so
    assert missing == {"s-mongo": ("up.mongo.json", "down.mongo.json")}
    assert "shard 's-mongo': add up.mongo.json, down.mongo.json" in refusal(sql_only, missing).message
    asked.clear()
    assert missing_scripts(shards, both, lookup=lookup) == {} and asked == []  # runs everywhere: nothing looked up


def test_the_refusal_lists_twenty_shards_and_counts_the_rest(write_migration: WriteMigration) -> None:
    migration = load_migration(write_migration("003_many"))
    missing = {f"mg-{n}": ("up.mongo.json", "down.mongo.json") for n in range(25)}

    message = refusal(migration, missing).message

    assert "25 targeted shard(s)" in message and message.count("add up.mongo.json") == 20
    assert message.endswith("... and 5 more")
