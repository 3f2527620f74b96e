"""The rollback DAG's ``shards`` selection, run for real with ``dag.test()`` on SQLite shards: an empty
selection rolls back nothing and the run says so, ids match in any case, ``all`` means every active shard,
an inactive shard is rolled back only when picked, an unknown id is refused before anything runs."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from airflow_provider_shardmigrate.core.topology import parse_topology
from airflow_provider_shardmigrate.dags.migration import build_migration_dag
from airflow_provider_shardmigrate.dags.rollback import build_rollback_dag
from tests.dags.conftest import RunOutcome

pytestmark = pytest.mark.slow

INDEX = "idx_customers_name"
ACTIVE = ["s0", "s1", "s2"]
INACTIVE = "old-3"


def _applied_everywhere(sqlite_fleet: Any, write_migration: Any, dag_runner: Any, migration_id: str) -> tuple:
    """A fleet with one inactive shard, the migration applied on every shard (the inactive one by a rollout
    over a topology where it was still active)."""
    for shard_id in [*ACTIVE, INACTIVE]:
        sqlite_fleet.add(shard_id)
    everyone = parse_topology(yaml.safe_load(sqlite_fleet.topology()), "shards.yaml")
    topology = parse_topology(yaml.safe_load(sqlite_fleet.topology(inactive=(INACTIVE,))), "shards.yaml")
    migration = write_migration(migration_id, options={"strategy": "parallel"})
    assert dag_runner(build_migration_dag(migration, everyone)).state == "success"
    return migration, topology


def _rollback(dag_runner: Any, migration: Any, topology: Any, conf: dict[str, Any] | None = None) -> RunOutcome:
    # A fresh DAG object per run: dag.test() keeps a run's conf in the DAG object's params.
    return dag_runner(build_rollback_dag(migration, topology), conf)


def _still_applied(sqlite_fleet: Any) -> dict[str, bool]:
    return {shard_id: INDEX in sqlite_fleet.objects(shard_id) for shard_id in sqlite_fleet.paths}


def test_the_form_offers_every_shard_and_all(sqlite_fleet, write_migration):
    for shard_id in [*ACTIVE, INACTIVE]:
        sqlite_fleet.add(shard_id)
    topology = parse_topology(yaml.safe_load(sqlite_fleet.topology(inactive=(INACTIVE,))), "shards.yaml")
    dag = build_rollback_dag(write_migration("400_form"), topology)
    param = dag.params.get_param("shards")
    assert param.value == []
    # An array Param with `examples` is a multi-select of those values in the trigger form.
    assert param.schema["type"] == "array" and param.schema["examples"] == ["all", *ACTIVE, INACTIVE]
    assert param.schema["values_display"] == {"all": "all (every active shard)", INACTIVE: f"{INACTIVE} (inactive)"}
    assert "enum" not in param.schema["items"]  # ids match case-insensitively: checked by the preflight
    # Every shard, inactive too, has a task instance (labelled by its id in the Grid).
    assert dag.get_task("shards.rollback").expand_input.value[-1] == {
        "shard_id": INACTIVE,
        "conn_id": "old_3",
        "in_all": False,
    }


def test_empty_selection_rolls_back_nothing_and_says_so(sqlite_fleet, write_migration, dag_runner):
    migration, topology = _applied_everywhere(sqlite_fleet, write_migration, dag_runner, "401_empty")
    run = _rollback(dag_runner, migration, topology)  # the form left empty: the default []
    assert run.state == "failed"
    assert run.tasks[("preflight", -1)] == "failed"
    assert set(run.outcomes().values()) == {"pending"}
    report = run.report
    assert report is not None and report["refused"]["code"] == "shardmigrate.invalid_params"
    assert "selects no shard, so nothing was rolled back" in report["refused"]["reason"]
    assert report["halted_reason"].startswith("refused before any shard started: [shardmigrate.invalid_params]")
    assert all(_still_applied(sqlite_fleet).values())
    assert all(sqlite_fleet.history(s)["401_empty"]["status"] == "applied" for s in sqlite_fleet.paths)


def test_one_shard_in_any_case(sqlite_fleet, write_migration, dag_runner):
    migration, topology = _applied_everywhere(sqlite_fleet, write_migration, dag_runner, "402_one")
    run = _rollback(dag_runner, migration, topology, {"shards": ["S1"]})
    assert run.state == "success", run.tasks
    assert run.outcomes() == {"s0": "not_selected", "s1": "rolled_back", "s2": "not_selected", INACTIVE: "not_selected"}
    assert run.labels["s1"] == "success" and run.labels["s0"] == "skipped"
    assert _still_applied(sqlite_fleet) == {"s0": True, "s1": False, "s2": True, INACTIVE: True}
    assert sqlite_fleet.history("s1")["402_one"]["status"] == "rolled_back"


def test_all_means_every_active_shard(sqlite_fleet, write_migration, dag_runner):
    migration, topology = _applied_everywhere(sqlite_fleet, write_migration, dag_runner, "403_all")
    run = _rollback(dag_runner, migration, topology, {"shards": ["ALL"]})
    assert run.state == "success", run.tasks
    assert run.outcomes() == {"s0": "rolled_back", "s1": "rolled_back", "s2": "rolled_back", INACTIVE: "not_selected"}
    assert _still_applied(sqlite_fleet) == {"s0": False, "s1": False, "s2": False, INACTIVE: True}


def test_an_inactive_shard_is_rolled_back_when_picked(sqlite_fleet, write_migration, dag_runner):
    migration, topology = _applied_everywhere(sqlite_fleet, write_migration, dag_runner, "404_inactive")
    dry = _rollback(dag_runner, migration, topology, {"shards": [INACTIVE.upper()], "dry_run": True})
    assert dry.outcomes()[INACTIVE] == "would_roll_back" and all(_still_applied(sqlite_fleet).values())
    run = _rollback(dag_runner, migration, topology, {"shards": ["all", INACTIVE]})
    assert run.state == "success", run.tasks
    assert set(run.outcomes().values()) == {"rolled_back"}
    assert not any(_still_applied(sqlite_fleet).values())


def test_an_unknown_shard_refuses_the_run(sqlite_fleet, write_migration, dag_runner):
    migration, topology = _applied_everywhere(sqlite_fleet, write_migration, dag_runner, "405_unknown")
    run = _rollback(dag_runner, migration, topology, {"shards": ["s1", "s9"]})
    assert run.state == "failed"
    assert run.report is not None and run.report["refused"]["code"] == "shardmigrate.invalid_params"
    assert "not in the topology: 's9'" in run.report["refused"]["reason"]
    assert all(_still_applied(sqlite_fleet).values())  # s1 was not rolled back either
