"""The contract suite's SQL, spoken to MongoDB: how the one suite (tests/engines/test_contract.py) runs
against MongoDB shards without a second copy of every test.

The suite writes its migrations in a small SQL vocabulary. For a MongoDB shard each statement becomes the
command with the same effect, carrying the SQL as its ``comment`` (so the SQL shows in error messages, history
rows and ``currentOp`` exactly where the suite looks for it):

============================================  ==================================================================
``CREATE TABLE t (...)``                      ``{"insert": "t", "documents": [{"_id": "table"}]}`` (see below)
``DROP TABLE t``                              ``{"drop": "t"}``
``INSERT INTO t VALUES (n)``                  ``{"insert": "t", "documents": [{"n": n}]}``
``INSERT INTO t (c) VALUES ('text')``         ``{"insert": "t", "documents": [{"c": "text"}]}``
``ALTER TABLE t ADD COLUMN c ...``            ``{"update": "t", ... {"$set": {"c": null}}, "multi": true}`` (a field)
``ALTER TABLE t DROP COLUMN c``               the same with ``$unset``
``CREATE INDEX i ON t (c)``                   ``{"createIndexes": "t", "indexes": [{"key": {"c": 1}, "name": "i"}]}``
``DROP INDEX i ON t`` / ``DROP INDEX i``      ``{"dropIndexes": "t", "index": "i"}`` (without ``ON``: ``i`` is
                                              ``idx_<t>_<column>``)
a JSON object                                 that command
============================================  ==================================================================

A collection exists once a document is in it, so ``CREATE TABLE`` inserts a marker document: creating the same
table twice then fails as in SQL (``E11000``), which MongoDB's ``create`` does not do (mongod 7.0 answers ``ok``
for an existing collection with the same options, and so does the emulator). The marker has no ``n`` field, so
the suite's ``SELECT n``/``count(*)`` (tests/engines/conftest.py ``MongoShard.query``) do not see it.

The statements the suite uses *because they fail* -- an insert into ``no_such_table``, dropping ``not_there``
-- would succeed on MongoDB (it creates a collection on first write and drops a missing one quietly), so they
become the failure MongoDB does have: an insert of the same ``_id`` twice (``E11000``, code 11000). Anything
else is refused here, so a new contract test cannot silently run nothing against MongoDB.
"""

from __future__ import annotations

import json
import re
from typing import Any

from airflow_provider_shardmigrate.core.sqltext import split_sql

#: Tables the suite names only to make a statement fail.
FAILING_TABLES = frozenset({"no_such_table", "not_there"})

_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"CREATE TABLE (\w+)\s*\(.*\)", re.I | re.S), "create"),
    (re.compile(r"DROP TABLE (\w+)", re.I), "drop"),
    (re.compile(r"INSERT INTO (\w+)(?:\s*\([^)]*\))? VALUES \((\d+)\)", re.I), "insert"),
    (re.compile(r"INSERT INTO (\w+)\s*\((\w+)\) VALUES \('([^']*)'\)", re.I), "insert_text"),
    (re.compile(r"ALTER TABLE (\w+) ADD COLUMN (\w+)\b.*", re.I | re.S), "add_column"),
    (re.compile(r"ALTER TABLE (\w+) DROP COLUMN (\w+)", re.I), "drop_column"),
    (re.compile(r"CREATE (UNIQUE )?INDEX (\w+) ON (\w+)\s*\((\w+)\)", re.I), "create_index"),
    (re.compile(r"DROP INDEX (\w+)(?: ON (\w+))?", re.I), "drop_index"),
]


def _failing(table: str, sql: str) -> dict[str, Any]:
    return {"insert": table, "comment": sql, "documents": [{"_id": "twice"}, {"_id": "twice"}]}


def _command(kind: str, groups: tuple[str, ...], sql: str) -> dict[str, Any]:
    if kind in ("create", "drop", "insert") and groups[0] in FAILING_TABLES:
        return _failing(groups[0], sql)
    if kind == "create":
        return {"insert": groups[0], "comment": sql, "documents": [{"_id": "table"}]}
    if kind == "drop":
        return {"drop": groups[0], "comment": sql}
    if kind == "insert":
        return {"insert": groups[0], "comment": sql, "documents": [{"n": int(groups[1])}]}
    if kind == "insert_text":
        return {"insert": groups[0], "comment": sql, "documents": [{groups[1]: groups[2]}]}
    if kind in ("add_column", "drop_column"):
        change = {"$set": {groups[1]: None}} if kind == "add_column" else {"$unset": {groups[1]: ""}}
        return {"update": groups[0], "comment": sql, "updates": [{"q": {}, "u": change, "multi": True}]}
    if kind == "create_index":
        index = {"key": {groups[3]: 1}, "name": groups[1], "unique": bool(groups[0])}
        return {"createIndexes": groups[2], "comment": sql, "indexes": [index]}
    table = groups[1] or groups[0].split("_")[1]  # drop_index: idx_<table>_<column>
    return {"dropIndexes": table, "comment": sql, "index": groups[0]}


def to_command(statement: str) -> dict[str, Any]:
    """The MongoDB command for one statement of the suite's vocabulary (or a JSON command as it is)."""
    sql = " ".join(statement.strip().rstrip(";").split())
    if sql.startswith("{"):
        command: dict[str, Any] = json.loads(sql)
        return command
    for pattern, kind in _RULES:
        match = pattern.fullmatch(sql)
        if match:
            return _command(kind, match.groups(), sql)
    raise AssertionError(
        f"the MongoDB contract shard has no translation for {sql!r} (see tests/engines/mongo_dialect.py)"
    )


def is_json(text: str) -> bool:
    return text.lstrip().startswith(("[", "{"))


def to_commands(text: str) -> list[dict[str, Any]]:
    """Every command of a script: a JSON script as it is, SQL statement by statement."""
    if is_json(text):
        parsed = json.loads(text)
        return [parsed] if isinstance(parsed, dict) else list(parsed)
    return [to_command(statement) for statement in split_sql(text)]


def to_script(text: str) -> str:
    """``up.mongo.json`` text for a script of the suite."""
    return json.dumps(to_commands(text), indent=1)
