"""What the nx-27017 emulator does and does not do, checked against it (this is the README's list).

The MongoDB engine is verified against this emulator in ``make test``; what it cannot show is left to a real
mongod (``needs_real_mongod`` tests, ``make test-mongo``). Each check here pins one behaviour of the emulator
version in the dev extra, so an upgrade that changes one fails here first and the list gets revisited.
Skipped when SHARDMIGRATE_TEST_MONGO_URL names a real mongod (then there is no emulator to describe).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.mongo_fixtures import MongoServer

pytestmark = pytest.mark.mongo


@pytest.fixture
def db(mongo_server: MongoServer) -> Iterator[Any]:
    if mongo_server.real:
        pytest.skip("describes the nx-27017 emulator; SHARDMIGRATE_TEST_MONGO_URL names a real mongod")
    name = mongo_server.create_database()
    client = mongo_server.client()
    database = client[name]
    database["customers"].insert_many([{"_id": 1, "name": "ada"}, {"_id": 2, "name": "grace"}])
    yield database
    client.close()
    mongo_server.drop_database(name)


def indexes(db: Any, collection: str) -> dict[str, dict[str, Any]]:
    return {spec["name"]: dict(spec) for spec in db[collection].list_indexes()}


# -- what it does, as mongod does ------------------------------------------------------------------------


def test_it_keeps_documents_indexes_and_duplicate_key_errors(db: Any) -> None:
    reply = db.command({"insert": "customers", "documents": [{"_id": 1, "name": "again"}]})
    assert reply["writeErrors"][0]["code"] == 11000  # in an ok:1 reply, as mongod answers a write
    db.command({"createIndexes": "customers", "indexes": [{"key": {"name": 1}, "name": "n", "unique": True}]})
    db.command({"createIndexes": "customers", "indexes": [{"key": {"at": 1}, "name": "t", "expireAfterSeconds": 60}]})
    found = indexes(db, "customers")
    assert found["idx_customers_name"]["unique"] is True
    assert found["idx_customers_at"]["expireAfterSeconds"] == 60
    reply = db.command({"insert": "customers", "documents": [{"_id": 3, "name": "ada"}]})
    assert reply["writeErrors"][0]["code"] == 11000  # the unique index is enforced
    db.command({"renameCollection": "customers", "to": "clients"})
    assert set(db.list_collection_names()) == {"clients"}
    assert db.command({"update": "clients", "updates": [{"q": {}, "u": {"$set": {"x": 1}}, "multi": True}]})["n"] == 2


# -- what it does not do (so a real mongod must confirm it) -------------------------------------------------


def test_it_does_not_keep_validators(db: Any) -> None:
    db.command({"create": "orders", "validator": {"$jsonSchema": {"required": ["customer_id"]}}})
    db.command({"collMod": "customers", "validator": {"$jsonSchema": {"required": ["name"]}}})
    options = {info["name"]: info.get("options") for info in db.list_collections()}
    assert options == {"orders": {}, "customers": {}}
    db["orders"].insert_one({"no_customer": True})  # mongod: DocumentValidationFailure (121)
    assert db["orders"].count_documents({}) == 1


def test_it_does_not_keep_index_names_directions_or_partial_filters(db: Any) -> None:
    spec = {"key": {"a": 1, "b": -1}, "name": "mine", "partialFilterExpression": {"a": {"$exists": True}}}
    db.command({"createIndexes": "customers", "indexes": [spec]})
    assert indexes(db, "customers")["idx_customers_a_b"] == {
        "v": 2,
        "key": {"a": 1, "b": 1},
        "name": "idx_customers_a_b",
    }
    db.command({"dropIndexes": "customers", "index": "mine"})  # mongod: IndexNotFound (27) -- nothing dropped here
    assert "idx_customers_a_b" in indexes(db, "customers")


def test_it_reports_no_error_for_missing_or_existing_namespaces(db: Any) -> None:
    # mongod 7.0: the same with the same options, NamespaceExists (48) with other ones
    assert db.command({"create": "customers", "capped": True, "size": 4096})["ok"] == 1
    assert db.command({"collMod": "missing", "validator": {}})["ok"] == 1  # mongod: NamespaceNotFound (26)
    assert db.command({"renameCollection": "missing", "to": "other"})["ok"] == 1  # mongod: NamespaceNotFound
    assert db.command({"dropIndexes": "customers", "index": "nope"})["ok"] == 1  # mongod: IndexNotFound (27)


def test_unknown_commands_are_answered_as_sqlite_pragmas(db: Any) -> None:
    assert db.command({"noSuchCommand": 1}) == {"ok": 1, "result": []}  # mongod: CommandNotFound (59)
    assert db.command({"currentOp": 1}) == {"ok": 1, "result": []}  # so no running operation can be seen


def test_it_runs_no_server_side_javascript(db: Any) -> None:
    from pymongo.errors import OperationFailure

    with pytest.raises(OperationFailure, match=r"'\$where' operator \(JavaScript\) is not supported"):
        db.command({"find": "customers", "filter": {"$where": "sleep(100) || true"}})  # so no command can be held


def test_rename_collection_renames_in_the_database_it_is_sent_to(db: Any, mongo_server: MongoServer) -> None:
    client = mongo_server.client()
    try:
        reply = client.admin.command({"renameCollection": f"{db.name}.customers", "to": f"{db.name}.clients"})
    finally:
        client.close()
    assert reply["ok"] == 1 and db.list_collection_names() == ["customers"]  # mongod renames it in db.name
