"""The DAG layout: the task ids the builders create are the ones the layout names, for every strategy, and
the layout finds the shard of any task instance."""

from __future__ import annotations

import pytest

from airflow_provider_shardmigrate.core.options import MigrationOptions, Strategy
from airflow_provider_shardmigrate.core.plans import plan_rollout
from airflow_provider_shardmigrate.core.topology import parse_topology
from airflow_provider_shardmigrate.dags.layout import (
    AUTO_ROLLBACK_TASK_ID,
    GATE_TASK_ID,
    PREFLIGHT_TASK_ID,
    REPORT_TASK_ID,
    ROLLBACK_SHARDS_TASK_ID,
    TaskLayout,
    is_rollback_dag,
    migration_id_of,
)
from airflow_provider_shardmigrate.dags.migration import build_migration_dag
from airflow_provider_shardmigrate.dags.rollback import build_rollback_dag, rollback_plan

TOPOLOGY = parse_topology({"shards": [{"id": f"s.{i}", "conn_id": f"c{i}"} for i in range(7)]}, "t.yaml")
OPTIONS = {"max_parallelism": 3, "canary": "s.4"}


@pytest.mark.parametrize("strategy", list(Strategy))
def test_built_dag_has_exactly_the_layout_tasks(strategy, write_migration):
    migration = write_migration("001_layout", options={"strategy": strategy.value, **OPTIONS})
    dag = build_migration_dag(migration, TOPOLOGY)
    layout = TaskLayout.of(plan_rollout(TOPOLOGY.shards, MigrationOptions(strategy=strategy, **OPTIONS)))
    for wave in layout:
        task = dag.get_task(wave.task_id)
        assert (getattr(task, "expand_input", None) is not None) is wave.mapped, wave.task_id
    assert {PREFLIGHT_TASK_ID, AUTO_ROLLBACK_TASK_ID, REPORT_TASK_ID, GATE_TASK_ID} <= set(dag.task_ids)
    fixed = {PREFLIGHT_TASK_ID, AUTO_ROLLBACK_TASK_ID, ROLLBACK_SHARDS_TASK_ID, REPORT_TASK_ID, GATE_TASK_ID}
    extra = set(dag.task_ids) - set(layout.shard_task_ids) - fixed
    assert extra == ({"shards.canary_gate"} if strategy is Strategy.CANARY_FIRST else set())


@pytest.mark.parametrize(
    ("strategy", "task_id", "map_index", "shard"),
    [
        (Strategy.SEQUENTIAL, "shards.s.3", -1, "s.3"),
        (Strategy.PARALLEL, "shards.apply", 5, "s.5"),
        (Strategy.ROLLING, "shards.batch_2.apply", 1, "s.4"),
        (Strategy.ROLLING, "shards.batch_3.apply", 0, "s.6"),
        (Strategy.CANARY_FIRST, "shards.canary", -1, "s.4"),
        (Strategy.CANARY_FIRST, "shards.apply", 4, "s.5"),  # the rest, without the canary
    ],
)
def test_layout_locates_the_shard_of_a_task_instance(strategy, task_id, map_index, shard):
    layout = TaskLayout.of(plan_rollout(TOPOLOGY.shards, MigrationOptions(strategy=strategy, **OPTIONS)))
    assert layout.locate(task_id, map_index) == shard
    assert layout.locate("report", -1) is None
    assert layout.locate(task_id, 99) is None


def test_rollback_layout_matches_the_rollback_dag(write_migration):
    migration = write_migration("002_layout")
    dag = build_rollback_dag(migration, TOPOLOGY)
    from airflow_provider_shardmigrate.core.scripts import load_migration

    (wave,) = TaskLayout.of(rollback_plan(load_migration(migration), TOPOLOGY), rollback=True).waves
    assert wave.task_id == "shards.rollback" and wave.mapped
    assert dag.get_task(wave.task_id) is not None
    assert is_rollback_dag(dag.dag_id) and migration_id_of(dag.dag_id) == "002_layout"
