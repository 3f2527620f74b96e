"""Lanes execution on real SQLite fleets with ``dag.test()``: a fleet far wider than Airflow can map, the
failure threshold, and the same outcomes as per-shard execution for every strategy."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from airflow_provider_shardmigrate.core.topology import parse_topology
from airflow_provider_shardmigrate.dags.migration import build_migration_dag
from tests.conftest import BASE_SCHEMA

pytestmark = pytest.mark.slow

BROKEN = BASE_SCHEMA + "INSERT INTO customers (name) VALUES ('ada');"  # a duplicate name: the unique index fails


def unique_index(name: str) -> dict[str, str]:
    return {"up": f"CREATE UNIQUE INDEX {name} ON customers (name);", "down": f"DROP INDEX {name};"}


def fleet(sqlite_fleet: Any, count: int, bad: tuple[str, ...] = ()) -> Any:
    for i in range(count):
        shard_id = f"s{i}"
        sqlite_fleet.add(shard_id, BROKEN if shard_id in bad else BASE_SCHEMA)
    return parse_topology(yaml.safe_load(sqlite_fleet.topology()), "shards.yaml")


def lane_tasks(run: Any) -> dict[tuple[str, int], str]:
    return {key: state for key, state in run.tasks.items() if key[0] == "shards.lanes"}


def untouched(sqlite_fleet: Any, shard_id: str, index: str, migration_id: str) -> bool:
    return index not in sqlite_fleet.objects(shard_id) and migration_id not in sqlite_fleet.history(shard_id)


def test_a_fleet_wider_than_max_map_length_runs_in_a_few_lanes(sqlite_fleet, write_migration, dag_runner):
    count = 1500
    topology = fleet(sqlite_fleet, count)
    migration = write_migration(
        "001_wide", **unique_index("idx_wide"), options={"strategy": "parallel", "max_parallelism": 6}
    )
    dag = build_migration_dag(migration, topology)  # execution: auto -> lanes beyond 256 shards
    assert "execution:lanes" in dag.tags
    run = dag_runner(dag)
    assert run.state == "success"
    assert len(lane_tasks(run)) == 6  # six task instances for 1,500 shards
    assert len(run.report["shards"]) == count and run.report["succeeded_count"] == count
    assert set(run.outcomes().values()) == {"succeeded"}
    for shard_id in ("s0", "s749", "s1499"):  # the DDL and a history row on shards of every lane
        assert "idx_wide" in sqlite_fleet.objects(shard_id)
        assert sqlite_fleet.history(shard_id)["001_wide"]["status"] == "applied"
    labels = sorted(run.labels)
    assert labels[0] == "lane 1/6: s0, s6, s12 ... s1494 (250 shards)"


def test_lanes_stop_on_first_failure_leaves_the_rest_pending_and_untouched(sqlite_fleet, write_migration, dag_runner):
    topology = fleet(sqlite_fleet, 20, bad=("s0",))
    migration = write_migration(
        "002_stop",
        **unique_index("idx_stop"),
        options={"strategy": "parallel", "max_parallelism": 2, "execution": "lanes"},
    )
    run = dag_runner(build_migration_dag(migration, topology))
    outcomes = run.outcomes()
    assert run.state == "failed" and outcomes["s0"] == "failed"
    pending = [shard for shard, outcome in outcomes.items() if outcome == "pending"]
    # s0 is the first shard of lane 1: every later shard of that lane, and all of lane 2 if it ran after,
    # is left pending -- whichever lane dag.test() ran first, at least the rest of lane 1 is.
    assert len(pending) >= 9
    assert set(outcomes.values()) <= {"failed", "pending", "succeeded"}
    for shard in pending:
        assert untouched(sqlite_fleet, shard, "idx_stop", "002_stop"), shard
    assert run.report["halted_reason"].startswith("stop_on_first_failure")
    assert lane_tasks(run)[("shards.lanes", 0)] == "failed"


@pytest.mark.parametrize("strategy", ["sequential", "parallel", "rolling", "canary_first"])
@pytest.mark.parametrize("stop", [True, False], ids=["stop", "continue"])
def test_every_strategy_in_lanes_ends_like_per_shard(strategy, stop, sqlite_fleet, write_migration, dag_runner):
    topology = fleet(sqlite_fleet, 9, bad=("s4",))
    runs = {}
    for execution in ("per_shard", "lanes"):
        name = f"idx_{execution}"
        options = {"strategy": strategy, "max_parallelism": 3, "stop_on_first_failure": stop, "execution": execution}
        options["validate_before_apply"] = False  # the first run leaves the fleet differing on purpose
        migration = write_migration(f"003_{strategy}_{execution}", **unique_index(name), options=options)
        runs[execution] = dag_runner(build_migration_dag(migration, topology))
    per_shard, lanes = runs["per_shard"].outcomes(), runs["lanes"].outcomes()
    assert runs["per_shard"].state == runs["lanes"].state == "failed"
    assert lanes["s4"] == per_shard["s4"] == "failed"
    if not stop or strategy in ("sequential", "rolling"):
        assert lanes == per_shard  # deterministic: every shard ran, or the order is fixed
    else:  # a parallel wave with stop: which shards ran before the failure was known depends on the order
        assert {o for s, o in lanes.items() if s != "s4"} <= {"succeeded", "pending"}
    for shard, outcome in lanes.items():  # the fleet agrees with what the lanes report
        assert ("idx_lanes" in sqlite_fleet.objects(shard)) is (outcome == "succeeded"), shard
    if not stop or strategy in ("sequential", "rolling"):
        assert runs["lanes"].report["halted_reason"] == runs["per_shard"].report["halted_reason"]


@pytest.mark.parametrize("execution", ["per_shard", "lanes"])
def test_max_failed_shards_on_sequential(execution, sqlite_fleet, write_migration, dag_runner):
    topology = fleet(sqlite_fleet, 8, bad=("s2", "s4", "s6"))
    options = {"strategy": "sequential", "stop_on_first_failure": False, "max_failed_shards": 1, "execution": execution}
    migration = write_migration(f"004_threshold_{execution}", **unique_index("idx_t"), options=options)
    run = dag_runner(build_migration_dag(migration, topology))
    assert run.outcomes() == {
        "s0": "succeeded",
        "s1": "succeeded",
        "s2": "failed",  # 1 failure: within the threshold
        "s3": "succeeded",
        "s4": "failed",  # 2 > 1: no further shard starts
        "s5": "pending",
        "s6": "pending",
        "s7": "pending",
    }
    assert "failure threshold of 1 failed shard(s) exceeded: 2 shard(s) failed (s2, s4)" in run.report["halted_reason"]
    assert untouched(sqlite_fleet, "s6", "idx_t", f"004_threshold_{execution}")


@pytest.mark.parametrize("execution", ["per_shard", "lanes"])
def test_max_failure_ratio_from_the_trigger_form_on_rolling(execution, sqlite_fleet, write_migration, dag_runner):
    topology = fleet(sqlite_fleet, 10, bad=("s1", "s2", "s4"))
    options = {"strategy": "rolling", "max_parallelism": 3, "stop_on_first_failure": False, "execution": execution}
    migration = write_migration(f"005_ratio_{execution}", **unique_index("idx_r"), options=options)
    # 20 % of 10 shards: a third failure passes it. Batch 1 fails twice (within), batch 2 a third time: a batch
    # that started completes, no later batch starts.
    run = dag_runner(build_migration_dag(migration, topology), {"max_failure_ratio": 0.2})
    outcomes = run.outcomes()
    assert [outcomes[f"s{i}"] for i in range(10)] == [
        "succeeded",
        "failed",
        "failed",
        "succeeded",
        "failed",
        "succeeded",
        "pending",
        "pending",
        "pending",
        "pending",
    ]


def test_a_bad_failure_ratio_in_the_trigger_form_is_refused_before_any_shard(sqlite_fleet, write_migration, airflow_db):
    from airflow.sdk.exceptions import ParamValidationError

    from tests.dags.conftest import register

    topology = fleet(sqlite_fleet, 2)
    dag = build_migration_dag(write_migration("006_bad_ratio", **unique_index("idx_b")), topology)
    register(dag)
    with pytest.raises(ParamValidationError, match="max_failure_ratio"):
        dag.test(run_conf={"max_failure_ratio": 1.5})
    assert all(sqlite_fleet.history(s) == {} for s in ("s0", "s1"))


@pytest.mark.parametrize(
    ("options", "field"),
    [({"execution": "fast"}, "execution"), ({"max_failure_ratio": 1.5}, "max_failure_ratio")],
)
def test_bad_lanes_options_in_migration_yaml_are_refused_naming_the_field(options, field, write_migration):
    from airflow_provider_shardmigrate.core.errors import InvalidScriptError
    from airflow_provider_shardmigrate.core.scripts import load_migration

    with pytest.raises(InvalidScriptError) as raised:
        load_migration(write_migration("007_bad", options=options))
    assert raised.value.code == "shardmigrate.invalid_script"
    assert f"field '{field}'" in str(raised.value)


def test_the_rollback_dag_of_a_large_fleet_runs_in_lanes(sqlite_fleet, write_migration, dag_runner):
    from airflow_provider_shardmigrate.dags.rollback import build_rollback_dag

    count = 300  # above the 256 of execution: auto
    topology = fleet(sqlite_fleet, count)
    migration = write_migration("008_undo", **unique_index("idx_undo"), options={"strategy": "parallel"})
    assert dag_runner(build_migration_dag(migration, topology)).state == "success"
    rollback = build_rollback_dag(migration, topology)
    assert [t for t in rollback.task_ids if t.startswith("shards.")] == ["shards.lanes"]
    one = dag_runner(build_rollback_dag(migration, topology), {"shards": ["S7"]})  # any case
    assert one.state == "success" and len(lane_tasks(one)) == 4
    outcomes = one.outcomes()
    assert outcomes["s7"] == "rolled_back" and "idx_undo" not in sqlite_fleet.objects("s7")
    assert {o for s, o in outcomes.items() if s != "s7"} == {"not_selected"}
    assert "idx_undo" in sqlite_fleet.objects("s8")
    everything = dag_runner(build_rollback_dag(migration, topology), {"shards": ["all"]})
    assert everything.state == "success"
    assert everything.report["rolled_back_count"] == count - 1
    assert everything.outcomes()["s7"] == "not_applied"  # rolled back by the first run already
    assert all("idx_undo" not in sqlite_fleet.objects(f"s{i}") for i in (0, 150, 299))
