"""Progress read back from Airflow: the plan recovered from a (serialized) DAG, and a finished run's
progress computed from its task instances and XComs -- what the plugin's endpoint serves."""

from __future__ import annotations

import pytest
import yaml

from airflow_provider_shardmigrate.core.options import MigrationOptions, Strategy
from airflow_provider_shardmigrate.core.plans import plan_rollout
from airflow_provider_shardmigrate.core.topology import parse_topology
from airflow_provider_shardmigrate.dags.migration import build_migration_dag
from airflow_provider_shardmigrate.progress import plan_from_dag, read_progress

TOPOLOGY = parse_topology({"shards": [{"id": f"s.{i}", "conn_id": f"c{i}"} for i in range(7)]}, "t.yaml")


def shape(plan):
    return plan.strategy, [(w.kind, [s.id for s in w.shards]) for w in plan.waves]


@pytest.mark.parametrize("strategy", list(Strategy))
def test_plan_is_recovered_from_the_dag_and_its_serialized_form(strategy, write_migration):
    from airflow.serialization.serialized_objects import DagSerialization

    options = {"strategy": strategy.value, "max_parallelism": 3, "canary": "s.4"}
    dag = build_migration_dag(write_migration("001_p", options=options), TOPOLOGY)
    expected = plan_rollout(TOPOLOGY.shards, MigrationOptions(strategy=strategy, max_parallelism=3, canary="s.4"))
    assert shape(plan_from_dag(dag)) == shape(expected)
    serialized = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))
    assert shape(plan_from_dag(serialized)) == shape(expected)


def test_a_dag_that_is_not_a_rollout_has_no_plan():
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.sdk import DAG

    with DAG("other", schedule=None) as dag:
        EmptyOperator(task_id="x")
    assert plan_from_dag(dag) is None


@pytest.mark.slow
def test_progress_of_a_finished_run(sqlite_fleet, write_migration, dag_runner):
    from airflow.utils.session import create_session

    for i in range(4):
        sqlite_fleet.add(f"s{i}")
    sqlite_fleet.execute("s2", "INSERT INTO customers (name) VALUES ('ada');")
    topology = parse_topology(yaml.safe_load(sqlite_fleet.topology()), "shards.yaml")
    migration = write_migration(
        "002_progress",
        up="CREATE UNIQUE INDEX idx_u ON customers (name);",
        down="DROP INDEX idx_u;",
        options={"strategy": "rolling", "max_parallelism": 2},
    )
    dag = build_migration_dag(migration, topology)
    run = dag_runner(dag, {"stop_on_first_failure": False})
    with create_session() as session:
        progress = read_progress(
            session, dag_id=dag.dag_id, run_id=run.run_id, migration_id="002_progress", plan=plan_from_dag(dag)
        )
    data = progress.to_dict()
    assert data["shards"] == {"s0": "succeeded", "s1": "succeeded", "s2": "failed", "s3": "succeeded"}
    assert (data["total_shards"], data["completed_shards"], data["failed_shards"]) == (4, 3, 1)
    assert data["phase"] == "Completed" and data["is_finished"] is True and data["remaining_shards"] == 0
