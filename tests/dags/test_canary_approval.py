"""``canary_approval: true``: after the canary (and its gate) a human approves or rejects, through Airflow's
human-in-the-loop API exactly as the UI's *Required actions* does (``PATCH .../hitlDetails`` with the user's
token). The DAG runs for real with ``dag.test()`` on SQLite shards; the answer comes from the api-server app
served in-process on the same metadata DB. A timeout is resolved by the scheduler's own sweep
(``SchedulerJobRunner.check_awaiting_input_timeouts``), which ``dag.test()`` does not run by itself."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml

from airflow_provider_shardmigrate.core.outcomes import gate_failure
from airflow_provider_shardmigrate.core.status import MigrationResult
from airflow_provider_shardmigrate.core.topology import parse_topology
from airflow_provider_shardmigrate.dags.layout import CANARY_APPROVAL_TASK_ID
from airflow_provider_shardmigrate.dags.migration import build_migration_dag
from tests.airflow_api import airflow_api, task_instance, wait_for
from tests.dags.conftest import run_dag

pytestmark = pytest.mark.slow

INDEX = "idx_customers_name"
SHARDS = ["s0", "s1", "s2"]


def _fleet(sqlite_fleet: Any) -> Any:
    for shard_id in SHARDS:
        sqlite_fleet.add(shard_id)
    return parse_topology(yaml.safe_load(sqlite_fleet.topology()), "shards.yaml")


def _migration(write_migration: Any, migration_id: str, **options: Any) -> Any:
    return write_migration(
        migration_id,
        options={
            "strategy": "canary_first",
            "canary_validation": "SELECT COUNT(*) FROM customers",
            "canary_approval": True,
            **options,
        },
    )


def _answer_in_background(dag_id: str, answer: Callable[[Any], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    """Wait (in a thread: ``dag.test()`` must run in the main thread) for the approval to be asked, then call
    ``answer(ti)``. If ``answer`` fails, the request is resolved anyway (Reject, else the TI is failed) so that
    ``dag.test()`` returns and the test reports the error instead of hanging."""
    seen: dict[str, Any] = {}

    def run() -> None:
        ti = None
        try:
            ti = _awaiting(dag_id)
            seen["result"] = answer(ti)
        except BaseException as exc:
            seen["error"] = exc
            _unblock(ti, dag_id)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, seen


def _unblock(ti: Any, dag_id: str) -> None:
    from airflow.utils.state import TaskInstanceState

    ti = ti or task_instance(dag_id, CANARY_APPROVAL_TASK_ID)
    if ti is None:
        return
    try:
        with airflow_api("cleanup") as client:
            client.patch(_hitl_path(ti), json={"chosen_options": ["Reject"], "params_input": {}})
    except Exception:
        ti.set_state(TaskInstanceState.FAILED)


def _joined(thread: threading.Thread, seen: dict[str, Any]) -> Any:
    thread.join(60)
    assert not thread.is_alive(), "the answering thread did not finish"
    if "error" in seen:
        raise seen["error"]
    return seen.get("result")


def _awaiting(dag_id: str) -> Any:
    def probe() -> Any:
        ti = task_instance(dag_id, CANARY_APPROVAL_TASK_ID)
        return ti if ti is not None and str(ti.state) == "awaiting_input" else None

    return wait_for(f"{dag_id}: {CANARY_APPROVAL_TASK_ID} awaiting input", probe)


def _progress(ti: Any) -> dict[str, Any]:
    from airflow.utils.session import create_session

    from airflow_provider_shardmigrate.progress import read_progress

    with create_session() as session:
        progress = read_progress(
            session, dag_id=ti.dag_id, run_id=ti.run_id, migration_id=ti.dag_id[len("shardmigrate__") :]
        )
    return dict(progress.to_dict())


def _hitl_path(ti: Any) -> str:
    return f"/api/v2/dags/{ti.dag_id}/dagRuns/{ti.run_id}/taskInstances/{ti.task_id}/{ti.map_index}/hitlDetails"


def _prompt(client: Any, ti: Any) -> dict[str, Any]:
    detail = client.get(_hitl_path(ti))
    assert detail.status_code == 200, detail.text
    return dict(detail.json())


def test_approve_releases_the_fleet(sqlite_fleet, write_migration, airflow_db):
    dag = build_migration_dag(_migration(write_migration, "300_approve"), _fleet(sqlite_fleet))

    def approve(ti: Any) -> dict[str, Any]:
        # Nothing but the canary migrated while the question is open, and progress says what the run waits for.
        assert INDEX in sqlite_fleet.objects("s0") and INDEX not in sqlite_fleet.objects("s1")
        waiting = _progress(ti)
        assert waiting["phase"] == "AwaitingApproval" and waiting["completed_shards"] == 1, waiting
        with airflow_api("alice") as client:
            prompt = _prompt(client, ti)
            response = client.patch(
                _hitl_path(ti), json={"chosen_options": ["Approve"], "params_input": {"comment": "canary looks fine"}}
            )
        assert response.status_code == 200, response.text
        return {"prompt": prompt, "response": response.json()}

    thread, seen = _answer_in_background(dag.dag_id, approve)
    run = run_dag(dag)
    answered = _joined(thread, seen)
    prompt = answered["prompt"]
    assert prompt["subject"] == "Approve canary s0 of 300_approve?"
    assert prompt["options"] == ["Approve", "Reject"] and prompt["defaults"] == ["Reject"]
    body = prompt["body"]
    assert "Canary shard **s0** of migration `300_approve`: **succeeded**" in body
    assert "the validation query returned `3`" in body
    assert "starts the other 2 shard(s)" in body
    assert "comment" in prompt["params"]
    assert answered["response"]["responded_by"]["name"] == "alice"

    assert run.state == "success", run.tasks
    assert run.outcomes() == {"s0": "succeeded", "s1": "succeeded", "s2": "succeeded"}
    decision = run.xcoms[(CANARY_APPROVAL_TASK_ID, -1)]
    assert decision["approved"] is True and decision["by"] == "alice"
    assert decision["comment"] == "canary looks fine" and decision["timed_out"] is False
    assert run.report is not None and run.report["halted_reason"] is None
    assert all(INDEX in sqlite_fleet.objects(shard_id) for shard_id in SHARDS)


def test_reject_leaves_the_fleet_pending_with_approver_and_comment(sqlite_fleet, write_migration, airflow_db):
    dag = build_migration_dag(_migration(write_migration, "301_reject"), _fleet(sqlite_fleet))

    def reject(ti: Any) -> None:
        with airflow_api("bob") as client:
            response = client.patch(
                _hitl_path(ti), json={"chosen_options": ["Reject"], "params_input": {"comment": "p99 latency doubled"}}
            )
        assert response.status_code == 200, response.text

    thread, seen = _answer_in_background(dag.dag_id, reject)
    run = run_dag(dag)
    _joined(thread, seen)
    assert run.state == "failed"
    assert run.outcomes() == {"s0": "succeeded", "s1": "pending", "s2": "pending"}
    assert run.tasks[(CANARY_APPROVAL_TASK_ID, -1)] == "success"  # answering is not a failure
    assert {state for (task, _), state in run.tasks.items() if task == "shards.apply"} == {"skipped"}
    assert run.report is not None
    assert run.report["halted_reason"] == (
        "canary approval rejected by bob: p99 latency doubled; the other shards were not started"
    )
    gate_error = gate_failure(MigrationResult.from_xcom(run.report))  # what the failed gate says
    assert gate_error is not None and "halted: canary approval rejected by bob: p99 latency doubled" in gate_error
    assert INDEX not in sqlite_fleet.objects("s1") and INDEX not in sqlite_fleet.objects("s2")


def test_no_answer_within_the_timeout_counts_as_reject(sqlite_fleet, write_migration, airflow_db):
    from airflow.jobs.job import Job
    from airflow.jobs.scheduler_job_runner import SchedulerJobRunner

    dag = build_migration_dag(
        _migration(write_migration, "302_timeout", canary_approval_timeout=1), _fleet(sqlite_fleet)
    )

    def let_it_time_out(ti: Any) -> None:
        assert ti.trigger_timeout is not None
        # The deadline recorded on the TI row passes; then the scheduler's own sweep resolves the request.
        wait_for("the approval deadline to pass", lambda: datetime.now(UTC) > ti.trigger_timeout)
        SchedulerJobRunner(job=Job()).check_awaiting_input_timeouts()

    thread, seen = _answer_in_background(dag.dag_id, let_it_time_out)
    run = run_dag(dag)
    _joined(thread, seen)
    assert run.state == "failed"
    assert run.outcomes() == {"s0": "succeeded", "s1": "pending", "s2": "pending"}
    decision = run.xcoms[(CANARY_APPROVAL_TASK_ID, -1)]
    assert decision["approved"] is False and decision["timed_out"] is True and decision["by"] is None
    assert run.report is not None
    assert run.report["halted_reason"] == (
        "canary approval got no answer within 1 s (a timeout counts as a reject); the other shards were not started"
    )


def test_a_dry_run_does_not_ask(sqlite_fleet, write_migration, airflow_db):
    dag = build_migration_dag(_migration(write_migration, "303_dry"), _fleet(sqlite_fleet))
    run = run_dag(dag, {"dry_run": True})
    assert run.state == "success", run.tasks
    assert set(run.outcomes().values()) == {"would_apply"}
    assert run.xcoms[(CANARY_APPROVAL_TASK_ID, -1)]["approved"] is True
