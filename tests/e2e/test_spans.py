"""The provider's spans go through Airflow's own tracer: with the deployment's ``[traces] otel_on`` and the
standard ``OTEL_*`` exporter settings pointing at the test's OTLP receiver, every shard task exports a
``shardmigrate.shard`` span and the report task a ``shardmigrate.coordinate`` span, each a child of the
task span Airflow's task runner opens (``worker.<task_id>[<map_index>]``), all in the run's one trace."""

from __future__ import annotations

from typing import Any

from tests.e2e import scenarios
from tests.e2e.conftest import E2E
from tests.e2e.otlp import ReceivedSpan
from tests.e2e.project import migration_dag_id

MIGRATION = scenarios.SPANS_TABLE
DAG_ID = migration_dag_id(MIGRATION.id)
SHARDS = scenarios.REST_SHARDS


def _of_run(run_id: str) -> Any:
    def predicate(span: ReceivedSpan) -> bool:
        return span.attributes.get("airflow.dag_run.run_id") == run_id and span.name.startswith("worker.")

    return predicate


def test_shard_and_coordinate_spans_reach_the_collector_under_their_task_spans(e2e: E2E) -> None:
    otlp, api = e2e.otlp, e2e.api
    assert otlp is not None
    run_id = api.trigger(DAG_ID)["dag_run_id"]
    assert api.wait_run(DAG_ID, run_id, timeout=180, alive=e2e.alive)["state"] == "success"
    tis = {(t["task_id"], t["map_index"]): t for t in api.task_instances(DAG_ID, run_id)}
    ran = [key for key, ti in tis.items() if ti["state"] == "success"]

    # One task span per task instance that ran (the runner flushes its spans before the process exits).
    task_spans = otlp.wait_for(_of_run(run_id), count=len(ran), timeout=60)
    by_task = {
        (s.attributes["airflow.task_id"], s.attributes["airflow.task_instance.map_index"]): s for s in task_spans
    }
    assert set(ran) <= set(by_task), (sorted(ran), sorted(by_task), otlp.errors)
    assert all(s.service == "shardmigrate-e2e" for s in task_spans)
    task_span_ids = {s.span_id: key for key, s in by_task.items()}
    shard_spans = otlp.wait_for(
        lambda s: s.name == "shardmigrate.shard" and s.parent_span_id in task_span_ids, count=len(SHARDS)
    )
    coordinate = otlp.wait_for(lambda s: s.name == "shardmigrate.coordinate" and s.parent_span_id in task_span_ids)

    # Every shard: exactly one span, a child of its own mapped task's span, in the same trace.
    assert len(shard_spans) == len(SHARDS), [(s.attributes, s.parent_span_id) for s in shard_spans]
    for span in shard_spans:
        task_id, map_index = task_span_ids[span.parent_span_id]
        parent = by_task[(task_id, map_index)]
        assert (task_id, span.trace_id) == ("shards.apply", parent.trace_id), span
        shard_id = SHARDS[map_index]
        assert span.attributes == {
            "migration.shard.id": shard_id,
            "migration.strategy": "parallel",
            "migration.id": MIGRATION.id,
            "migration.shard.outcome": "succeeded",
        }, span.attributes
        assert parent.attributes["airflow.dag_id"] == DAG_ID
        assert parent.start_ns <= span.start_ns <= span.end_ns <= parent.end_ns, (parent, span)

    # The report's span: the run's totals, a child of the report task's span.
    assert len(coordinate) == 1, coordinate
    span = coordinate[0]
    assert task_span_ids[span.parent_span_id] == ("report", -1)
    report = api.xcom(DAG_ID, run_id, "report")
    assert span.attributes == {
        "migration.id": MIGRATION.id,
        "migration.strategy": "parallel",
        "migration.shard_count": len(SHARDS),
        "migration.shards_succeeded": len(SHARDS),
        "migration.shards_failed": 0,
        "migration.shards_rolled_back": 0,
        "migration.duration_ms": report["total_duration_ms"],
    }, span.attributes
    # All of the run's task spans belong to one trace: the run's.
    assert len({s.trace_id for s in task_spans}) == 1, {s.name: s.trace_id for s in task_spans}
