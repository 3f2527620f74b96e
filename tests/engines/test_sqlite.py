"""The SQLite engine on real shard files (no mocks): errors, locks, the in-database timeout, history, rollback."""

from __future__ import annotations

import fcntl
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from airflow_provider_shardmigrate.core.scripts import load_migration
from airflow_provider_shardmigrate.engines.runner import apply_to_shard, rollback_shard
from tests.conftest import SqliteFleet
from tests.engines.conftest import shard

WriteMigration = Callable[..., Path]

UP = """
CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL, note TEXT DEFAULT 'a;b');
CREATE INDEX idx_orders_customer ON orders (customer_id);
CREATE TRIGGER orders_note AFTER INSERT ON orders BEGIN UPDATE orders SET note = 'x' WHERE id = NEW.id; END;
"""
DOWN = "DROP TRIGGER orders_note;\nDROP TABLE orders;\n"


def test_apply_writes_history_and_rerun_is_already_applied(
    sqlite_fleet: SqliteFleet, write_migration: WriteMigration
) -> None:
    sqlite_fleet.add("lite-0")
    migration = load_migration(write_migration("001_orders", up=UP, down=DOWN, options={"description": "orders"}))

    status = apply_to_shard(shard("lite-0"), migration)

    assert status.outcome == "succeeded", status
    assert {"orders", "idx_orders_customer", "orders_note"} <= sqlite_fleet.objects("lite-0")
    row = sqlite_fleet.history("lite-0")["001_orders"]
    assert (row["status"], row["statements_applied"], row["statements_total"]) == ("applied", 3, 3)
    assert row["checksum"] == migration.checksum and row["description"] == "orders" and row["applied_at"]
    assert apply_to_shard(shard("lite-0"), migration).outcome == "already_applied"


def test_failing_statement_rolls_back_everything(sqlite_fleet: SqliteFleet, write_migration: WriteMigration) -> None:
    sqlite_fleet.add("lite-0")
    migration = load_migration(
        write_migration("002_broken", up="CREATE TABLE first_effect (id INTEGER);\nINSERT INTO nope VALUES (1);\n")
    )

    status = apply_to_shard(shard("lite-0"), migration)

    assert status.error_code == "shardmigrate.migration_failed" and "nope" in status.error_message
    assert "first_effect" not in sqlite_fleet.objects("lite-0")
    assert sqlite_fleet.history("lite-0") == {}


def test_rollback_then_reapply(sqlite_fleet: SqliteFleet, write_migration: WriteMigration) -> None:
    sqlite_fleet.add("lite-0")
    migration = load_migration(write_migration("001_orders", up=UP, down=DOWN))
    assert apply_to_shard(shard("lite-0"), migration).outcome == "succeeded"

    assert rollback_shard(shard("lite-0"), migration).outcome == "rolled_back"

    assert "orders" not in sqlite_fleet.objects("lite-0")
    row = sqlite_fleet.history("lite-0")["001_orders"]
    assert row["status"] == "rolled_back" and row["rolled_back_at"] and row["applied_at"]
    assert apply_to_shard(shard("lite-0"), migration).outcome == "succeeded"
    assert sqlite_fleet.history("lite-0")["001_orders"]["status"] == "applied"


def test_missing_database_file_is_a_clear_failure(
    sqlite_fleet: SqliteFleet, write_migration: WriteMigration, monkeypatch: object
) -> None:
    path = sqlite_fleet.add("lite-0")
    path.unlink()
    migration = load_migration(write_migration("001_orders", up=UP, down=DOWN))

    status = apply_to_shard(shard("lite-0"), migration)

    assert status.error_code == "shardmigrate.migration_failed"
    assert str(path) in status.error_message and "does not exist" in status.error_message
    assert not path.exists()  # no empty database was created in its place


def test_database_locked_by_another_writer_is_lock_timeout(
    sqlite_fleet: SqliteFleet, write_migration: WriteMigration
) -> None:
    path = sqlite_fleet.add("lite-0")
    migration = load_migration(write_migration("001_orders", up=UP, down=DOWN, options={"per_shard_timeout": 1}))
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        started = time.monotonic()
        status = apply_to_shard(shard("lite-0"), migration)
        elapsed = time.monotonic() - started
    finally:
        other.execute("ROLLBACK")
        other.close()

    assert status.error_code == "shardmigrate.lock_timeout", status
    assert "locked" in status.error_message
    assert elapsed < 3.0
    assert "orders" not in sqlite_fleet.objects("lite-0")


def test_migration_lock_held_by_another_process_is_lock_timeout(
    sqlite_fleet: SqliteFleet, write_migration: WriteMigration
) -> None:
    path = sqlite_fleet.add("lite-0")
    migration = load_migration(write_migration("001_orders", up=UP, down=DOWN, options={"per_shard_timeout": 0.5}))
    fd = os.open(path.with_name(path.name + ".shardmigrate-lock"), os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        status = apply_to_shard(shard("lite-0"), migration)
    finally:
        os.close(fd)

    assert status.error_code == "shardmigrate.lock_timeout"
    assert apply_to_shard(shard("lite-0"), migration).outcome == "succeeded"  # free again once released


def test_timeout_interrupts_a_long_statement(sqlite_fleet: SqliteFleet, write_migration: WriteMigration) -> None:
    sqlite_fleet.add("lite-0")
    endless = (
        "CREATE TABLE slow_effect (id INTEGER);\n"
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n;\n"
    )
    migration = load_migration(write_migration("003_slow", up=endless, options={"per_shard_timeout": 1}))

    started = time.monotonic()
    status = apply_to_shard(shard("lite-0"), migration)
    elapsed = time.monotonic() - started

    assert status.error_code == "shardmigrate.migration_timeout", status
    assert "interrupted" in status.error_message
    assert elapsed < 2.5
    assert "slow_effect" not in sqlite_fleet.objects("lite-0")
    assert sqlite_fleet.history("lite-0") == {}
