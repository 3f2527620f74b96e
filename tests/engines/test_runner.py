"""The per-shard protocol's hardening (issue 9) on real SQLite shards: statements split before the lock
and once per script, history counters that are never trusted blindly, scripts without a statement."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from airflow_provider_shardmigrate.core import sqltext
from airflow_provider_shardmigrate.core.deadline import Deadline
from airflow_provider_shardmigrate.core.scripts import load_migration
from airflow_provider_shardmigrate.engines.runner import apply_to_shard, rollback_shard
from airflow_provider_shardmigrate.engines.sqlite import SqliteEngine
from tests.conftest import SqliteFleet
from tests.engines.conftest import shard

WriteMigration = Callable[..., Path]

UP = "CREATE TABLE audit (n INTEGER);\nINSERT INTO audit VALUES (1);\nINSERT INTO audit VALUES (2);\n"


class RecordingEngine(SqliteEngine):
    """The real SQLite engine, noting when it splits and when it holds the lock."""

    calls: list[str] = []

    def split(self, script: str) -> list[str]:
        self.calls.append("split")
        return super().split(script)

    @contextmanager
    def migration_lock(self, deadline: Deadline) -> Iterator[None]:
        with super().migration_lock(deadline):
            self.calls.append("locked")
            yield
        self.calls.append("unlocked")


def test_scripts_are_split_before_the_lock_and_once_per_process(
    sqlite_fleet: SqliteFleet, write_migration: WriteMigration
) -> None:
    for i in range(3):
        sqlite_fleet.add(f"lite-{i}")
    migration = load_migration(write_migration("030_audit", up=UP, down="DROP TABLE audit;"))
    RecordingEngine.calls = []
    misses = sqltext.split_cache_info().misses

    statuses = [
        apply_to_shard(shard(f"lite-{i}"), migration, engine_factory=lambda s: RecordingEngine(s.conn_id, s.id))
        for i in range(3)
    ]

    assert [s.outcome for s in statuses] == ["succeeded"] * 3
    assert RecordingEngine.calls == ["split", "locked", "unlocked"] * 3
    assert sqltext.split_cache_info().misses - misses <= 1  # the up script was split once for three shards


def running_row(fleet: SqliteFleet, shard_id: str, migration_id: str, checksum: str, applied: int, total: int) -> None:
    conn = sqlite3.connect(fleet.paths[shard_id])
    try:
        with conn:
            conn.execute(
                "CREATE TABLE shardmigrate_history (migration_id TEXT PRIMARY KEY, checksum TEXT NOT NULL, "
                "description TEXT, status TEXT NOT NULL, statements_applied INTEGER NOT NULL DEFAULT 0, "
                "statements_total INTEGER NOT NULL DEFAULT 0, applied_at TEXT, rolled_back_at TEXT, "
                "duration_ms INTEGER, dag_id TEXT, run_id TEXT, error TEXT)"
            )
            conn.execute(
                "INSERT INTO shardmigrate_history (migration_id, checksum, status, statements_applied, "
                "statements_total) VALUES (?, ?, 'running', ?, ?)",
                (migration_id, checksum, applied, total),
            )
    finally:
        conn.close()


def test_a_negative_statement_counter_is_refused_and_nothing_runs(
    sqlite_fleet: SqliteFleet, write_migration: WriteMigration
) -> None:
    sqlite_fleet.add("lite-0", "CREATE TABLE audit (n INTEGER);")
    up = "INSERT INTO audit VALUES (1);\nINSERT INTO audit VALUES (2);\n"
    migration = load_migration(
        write_migration("031_counts", up=up, down="DELETE FROM audit;", options={"transactional": False})
    )
    running_row(sqlite_fleet, "lite-0", "031_counts", migration.checksum, -1, 2)

    status = apply_to_shard(shard("lite-0"), migration)

    assert status.outcome == "failed" and status.error_code == "shardmigrate.invalid_script", status
    assert "history row '031_counts'" in status.error_message and "statements_applied=-1" in status.error_message
    assert sqlite_fleet.query("lite-0", "SELECT n FROM audit") == []  # statement 2 did not run (twice or at all)
    assert sqlite_fleet.history("lite-0")["031_counts"]["status"] == "running"  # the row is left for a human


def test_a_counter_above_the_total_never_marks_the_row_applied(
    sqlite_fleet: SqliteFleet, write_migration: WriteMigration
) -> None:
    sqlite_fleet.add("lite-0", "CREATE TABLE audit (n INTEGER);")
    up = "INSERT INTO audit VALUES (1);\nINSERT INTO audit VALUES (2);\n"
    migration = load_migration(
        write_migration("032_counts", up=up, down="DELETE FROM audit;", options={"transactional": False})
    )
    running_row(sqlite_fleet, "lite-0", "032_counts", migration.checksum, 5, 2)

    status = apply_to_shard(shard("lite-0"), migration)

    assert status.error_code == "shardmigrate.invalid_script" and "statements_applied=5" in status.error_message
    assert sqlite_fleet.history("lite-0")["032_counts"]["status"] == "running"


def test_a_down_script_without_a_statement_never_records_rolled_back(
    sqlite_fleet: SqliteFleet, write_migration: WriteMigration
) -> None:
    """Loading refuses such a script; a migration object built around the loader is refused at run time too."""
    from dataclasses import replace
    from types import MappingProxyType

    sqlite_fleet.add("lite-0")
    migration = load_migration(write_migration("033_down", up=UP, down="DROP TABLE audit;"))
    assert apply_to_shard(shard("lite-0"), migration).outcome == "succeeded"
    hollow = replace(migration, scripts=MappingProxyType({**migration.scripts, "down.sql": "-- nothing to undo\n"}))

    status = rollback_shard(shard("lite-0"), hollow)

    assert status.outcome == "failed" and status.error_code == "shardmigrate.invalid_script", status
    assert "down script" in status.error_message and "holds no statement" in status.error_message
    assert sqlite_fleet.history("lite-0")["033_down"]["status"] == "applied"
    assert "audit" in sqlite_fleet.objects("lite-0")
