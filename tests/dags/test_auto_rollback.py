"""Auto-rollback as the Grid shows it: one rollback task instance per reverted shard, labelled with the shard,
failed where the rollback failed; the report, progress and the gate say the same."""

from __future__ import annotations

import pytest
import yaml

from airflow_provider_shardmigrate.core.topology import parse_topology
from airflow_provider_shardmigrate.dags.migration import build_migration_dag
from airflow_provider_shardmigrate.progress import read_progress
from tests.conftest import BASE_SCHEMA

pytestmark = pytest.mark.slow

GUARD = "CREATE TABLE guard (id INTEGER);"
UP = "CREATE UNIQUE INDEX idx_u ON customers (name);"
# The down script needs the guard table: on a shard without it the rollback fails (and changes nothing).
DOWN = "DROP INDEX idx_u;\nDELETE FROM guard;"


def fleet(sqlite_fleet, *, bad: str, unguarded: tuple[str, ...] = ()):
    for i in range(5):
        shard_id = f"s{i}"
        schema = BASE_SCHEMA + ("" if shard_id in unguarded else GUARD)
        if shard_id == bad:
            schema += "INSERT INTO customers (name) VALUES ('ada');"  # the unique index fails here
        sqlite_fleet.add(shard_id, schema)
    return parse_topology(yaml.safe_load(sqlite_fleet.topology()), "shards.yaml")


def rollback_instances(run) -> dict[str, str]:
    return {
        label: state
        for (task_id, map_index), state in run.tasks.items()
        if task_id == "rollbacks.rollback"
        for label in [run.labels_by_task.get((task_id, map_index))]
    }


@pytest.mark.parametrize("execution", ["per_shard", "lanes"])
def test_each_reverted_shard_is_its_own_task_instance(execution, sqlite_fleet, write_migration, dag_runner):
    topology = fleet(sqlite_fleet, bad="s3")
    options = {
        "strategy": "parallel",
        "max_parallelism": 2,
        "stop_on_first_failure": False,
        "auto_rollback": True,
        "execution": execution,
    }
    migration = write_migration(f"001_auto_{execution}", up=UP, down=DOWN, options=options)
    dag = build_migration_dag(migration, topology)
    run = dag_runner(dag)
    assert run.state == "failed"
    assert run.outcomes() == {
        "s0": "rolled_back",
        "s1": "rolled_back",
        "s2": "rolled_back",
        "s3": "failed",
        "s4": "rolled_back",
    }
    instances = rollback_instances(run)
    if execution == "per_shard":
        assert instances == {"s0": "success", "s1": "success", "s2": "success", "s4": "success"}
    else:  # one instance per lane of shards, labelled by its shards
        assert set(instances.values()) == {"success"} and len(instances) == 2
        assert all("shards)" in label for label in instances)
    assert run.report["rolled_back_count"] == 4 and run.report["succeeded_count"] == 0
    for shard_id in ("s0", "s1", "s2", "s4"):
        assert "idx_u" not in sqlite_fleet.objects(shard_id)
        assert sqlite_fleet.history(shard_id)[f"001_auto_{execution}"]["status"] == "rolled_back"
    from airflow.utils.session import create_session

    with create_session() as session:
        progress = read_progress(session, dag_id=dag.dag_id, run_id=run.run_id, migration_id=f"001_auto_{execution}")
    assert progress.current_phase == "RolledBack"
    assert (progress.completed_shards, progress.rolled_back_shards, progress.failed_shards) == (0, 4, 1)


def test_a_shard_that_fails_to_revert_is_a_failed_rollback_instance(sqlite_fleet, write_migration, dag_runner):
    topology = fleet(sqlite_fleet, bad="s3", unguarded=("s1",))
    options = {"strategy": "sequential", "stop_on_first_failure": False, "auto_rollback": True}
    migration = write_migration("002_revert_fails", up=UP, down=DOWN, options=options)
    run = dag_runner(build_migration_dag(migration, topology))
    assert rollback_instances(run) == {"s0": "success", "s1": "failed", "s2": "success", "s4": "success"}
    s1 = run.report["shards"]["s1"]
    assert s1["outcome"] == "succeeded"  # it still holds the migration
    assert s1["error_code"] == "shardmigrate.rollback_failed" and "no such table: guard" in s1["error_message"]
    assert "idx_u" in sqlite_fleet.objects("s1")
    from airflow_provider_shardmigrate.core.outcomes import gate_failure
    from airflow_provider_shardmigrate.core.status import MigrationResult

    assert run.tasks[("gate", -1)] == "failed"
    gate = str(gate_failure(MigrationResult.from_xcom(run.report)))  # the message the gate fails with
    assert "- s1: succeeded [shardmigrate.rollback_failed] rollback failed:" in gate
    assert "- s3: failed [shardmigrate.migration_failed]" in gate
