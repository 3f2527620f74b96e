"""The status DAG ``shardmigrate_status`` and the baseline DAG ``shardmigrate_baseline`` through real runs
(``dag.test()``) on SQLite shards: the matrix XCom in its contract shape, the schedule from the topology, and
baselining a shard up to an id without running anything."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_shardmigrate.core.scripts import load_migrations
from airflow_provider_shardmigrate.core.topology import load_topology
from airflow_provider_shardmigrate.dags.loader import load_migration_dags
from airflow_provider_shardmigrate.engines.runner import apply_to_shard

pytestmark = pytest.mark.slow

IDS = ["001_a", "002_b", "003_c"]
LEGEND = {
    "A": "applied",
    "B": "baselined",
    "F": "failed",
    "R": "running",
    "X": "rolled_back",
    "-": "not_applied",
    "?": "unreadable",
}


def project(sqlite_fleet: Any, tmp_path: Path, write_migration: Any, topology_extra: str = "") -> Path:
    for shard_id in ("s0", "s1", "s2"):
        sqlite_fleet.add(shard_id)
    (tmp_path / "shards.yaml").write_text(
        sqlite_fleet.topology(["s0", "s1", "s2"], inactive=("s2",))
        + "  - {id: gone, conn_id: no_such_conn}\n"
        + topology_extra
    )
    for index, migration_id in enumerate(IDS):
        write_migration(migration_id, up=f"CREATE TABLE t{index} (id INT);", down=f"DROP TABLE t{index};")
    return tmp_path


def dags(root: Path) -> dict[str, Any]:
    return load_migration_dags(root / "migrations", root / "shards.yaml", base_dir=root)


def test_the_status_dag_publishes_the_matrix(sqlite_fleet, tmp_path, write_migration, dag_runner):
    root = project(sqlite_fleet, tmp_path, write_migration, "status:\n  schedule: '*/15 * * * *'\n")
    found = load_migrations(root / "migrations")
    topology = load_topology(root / "shards.yaml")
    for migration in found.migrations[:2]:
        assert apply_to_shard(topology.get("s0"), migration).outcome == "succeeded"
    assert apply_to_shard(topology.get("s1"), found.migrations[0]).outcome == "succeeded"

    dag = dags(root)["shardmigrate_status"]
    assert dag.task_ids == ["publish"]
    assert dag.schedule == "*/15 * * * *"
    run = dag_runner(dag)
    assert run.state == "success", run.tasks
    data = run.xcoms[("publish", -1)]
    assert list(data) == ["generated_at", "migrations", "shards", "legend", "counts", "complete"]
    assert datetime.fromisoformat(data["generated_at"]).utcoffset().total_seconds() == 0
    assert data["migrations"] == IDS and data["legend"] == LEGEND and data["complete"] is False
    rows = {shard["id"]: shard for shard in data["shards"]}
    assert list(rows) == ["s0", "s1", "s2", "gone"]
    assert rows["s0"] == {"id": "s0", "active": True, "engine": "sqlite", "row": "AA-", "error": None}
    assert rows["s1"]["row"] == "A--" and rows["s2"] == {
        "id": "s2",
        "active": False,
        "engine": "sqlite",
        "row": "---",
        "error": None,
    }
    gone = rows["gone"]
    assert gone["row"] == "???" and gone["engine"] is None
    assert "shardmigrate.invalid_topology" in gone["error"] and "no_such_conn" in gone["error"]
    assert data["counts"]["001_a"] == {"applied": 2, "not_applied": 1, "unreadable": 1}


def test_the_status_schedule_defaults_to_hourly(sqlite_fleet, tmp_path, write_migration):
    dag = dags(project(sqlite_fleet, tmp_path, write_migration))["shardmigrate_status"]
    assert dag.schedule == "@hourly"


def test_the_baseline_dag_records_migrations_up_to_an_id_without_running(
    sqlite_fleet, tmp_path, write_migration, dag_runner
):
    root = project(sqlite_fleet, tmp_path, write_migration)
    found = load_migrations(root / "migrations")
    assert apply_to_shard(load_topology(root / "shards.yaml").get("s1"), found.migrations[0]).outcome == "succeeded"

    # a fresh DAG per run: dag.test() in one process keeps a run's conf in the DAG's Param objects
    run = dag_runner(dags(root)["shardmigrate_baseline"], {"shard": "S1", "up_to": "002_b"})
    assert run.state == "success", run.tasks
    result = run.xcoms[("baseline", -1)]
    assert result["shard_id"] == "s1" and result["outcome"] == "succeeded"
    assert result["applied"] == ["002_b"] and result["up_to"] == "002_b"
    history = sqlite_fleet.history("s1")
    assert {mid: row["status"] for mid, row in history.items()} == {"001_a": "applied", "002_b": "baselined"}
    assert "t1" not in sqlite_fleet.objects("s1")  # baselining runs nothing

    refused = dag_runner(dags(root)["shardmigrate_baseline"], {"shard": "nope", "up_to": "003_c"})
    assert refused.state == "failed" and refused.tasks[("baseline", -1)] == "upstream_failed"
    preflight = refused.xcoms[("preflight", -1)]
    assert preflight["error_code"] == "shardmigrate.invalid_params" and "'nope'" in preflight["error_message"]

    # the catch-up then applies only what is left
    catchup = dag_runner(dags(root)["shardmigrate_catchup"], {"shards": ["s1"]})
    assert catchup.report["shards"]["s1"]["applied"] == ["003_c"]
    assert "t2" in sqlite_fleet.objects("s1") and "t1" not in sqlite_fleet.objects("s1")
