"""Catch-up planning (core/catchup.py): which migrations a shard still lacks, ``up_to``, the ``shards``
selection, and the per-shard status shape."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from airflow_provider_shardmigrate.core.catchup import (
    CatchupStatus,
    catchup_statuses_in,
    catchup_steps,
    is_selected,
    still_to_do,
    unknown_shards,
    up_to,
)
from airflow_provider_shardmigrate.core.errors import InvalidParamsError
from airflow_provider_shardmigrate.core.history import HistoryRecord, HistoryStatus
from airflow_provider_shardmigrate.core.scripts import load_migrations
from airflow_provider_shardmigrate.core.status import Outcome, ShardStatus
from airflow_provider_shardmigrate.core.topology import Shard

WriteMigration = Callable[..., Path]


def test_steps_follow_the_folder_order_and_keep_broken_migrations(write_migration: WriteMigration, tmp_path: Path):
    write_migration("002_b")
    write_migration("001_a")
    broken = write_migration("003_broken")
    (broken / "up.sql").write_text("-- nothing\n")
    steps = catchup_steps(load_migrations(tmp_path / "migrations"))
    assert [step.id for step in steps] == ["001_a", "002_b", "003_broken"]
    assert steps[1].requires == ("001_a",) and steps[1].migration is not None
    assert steps[2].migration is None and "holds no SQL statement" in str(steps[2].error)


def test_still_to_do_skips_held_rows_with_the_same_checksum(write_migration: WriteMigration, tmp_path: Path):
    for migration_id in ("001_a", "002_b", "003_c", "004_d"):
        write_migration(migration_id)
    steps = catchup_steps(load_migrations(tmp_path / "migrations"))
    a, b, c, _ = (step.migration for step in steps)
    assert a is not None and b is not None and c is not None
    rows = {
        "001_a": HistoryRecord("001_a", a.checksum, HistoryStatus.APPLIED),
        "002_b": HistoryRecord("002_b", "sha256:other", HistoryStatus.APPLIED),  # left to the protocol to refuse
        "003_c": HistoryRecord("003_c", c.checksum, HistoryStatus.ROLLED_BACK),
    }
    assert [step.id for step in still_to_do(steps, rows)] == ["002_b", "003_c", "004_d"]
    rows["003_c"] = HistoryRecord("003_c", c.checksum, HistoryStatus.BASELINED)
    assert [step.id for step in still_to_do(steps, rows)] == ["002_b", "004_d"]


def test_up_to() -> None:
    ids = ["001_a", "002_b", "003_c"]
    assert up_to(ids, "") == ids and up_to(ids, None) == ids
    assert up_to(ids, "002_b") == ["001_a", "002_b"]
    with pytest.raises(InvalidParamsError, match="up_to '009' is not a migration of this folder"):
        up_to(ids, "009")


def test_selection_is_case_insensitive_and_defaults_to_active_shards() -> None:
    active, inactive = Shard("Eu-1", "c1"), Shard("new-2", "c2", active=False)
    assert is_selected(active, []) and not is_selected(inactive, [])
    assert is_selected(inactive, ["NEW-2"]) and not is_selected(active, ["new-2"])
    assert unknown_shards(["eu-1", "nope"], [active, inactive]) == ["nope"]


def test_catchup_status_round_trips_through_xcom_and_reads_as_a_shard_status() -> None:
    status = CatchupStatus(
        "s1",
        Outcome.FAILED,
        12,
        "shardmigrate.migration_failed",
        "003_c: boom",
        applied=("001_a", "002_b"),
        failed_migration="003_c",
        pending=("004_d",),
    )
    data = status.to_xcom()
    assert data["applied"] == ["001_a", "002_b"] and data["pending"] == ["004_d"]
    assert data["failed_migration"] == "003_c" and data["would_apply"] == []
    assert CatchupStatus.from_xcom(data) == status
    assert ShardStatus.is_xcom(data) and ShardStatus.from_xcom(data).outcome is Outcome.FAILED
    assert catchup_statuses_in([[data], data, {"other": 1}]) == [status, status]
