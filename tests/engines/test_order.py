"""Migration order in the per-shard protocol, against a real shard of every engine (SQLite, PostgreSQL,
MariaDB): the multi-row history read, ``out_of_order`` with nothing run, and a shard's catch-up and
baselining (engines/runner.py)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from airflow_provider_shardmigrate.core.catchup import catchup_steps
from airflow_provider_shardmigrate.core.deadline import Deadline
from airflow_provider_shardmigrate.core.scripts import load_migrations
from airflow_provider_shardmigrate.engines.runner import apply_to_shard, baseline_up_to, catch_up_shard, rollback_shard
from tests.engines.conftest import EngineShard

WriteMigration = Callable[..., Path]
OUT_OF_ORDER = "shardmigrate.out_of_order"
DROP_INDEX_MYSQL = "DROP INDEX {name} ON {table};"


def folder(write_migration: WriteMigration, tmp_path: Path) -> Any:
    """001 creates a table, 002 indexes it, 003 makes customer names unique (fails on a duplicate name)."""
    write_migration(
        "001_table", up="CREATE TABLE e_orders (id INT PRIMARY KEY, note VARCHAR(40));", down="DROP TABLE e_orders;"
    )
    write_migration(
        "002_index",
        up="CREATE INDEX idx_e_orders_note ON e_orders (note);",
        down="DROP INDEX idx_e_orders_note;",
        extra={"down.mysql.sql": DROP_INDEX_MYSQL.format(name="idx_e_orders_note", table="e_orders")},
    )
    write_migration(
        "003_unique",
        up="CREATE UNIQUE INDEX idx_customers_name ON customers (name);",
        down="DROP INDEX idx_customers_name;",
        extra={"down.mysql.sql": DROP_INDEX_MYSQL.format(name="idx_customers_name", table="customers")},
    )
    return load_migrations(tmp_path / "migrations")


def test_read_history_rows_reads_the_rows_asked_for_in_one_go(
    engine_shard: EngineShard, write_migration: WriteMigration, tmp_path: Path
) -> None:
    found = folder(write_migration, tmp_path)
    engine = engine_shard.engine()
    with engine.connected(Deadline(30)):
        assert engine.read_history_rows(["001_table"]) == {}  # no history table yet
    for migration in found.migrations[:2]:
        assert apply_to_shard(engine_shard.shard, migration).outcome == "succeeded"
    with engine.connected(Deadline(30), read_only=True):
        rows = engine.read_history_rows(["002_index", "001_table", "999_none", "001_table"])
        assert sorted(rows) == ["001_table", "002_index"]
        assert rows["002_index"].status == "applied" and rows["002_index"].checksum == found.migrations[1].checksum
        assert engine.read_history_rows([]) == {}


def test_out_of_order_is_refused_under_the_lock_with_nothing_run(
    engine_shard: EngineShard, write_migration: WriteMigration, tmp_path: Path
) -> None:
    found = folder(write_migration, tmp_path)
    table, index = found.get("001_table"), found.get("002_index")
    before = engine_shard.objects()
    for dry_run in (True, False):
        status = apply_to_shard(engine_shard.shard, index, requires=found.requires(index), dry_run=dry_run)
        assert status.outcome == "failed" and status.error_code == OUT_OF_ORDER, status
        assert "001_table (not_applied)" in str(status.error_message) and "nothing was run" in str(status.error_message)
    assert engine_shard.objects() - before <= engine_shard.history_objects  # only the bookkeeping table
    assert "002_index" not in engine_shard.history()

    assert apply_to_shard(engine_shard.shard, table).outcome == "succeeded"
    assert apply_to_shard(engine_shard.shard, index, requires=found.requires(index)).outcome == "succeeded"
    assert "idx_e_orders_note" in engine_shard.objects()

    # a required migration rolled back (or never applied) refuses again, naming what its row says
    assert rollback_shard(engine_shard.shard, index).outcome == "rolled_back"
    assert rollback_shard(engine_shard.shard, table).outcome == "rolled_back"
    refused = apply_to_shard(engine_shard.shard, index, requires=found.requires(index))
    assert refused.error_code == OUT_OF_ORDER and "001_table (rolled_back)" in str(refused.error_message)
    # independent of its predecessors when it says so (``depends_on: []``): it runs -- and fails on its own
    # where the table is missing (MongoDB's createIndexes creates the missing collection, so it succeeds there)
    independent = apply_to_shard(engine_shard.shard, index, requires=())
    assert independent.error_code != OUT_OF_ORDER
    if engine_shard.kind == "mongo":
        assert independent.outcome == "succeeded", independent
    else:
        assert independent.outcome == "failed" and independent.error_code == "shardmigrate.migration_failed"


def applied_at(engine_shard: EngineShard) -> dict[str, Any]:
    values = {mid: row["applied_at"] for mid, row in engine_shard.history().items() if row["status"] == "applied"}
    return {mid: datetime.fromisoformat(v) if isinstance(v, str) else v for mid, v in values.items()}


def test_catch_up_applies_what_a_shard_lacks_in_order_and_stops_at_its_first_failure(
    engine_shard: EngineShard, write_migration: WriteMigration, tmp_path: Path
) -> None:
    found = folder(write_migration, tmp_path)
    steps = catchup_steps(found)
    assert apply_to_shard(engine_shard.shard, found.get("001_table")).outcome == "succeeded"
    broken = engine_shard.sibling("dup")
    broken.query("INSERT INTO customers (name) VALUES ('ada')")  # 003 cannot make names unique here

    dry = catch_up_shard(engine_shard.shard, steps, dry_run=True)
    assert dry.outcome == "would_apply" and dry.would_apply == ("002_index", "003_unique") and dry.applied == ()
    assert sorted(engine_shard.history()) == ["001_table"]

    done = catch_up_shard(engine_shard.shard, steps)
    assert done.outcome == "succeeded" and done.applied == ("002_index", "003_unique"), done
    stamps = applied_at(engine_shard)
    assert stamps["001_table"] < stamps["002_index"] < stamps["003_unique"]  # applied in id order
    again = catch_up_shard(engine_shard.shard, steps)
    assert again.outcome == "already_applied" and "holds all 3" in str(again.error_message)

    stopped = catch_up_shard(broken.shard, steps)
    assert stopped.outcome == "failed" and stopped.failed_migration == "003_unique"
    assert stopped.applied == ("001_table", "002_index") and stopped.pending == ()
    assert str(stopped.error_message).startswith("003_unique: ")
    assert stopped.error_code == "shardmigrate.migration_failed"
    assert "idx_customers_name" not in broken.objects()


def test_baseline_up_to_records_without_running(
    engine_shard: EngineShard, write_migration: WriteMigration, tmp_path: Path
) -> None:
    found = folder(write_migration, tmp_path)
    steps = catchup_steps(found)
    status = baseline_up_to(engine_shard.shard, steps[:2])
    assert status.outcome == "succeeded" and status.applied == ("001_table", "002_index")
    history = engine_shard.history()
    assert {mid: row["status"] for mid, row in history.items()} == {"001_table": "baselined", "002_index": "baselined"}
    assert "e_orders" not in engine_shard.tables()  # nothing ran
    # the next migration now finds its predecessors there
    unique = found.get("003_unique")
    assert apply_to_shard(engine_shard.shard, unique, requires=found.requires(unique)).outcome == "succeeded"
