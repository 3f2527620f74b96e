"""Every strategy x stop_on_first_failure on a real SQLite fleet with one shard made to fail, run as a
real DAG with ``dag.test()``: per-shard outcomes as docs/contracts.md says, the DDL really present or absent in
each shard file, history rows, task states in the Grid, and the run state."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from airflow_provider_shardmigrate.core.topology import parse_topology
from airflow_provider_shardmigrate.dags.migration import build_migration_dag
from tests.conftest import BASE_SCHEMA

pytestmark = pytest.mark.slow

SHARDS = [f"s{i}" for i in range(6)]
# Same schema everywhere (so the validate_before_apply preflight passes), but the broken shard holds a
# duplicate name: the unique index fails there, and only there, at apply time.
UNIQUE_UP = "CREATE UNIQUE INDEX idx_customers_name ON customers (name);"
BROKEN_SCHEMA = BASE_SCHEMA + "INSERT INTO customers (name) VALUES ('ada');"
INDEX = "idx_customers_name"


def make_fleet(sqlite_fleet: Any, bad: str = "s2", inactive: tuple[str, ...] = ()) -> Any:
    for shard_id in SHARDS:
        if shard_id == bad:
            sqlite_fleet.add(shard_id, BROKEN_SCHEMA)
        else:
            sqlite_fleet.add(shard_id)
    return parse_topology(yaml.safe_load(sqlite_fleet.topology(inactive=inactive)), "shards.yaml")


def assert_fleet_matches(sqlite_fleet: Any, outcomes: dict[str, str], migration_id: str) -> None:
    """The schema and the history of every shard agree with its reported outcome."""
    for shard_id, outcome in outcomes.items():
        has_index = INDEX in sqlite_fleet.objects(shard_id)
        row = sqlite_fleet.history(shard_id).get(migration_id)
        if outcome in ("succeeded", "already_applied"):
            assert has_index, f"{shard_id}: outcome {outcome} but the index is missing"
            assert row is not None and row["status"] == "applied", f"{shard_id}: history {row}"
            assert row["statements_applied"] == row["statements_total"] == 1
        else:
            assert not has_index, f"{shard_id}: outcome {outcome} but the index exists"
            assert row is None, f"{shard_id}: outcome {outcome} but history row {row}"


def pending_by_timing(run: Any, failed_task: tuple[str, int]) -> set[str]:
    """Mapped shards that started after the failing shard ended (they must have stopped themselves)."""
    failed_end = run.times[failed_task][1]
    late = set()
    for (task_id, map_index), (start, _end) in run.times.items():
        if task_id.endswith("apply") and map_index >= 0 and start is not None and start > failed_end:
            late.add((task_id, map_index))
    return late


EXPECTED_SERIAL = {
    # strategy -> stop -> expected outcomes (where the order is deterministic)
    ("sequential", True): {
        "s0": "succeeded",
        "s1": "succeeded",
        "s2": "failed",
        "s3": "pending",
        "s4": "pending",
        "s5": "pending",
    },
    ("rolling", True): {
        "s0": "succeeded",
        "s1": "succeeded",
        "s2": "failed",
        "s3": "succeeded",
        "s4": "pending",
        "s5": "pending",
    },
}


@pytest.mark.parametrize("stop", [True, False], ids=["stop", "continue"])
@pytest.mark.parametrize("strategy", ["sequential", "parallel", "rolling", "canary_first"])
def test_strategy_with_one_failing_shard(strategy, stop, sqlite_fleet, write_migration, dag_runner):
    topology = make_fleet(sqlite_fleet)
    migration = write_migration("001_index_names", up=UNIQUE_UP, options={"strategy": strategy, "max_parallelism": 2})
    run = dag_runner(build_migration_dag(migration, topology), {"stop_on_first_failure": stop})

    outcomes = run.outcomes()
    assert list(outcomes) == SHARDS  # topology order, every targeted shard reported
    assert outcomes["s2"] == "failed"
    assert run.report["shards"]["s2"]["error_code"] == "shardmigrate.migration_failed"
    assert "UNIQUE constraint failed" in run.report["shards"]["s2"]["error_message"]
    assert run.state == "failed"
    assert run.tasks[("gate", -1)] == "failed"
    assert run.report["all_succeeded"] is False
    assert run.report["failed_count"] == 1

    if not stop:
        assert all(outcome == "succeeded" for sid, outcome in outcomes.items() if sid != "s2")
    elif (strategy, stop) in EXPECTED_SERIAL:
        assert outcomes == EXPECTED_SERIAL[(strategy, stop)]
    else:
        # parallel (and the rest after a canary): a shard that had not started when the failure was known
        # stops itself (pending); a shard that started before reports its true outcome.
        failing_index = next(k for k, v in run.labels.items() if k == "s2")
        failed_task = next(
            key
            for key in run.times
            if key[0].endswith("apply") and run.shards.get("s2") and key[1] >= 0 and _label(run, key) == failing_index
        )
        late = {_label(run, key) for key in pending_by_timing(run, failed_task)}
        for shard_id, outcome in outcomes.items():
            if shard_id == "s2":
                continue
            assert outcome == ("pending" if shard_id in late else "succeeded"), (shard_id, outcome, late)
    assert run.report["pending_count"] == sum(1 for o in outcomes.values() if o == "pending")
    assert_fleet_matches(sqlite_fleet, outcomes, "001_index_names")

    # Grid: every shard's task is labelled with its shard id, and its state mirrors its outcome.
    task_state = {"succeeded": "success", "failed": "failed", "pending": "skipped"}
    if strategy == "sequential":
        for shard_id, outcome in outcomes.items():
            assert run.tasks[(f"shards.{shard_id}", -1)] == task_state[outcome]
    else:
        for shard_id, outcome in outcomes.items():
            if strategy == "canary_first" and shard_id == "s0":
                assert run.tasks[("shards.canary", -1)] == "success"
            else:
                assert run.labels[shard_id] == task_state[outcome]


def _label(run: Any, key: tuple[str, int]) -> str | None:
    value = run.xcoms.get(key)
    return value["shard_id"] if isinstance(value, dict) else None


@pytest.mark.parametrize("stop", [True, False], ids=["stop", "continue"])
def test_failed_canary_leaves_every_other_shard_pending(stop, sqlite_fleet, write_migration, dag_runner):
    topology = make_fleet(sqlite_fleet, bad="s3")
    migration = write_migration("002_canary", up=UNIQUE_UP, options={"strategy": "canary_first", "canary": "S3"})
    run = dag_runner(build_migration_dag(migration, topology), {"stop_on_first_failure": stop})

    outcomes = run.outcomes()
    assert outcomes["s3"] == "failed"
    assert {sid: o for sid, o in outcomes.items() if sid != "s3"} == {sid: "pending" for sid in SHARDS if sid != "s3"}
    assert run.tasks[("shards.canary", -1)] == "failed"
    assert run.tasks[("shards.canary_gate", -1)] == "upstream_failed"
    assert all(state == "upstream_failed" for (task, _), state in run.tasks.items() if task == "shards.apply")
    assert run.tasks[("report", -1)] == "success"
    assert run.state == "failed"
    assert_fleet_matches(sqlite_fleet, outcomes, "002_canary")


@pytest.mark.parametrize("strategy", ["sequential", "parallel", "rolling", "canary_first"])
def test_clean_rollout_then_idempotent_rerun(strategy, sqlite_fleet, write_migration, dag_runner):
    topology = make_fleet(sqlite_fleet, bad="none", inactive=("s5",))
    migration = write_migration("003_clean", up=UNIQUE_UP, options={"strategy": strategy, "max_parallelism": 3})
    dag = build_migration_dag(migration, topology)

    first = dag_runner(dag)
    assert first.state == "success"
    assert first.outcomes() == {sid: "succeeded" for sid in SHARDS[:5]}  # s5 is inactive: not targeted
    assert first.report["all_succeeded"] is True and first.report["succeeded_count"] == 5
    assert first.report["strategy"] == strategy and first.report["migration_id"] == "003_clean"
    assert first.report["dag_run_id"] == first.run_id
    assert INDEX not in sqlite_fleet.objects("s5") and sqlite_fleet.history("s5") == {}
    history_before = {sid: sqlite_fleet.history(sid)["003_clean"] for sid in SHARDS[:5]}

    second = dag_runner(dag)
    assert second.state == "success"
    assert second.outcomes() == {sid: "already_applied" for sid in SHARDS[:5]}
    for shard_id in SHARDS[:5]:
        assert sqlite_fleet.history(shard_id)["003_clean"] == history_before[shard_id]  # untouched by the no-op


def test_report_xcom_has_the_contract_shape(sqlite_fleet, write_migration, dag_runner):
    topology = make_fleet(sqlite_fleet, bad="s1")
    migration = write_migration(
        "004_shape", up=UNIQUE_UP, options={"strategy": "parallel", "stop_on_first_failure": False}
    )
    run = dag_runner(build_migration_dag(migration, topology))
    assert set(run.report) == {
        "migration_id",
        "dag_run_id",
        "strategy",
        "all_succeeded",
        "succeeded_count",
        "failed_count",
        "pending_count",
        "rolled_back_count",
        "outcome_counts",
        "halted_reason",
        "refused",
        "total_duration_ms",
        "shards",
    }
    assert list(run.report)[-1] == "shards"  # the summary first, the per-shard map last
    assert run.report["refused"] is None and run.report["halted_reason"] is None
    assert run.report["outcome_counts"] == {"succeeded": 5, "failed": 1}
    assert run.report["total_duration_ms"] > 0
    for status in run.shards.values():
        assert set(status) == {"shard_id", "outcome", "duration_ms", "error_code", "error_message"}
