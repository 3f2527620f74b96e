"""The shard x migration matrix (core/fleet_status.py): letters, counts, completeness, exit codes, the XCom
shape, and its size for 10,000 shards x 50 migrations."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from airflow_provider_shardmigrate.core.fleet_status import LEGEND, ShardHistory, fleet_status
from airflow_provider_shardmigrate.core.history import HistoryRecord, HistoryStatus
from airflow_provider_shardmigrate.core.topology import Shard

IDS = ["001_a", "002_b", "003_c"]
WHEN = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def row(migration_id: str, status: HistoryStatus) -> HistoryRecord:
    return HistoryRecord(migration_id, "sha256:x", status)


def test_the_matrix_spells_every_state_and_counts_them() -> None:
    shards = [Shard("s0", "c0"), Shard("s1", "c1"), Shard("s2", "c2"), Shard("old", "c3", active=False)]
    reads = {
        "s0": ShardHistory("postgres", (row("001_a", HistoryStatus.APPLIED), row("002_b", HistoryStatus.BASELINED))),
        "s1": ShardHistory(
            "mysql",
            (
                row("001_a", HistoryStatus.FAILED),
                row("002_b", HistoryStatus.RUNNING),
                row("003_c", HistoryStatus.ROLLED_BACK),
                row("zz_gone", HistoryStatus.APPLIED),  # no longer in the folder: not shown
            ),
        ),
        "s2": ShardHistory("sqlite", error="[shardmigrate.migration_timeout] did not answer, password=***"),
    }
    status = fleet_status(IDS, shards, reads, generated_at=WHEN)
    data = status.to_xcom()
    assert list(data) == ["generated_at", "migrations", "shards", "legend", "counts", "complete"]
    assert data["generated_at"] == "2026-03-01T12:00:00+00:00"
    assert data["migrations"] == IDS
    assert data["legend"] == LEGEND
    assert data["shards"] == [
        {"id": "s0", "active": True, "engine": "postgres", "row": "AB-", "error": None},
        {"id": "s1", "active": True, "engine": "mysql", "row": "FRX", "error": None},
        {
            "id": "s2",
            "active": True,
            "engine": "sqlite",
            "row": "???",
            "error": "[shardmigrate.migration_timeout] did not answer, password=***",
        },
        {"id": "old", "active": False, "engine": None, "row": "???", "error": "not read"},
    ]
    assert data["counts"] == {
        "001_a": {"applied": 1, "failed": 1, "unreadable": 2},
        "002_b": {"baselined": 1, "running": 1, "unreadable": 2},
        "003_c": {"not_applied": 1, "rolled_back": 1, "unreadable": 2},
    }
    assert data["complete"] is False
    assert status.exit_code == 2  # an active shard could not be read


def test_exit_codes_follow_the_active_shards() -> None:
    applied = tuple(row(mid, HistoryStatus.APPLIED) for mid in IDS)
    shards = [Shard("s0", "c0"), Shard("off", "c1", active=False)]
    whole = {"s0": ShardHistory("sqlite", applied), "off": ShardHistory("sqlite", error="[x] unreachable")}
    status = fleet_status(IDS, shards, whole)
    assert status.complete and status.exit_code == 0  # an inactive shard does not count
    partial = {"s0": ShardHistory("sqlite", applied[:2]), "off": ShardHistory("sqlite", ())}
    status = fleet_status(IDS, shards, partial)
    assert not status.complete and status.exit_code == 1
    assert json.loads(json.dumps(status.to_xcom()))["shards"][0]["row"] == "AA-"


def test_ten_thousand_shards_by_fifty_migrations_stay_compact() -> None:
    ids = [f"2026{i:04d}_migration_{i}" for i in range(50)]
    shards = [Shard(f"shard-{i:05d}", f"c{i}") for i in range(10_000)]
    reads = {
        shard.id: ShardHistory("postgres", tuple(row(mid, HistoryStatus.APPLIED) for mid in ids[: i % 51]))
        for i, shard in enumerate(shards)
    }
    data = fleet_status(ids, shards, reads).to_xcom()
    size = len(json.dumps(data, separators=(",", ":")))
    cells = 10_000 * 50  # one character per cell: the floor of any encoding of the matrix
    ids_and_engines = sum(len(shard.id) + len("postgres") for shard in shards)
    per_shard = (size - cells - ids_and_engines) / 10_000
    print(f"\n10,000 x 50 fleet status: {size:,} bytes of JSON, {per_shard:.0f} bytes of keys per shard")
    # the shape's keys and punctuation are a fixed cost per shard; counts and legend are per migration
    assert per_shard < 80
    assert size < 1_400_000
