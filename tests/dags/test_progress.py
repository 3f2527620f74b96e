"""Progress read back from Airflow: the plan the run published (not one rebuilt from task ids), and a run's
progress computed from its task instances and XComs -- what the plugin's endpoint serves."""

from __future__ import annotations

import pytest
import yaml

from airflow_provider_shardmigrate.core.options import MigrationOptions, Strategy
from airflow_provider_shardmigrate.core.plans import RolloutPlan, plan_rollout
from airflow_provider_shardmigrate.core.topology import parse_topology
from airflow_provider_shardmigrate.dags.layout import PLAN_XCOM_KEY, PREFLIGHT_TASK_ID
from airflow_provider_shardmigrate.dags.migration import build_migration_dag
from airflow_provider_shardmigrate.progress import read_progress

pytestmark = pytest.mark.slow

UNIQUE_UP = "CREATE UNIQUE INDEX idx_u ON customers (name);"


def published_plan(dag_id: str, run_id: str) -> RolloutPlan:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = (
            session.query(XComModel)
            .filter_by(dag_id=dag_id, run_id=run_id, task_id=PREFLIGHT_TASK_ID, key=PLAN_XCOM_KEY)
            .one()
        )
        return RolloutPlan.from_dict(XComModel.deserialize_value(row))


def progress_of(dag, run) -> dict:
    from airflow.utils.session import create_session

    with create_session() as session:
        return read_progress(session, dag_id=dag.dag_id, run_id=run.run_id, migration_id=dag.dag_id[14:]).to_dict()


def test_the_run_publishes_the_plan_it_was_built_from(sqlite_fleet, write_migration, dag_runner):
    for i in range(7):
        sqlite_fleet.add(f"p{i}")
    topology = parse_topology(yaml.safe_load(sqlite_fleet.topology()), "shards.yaml")
    options = {"strategy": "parallel", "max_parallelism": 3}
    dag = build_migration_dag(write_migration("001_plan", options=options), topology)
    run = dag_runner(dag)
    plan = published_plan(dag.dag_id, run.run_id)
    built = plan_rollout(topology.shards, MigrationOptions(strategy=Strategy.PARALLEL, max_parallelism=3))
    assert plan.to_dict() == built.to_dict()  # shard ids only: no connection travels in the plan
    assert [w.concurrency for w in plan.waves] == [3]  # not 7: the wave runs 3 at a time
    progress = progress_of(dag, run)
    assert progress["total_shards"] == 7 and progress["completed_shards"] == 7
    assert progress["phase"] == "Completed"


def test_progress_of_a_finished_run(sqlite_fleet, write_migration, dag_runner):
    for i in range(4):
        sqlite_fleet.add(f"s{i}")
    sqlite_fleet.execute("s2", "INSERT INTO customers (name) VALUES ('ada');")
    topology = parse_topology(yaml.safe_load(sqlite_fleet.topology()), "shards.yaml")
    migration = write_migration(
        "002_progress",
        up=UNIQUE_UP,
        down="DROP INDEX idx_u;",
        options={"strategy": "rolling", "max_parallelism": 2},
    )
    dag = build_migration_dag(migration, topology)
    run = dag_runner(dag, {"stop_on_first_failure": False})
    data = progress_of(dag, run)
    assert data["shards"] == {"s0": "succeeded", "s1": "succeeded", "s2": "failed", "s3": "succeeded"}
    assert (data["total_shards"], data["completed_shards"], data["failed_shards"]) == (4, 3, 1)
    assert data["rolled_back_shards"] == 0
    assert data["phase"] == "Failed" and data["is_finished"] is True and data["remaining_shards"] == 0


def test_rolled_back_shards_are_not_counted_as_completed(sqlite_fleet, write_migration, dag_runner):
    for i in range(3):
        sqlite_fleet.add(f"r{i}")
    sqlite_fleet.execute("r2", "INSERT INTO customers (name) VALUES ('ada');")
    topology = parse_topology(yaml.safe_load(sqlite_fleet.topology()), "shards.yaml")
    migration = write_migration(
        "003_rolled_back",
        up=UNIQUE_UP,
        down="DROP INDEX idx_u;",
        options={"strategy": "sequential", "stop_on_first_failure": False, "auto_rollback": True},
    )
    dag = build_migration_dag(migration, topology)
    run = dag_runner(dag)
    data = progress_of(dag, run)
    assert data["shards"] == {"r0": "rolled_back", "r1": "rolled_back", "r2": "failed"}
    assert (data["completed_shards"], data["rolled_back_shards"], data["failed_shards"]) == (0, 2, 1)
    assert data["phase"] == "RolledBack"


@pytest.mark.parametrize("strategy", ["parallel", "sequential", "rolling"])
def test_a_running_lane_is_on_the_first_of_its_shards_without_a_status(strategy):
    """Lanes push the statuses of the shards they finished (``statuses:<n>``) and nothing else while they work:
    progress finds the shard a running lane is on from the deal (lane i: shards i, i+L, ...), a rolling lane's
    from its current batch."""
    from airflow_provider_shardmigrate.core.options import Execution
    from airflow_provider_shardmigrate.core.status import Outcome, ShardStatus
    from airflow_provider_shardmigrate.core.topology import Shard
    from airflow_provider_shardmigrate.dags.layout import TaskLayout, lane_statuses_key
    from airflow_provider_shardmigrate.progress import RunRecord, shard_outcomes

    shards = tuple(Shard(f"s{i}", f"s{i}") for i in range(7))
    options = MigrationOptions(strategy=Strategy(strategy), max_parallelism=3, execution=Execution.LANES)
    layout = TaskLayout.of(plan_rollout(shards, options))
    done = ShardStatus("s0", Outcome.SUCCEEDED, 5, None, None).to_xcom()
    record = RunRecord(
        tasks=[("shards.lanes", 0, "running"), ("shards.lanes", 1, "running"), ("shards.lanes", 2, "success")],
        xcoms=[("shards.lanes", lane_statuses_key(0), [done])],
    )
    outcomes, running = shard_outcomes(layout, record)
    assert outcomes == {"s0": Outcome.SUCCEEDED}
    expected = {
        "parallel": ["s3", "s1"],  # lane 1 ran s0 and is on s3; lane 2 on s1; lane 3 is not running
        "sequential": ["s1"],  # one lane, in topology order
        "rolling": ["s1", "s2"],  # one lane instance, batch (s0, s1, s2) at once
    }[strategy]
    assert running == expected
