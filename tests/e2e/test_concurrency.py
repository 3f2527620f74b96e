"""Real concurrency on two Celery workers: every shard's DDL takes ~1 s inside PostgreSQL (``pg_sleep`` in a
DO block), so the task instances' start/end times show what ran at the same time."""

from __future__ import annotations

import itertools
from typing import Any

from tests.e2e import scenarios
from tests.e2e.conftest import E2E
from tests.e2e.project import migration_dag_id
from tests.e2e.timeline import Interval, intervals, max_concurrent


def _run(e2e: E2E, migration_id: str, conf: dict[str, Any]) -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
    dag_id = migration_dag_id(migration_id)
    run_id = e2e.api.trigger(dag_id, conf)["dag_run_id"]
    run = e2e.api.wait_run(dag_id, run_id, timeout=240, alive=e2e.alive)
    return run_id, run, e2e.api.task_instances(dag_id, run_id)


def _describe(spans: list[Interval]) -> str:
    t0 = min(s.start for s in spans)
    return "; ".join(
        f"{s.label}[{s.task_id}] {(s.start - t0).total_seconds():.2f}-{(s.end - t0).total_seconds():.2f}s {s.state}"
        for s in sorted(spans, key=lambda s: s.start)
    )


def test_parallel_max_parallelism_2_on_8_shards(e2e: E2E) -> None:
    run_id, run, tis = _run(e2e, scenarios.CONC_PARALLEL.id, {"stop_on_first_failure": False})
    assert run["state"] == "success", tis
    spans = intervals(tis)
    assert sorted(s.label for s in spans) == sorted(scenarios.CONC_SHARDS)
    assert all(s.task_id == "shards.apply" and s.state == "success" for s in spans)
    assert all((s.end - s.start).total_seconds() >= 1.0 for s in spans), "every shard's DDL sleeps 1 s"
    peak = max_concurrent(spans)
    assert peak <= 2, f"more than max_parallelism=2 shards ran at once: {_describe(spans)}"
    assert peak == 2, f"shards never ran 2 at a time (peak {peak}): {_describe(spans)}"
    for shard_id in scenarios.CONC_SHARDS:
        assert "e2e_conc_parallel" in e2e.tables(shard_id)
        row = e2e.history(shard_id)[scenarios.CONC_PARALLEL.id]
        assert row["status"] == "applied" and row["run_id"] == run_id


def test_rolling_batches_never_overlap(e2e: E2E) -> None:
    _, run, tis = _run(e2e, scenarios.CONC_ROLLING.id, {"stop_on_first_failure": False})
    assert run["state"] == "success", tis
    spans = intervals(tis)
    batches: dict[str, list[Interval]] = {}
    for span in spans:
        batches.setdefault(span.task_id, []).append(span)
    # 8 shards, max_parallelism 3: batches of 3, 3, 2, in topology order.
    assert sorted(batches) == ["shards.batch_1.apply", "shards.batch_2.apply", "shards.batch_3.apply"]
    expected = [scenarios.CONC_SHARDS[0:3], scenarios.CONC_SHARDS[3:6], scenarios.CONC_SHARDS[6:8]]
    ordered = [batches[f"shards.batch_{k}.apply"] for k in (1, 2, 3)]
    assert [sorted(s.label for s in batch) for batch in ordered] == expected
    for earlier, later in itertools.pairwise(ordered):
        last_end = max(s.end for s in earlier)
        first_start = min(s.start for s in later)
        assert last_end <= first_start, f"batches overlap: {_describe(spans)}"
    assert all(max_concurrent(batch) <= 3 for batch in ordered), _describe(spans)
    assert max_concurrent(ordered[0]) >= 2, f"a batch never ran its shards together: {_describe(spans)}"


def test_parallel_stop_on_first_failure_under_real_concurrency(e2e: E2E) -> None:
    migration = scenarios.CONC_STOP
    dag_id = migration_dag_id(migration.id)
    run_id, run, tis = _run(e2e, migration.id, {"stop_on_first_failure": True})
    assert run["state"] == "failed", "a failed shard fails the run"
    shard_tis = {t["rendered_map_index"]: t for t in tis if t["task_id"] == "shards.apply"}
    assert sorted(shard_tis) == sorted(scenarios.CONC_SHARDS)
    report = e2e.api.xcom(dag_id, run_id, "report")
    outcomes = {shard: status["outcome"] for shard, status in report["shards"].items()}
    per_shard = {
        shard: e2e.api.xcom(dag_id, run_id, "shards.apply", ti["map_index"]) for shard, ti in shard_tis.items()
    }
    assert {shard: value["outcome"] for shard, value in per_shard.items()} == outcomes

    failing = Interval.of(shard_tis[scenarios.CONC_FAILING])
    assert outcomes[scenarios.CONC_FAILING] == "failed" and failing.state == "failed"
    assert per_shard[scenarios.CONC_FAILING]["error_code"] == "shardmigrate.migration_failed"
    failure_known = failing.end
    in_flight, not_started = [], []
    for shard_id, ti in shard_tis.items():
        if shard_id == scenarios.CONC_FAILING:
            continue
        outcome = outcomes[shard_id]
        started = ti["start_date"] is not None and Interval.of(ti).start < failure_known
        if not started:
            # Started after the failure was recorded: must have skipped itself, leaving the shard untouched.
            assert outcome == "pending" and ti["state"] == "skipped", (shard_id, outcome, ti["state"])
            not_started.append(shard_id)
        elif outcome != "pending":
            in_flight.append(shard_id)
        # Truthful either way: the shard's database agrees with its reported outcome.
        applied = migration.id in e2e.history(shard_id) and e2e.history(shard_id)[migration.id]["status"] == "applied"
        assert applied == (outcome == "succeeded"), (shard_id, outcome, e2e.history(shard_id))
        assert ("e2e_conc_stop" in e2e.tables(shard_id)) == (outcome == "succeeded"), (shard_id, outcome)
    spans = intervals(tis)
    assert not_started, f"every shard started before the failure was known: {_describe(spans)}"
    assert in_flight, f"no shard ran alongside the failing one: {_describe(spans)}"
    assert all(outcomes[s] == "succeeded" for s in in_flight), outcomes
    assert report["failed_count"] == 1 and report["all_succeeded"] is False
    assert report["pending_count"] == len([o for o in outcomes.values() if o == "pending"]) >= len(not_started)
    assert max_concurrent(spans) <= 2
