"""The one adapter over an Airflow format with no public structured form: the keys of ``get_task_states``.

This runs a real DAG so that it fails if Airflow changes how it names mapped task instances there."""

from __future__ import annotations

import pytest

from airflow_provider_shardmigrate.operators._context import parse_task_state_keys

pytestmark = pytest.mark.slow


def test_parse_keys_of_plain_and_mapped_tasks() -> None:
    mapped = {"shards.db": False, "shards.db_1": False, "shards.apply": True}
    raw = {"shards.db": "success", "shards.db_1": "failed", "shards.apply_0": "success", "shards.apply_12": "failed"}
    assert parse_task_state_keys(raw, mapped) == {
        ("shards.db", -1): "success",
        ("shards.db_1", -1): "failed",  # a plain task whose name ends like a map index stays plain
        ("shards.apply", 0): "success",
        ("shards.apply", 12): "failed",
    }
    assert parse_task_state_keys({"other_3": "failed"}, mapped) == {}


def test_task_states_of_a_real_run(dag_runner) -> None:
    from airflow.sdk import DAG, TriggerRule, task

    from airflow_provider_shardmigrate.operators._context import task_states

    with DAG("shardmigrate_test_task_states", schedule=None) as dag:

        @task
        def plain() -> int:
            return 1

        @task
        def mapped(item: int) -> int:
            if item == 1:
                raise ValueError("boom")
            return item

        @task(trigger_rule=TriggerRule.ALL_DONE)
        def read(**context) -> dict:
            states = task_states(context, {"plain": False, "mapped": True})
            return {f"{task_id}/{index}": state for (task_id, index), state in states.items()}

        [plain(), mapped.expand(item=[0, 1, 2])] >> read()

    run = dag_runner(dag)
    assert run.xcoms[("read", -1)] == {
        "plain/-1": "success",
        "mapped/0": "success",
        "mapped/1": "failed",
        "mapped/2": "success",
    }
