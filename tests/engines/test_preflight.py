"""The validate_before_apply gate on real SQLite shards (issue 9, bug 10): a shard that cannot be read
refuses the rollout, naming the shard and its error code."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from airflow_provider_shardmigrate.core.scripts import load_migration
from airflow_provider_shardmigrate.core.topology import Shard
from airflow_provider_shardmigrate.engines.preflight import check_touched_tables, touched_tables
from tests.conftest import SqliteFleet

WriteMigration = Callable[..., Path]


def test_identical_shards_pass(sqlite_fleet: SqliteFleet, write_migration: WriteMigration) -> None:
    for shard_id in ("a", "b"):
        sqlite_fleet.add(shard_id)
    result = check_touched_tables([Shard("a", "a"), Shard("b", "b")], load_migration(write_migration("001")))
    assert result.ok and result.error() is None
    assert result.tables == ("customers",)


def test_a_shard_that_cannot_be_read_refuses_the_rollout_naming_it_and_its_code(
    sqlite_fleet: SqliteFleet, write_migration: WriteMigration
) -> None:
    sqlite_fleet.add("a")
    sqlite_fleet.add("gone").unlink()  # its connection points at a file that is not there
    shards = [Shard("a", "a"), Shard("gone", "gone"), Shard("ghost", "no_such_connection")]

    result = check_touched_tables(shards, load_migration(write_migration("001")))

    assert not result.ok
    assert set(result.unreadable) == {"gone", "ghost"}
    error = result.error()
    assert error is not None and error.code == "shardmigrate.schema_comparison_failed"
    text = str(error)
    assert "shard 'gone': [shardmigrate.migration_failed]" in text and "does not exist" in text
    assert "shard 'ghost': [shardmigrate.invalid_topology]" in text and "no_such_connection" in text


def test_no_readable_shard_at_all_is_refused(sqlite_fleet: SqliteFleet, write_migration: WriteMigration) -> None:
    result = check_touched_tables([Shard("ghost", "no_such_connection")], load_migration(write_migration("001")))
    assert not result.ok and list(result.unreadable) == ["ghost"]


def test_drift_is_still_drift_detected(sqlite_fleet: SqliteFleet, write_migration: WriteMigration) -> None:
    sqlite_fleet.add("a")
    sqlite_fleet.add("b", "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT);")  # name is nullable here
    result = check_touched_tables([Shard("a", "a"), Shard("b", "b")], load_migration(write_migration("001")))
    error = result.error()
    assert error is not None and error.code == "shardmigrate.drift_detected"
    assert "table 'customers': b differ from a" in str(error)


def test_the_tables_of_a_long_insert_are_found(write_migration: WriteMigration) -> None:
    rows = ",\n".join(f"({i}, 'c {i}')" for i in range(1_249))
    migration = load_migration(write_migration("001", up=f"INSERT INTO customers (id, name) VALUES\n{rows};"))
    assert touched_tables(migration) == ("customers",)
