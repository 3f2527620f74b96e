"""The provider's plugin on the real api-server: live progress of a rollout while it runs, fleet health
from the latest drift report, both behind Airflow authentication."""

from __future__ import annotations

import time

import httpx

from tests.e2e import scenarios
from tests.e2e.conftest import E2E
from tests.e2e.project import migration_dag_id

DAG_ID = migration_dag_id(scenarios.CONC_PARALLEL.id)


def test_plugin_requires_authentication(e2e: E2E) -> None:
    url = str(e2e.api.client.base_url)
    for path in (f"/shardmigrate/progress/{DAG_ID}", "/shardmigrate/health"):
        assert httpx.get(url + path, timeout=30).status_code == 401, path


def test_progress_is_readable_while_the_rollout_runs(e2e: E2E) -> None:
    api = e2e.api
    run_id = api.trigger(DAG_ID, {"dry_run": True})["dag_run_id"]
    seen = []
    deadline = time.monotonic() + 180
    while True:
        response = api.request("GET", f"/shardmigrate/progress/{DAG_ID}/{run_id}", expect=(200,))
        seen.append(response.json())
        if seen[-1]["is_finished"]:
            break
        assert time.monotonic() < deadline, seen[-1]
        e2e.alive()
        time.sleep(0.3)
    final = seen[-1]
    assert final["run_id"] == run_id and final["dag_id"] == DAG_ID and final["run_state"] == "success"
    assert final["migration_id"] == scenarios.CONC_PARALLEL.id
    assert final["total_shards"] == len(scenarios.CONC_SHARDS)
    assert list(final["shards"]) == scenarios.CONC_SHARDS  # topology order
    assert set(final["shards"].values()) <= {"would_apply", "already_applied"}
    assert final["completed_shards"] == len(scenarios.CONC_SHARDS) and final["phase"] == "Completed"
    # While it ran, the endpoint said so: some shards running (never more than max_parallelism = 2),
    # others waiting, the phase of the parallel wave.
    during = [p for p in seen if not p["is_finished"]]
    assert any(p["running_shards"] > 0 for p in during), during
    assert all(p["running_shards"] <= 2 for p in seen)
    assert any(p["phase"] == "Parallel" and "waiting" in p["shards"].values() for p in during), during
    latest = api.get(f"/shardmigrate/progress/{DAG_ID}")
    assert latest["run_id"] == run_id
    assert api.request("GET", "/shardmigrate/progress/no_such_dag/x", expect=(404, 403)).status_code in (404, 403)


def test_health_serves_the_latest_drift_report(e2e: E2E) -> None:
    api, dag_id = e2e.api, e2e.drift_dag_id
    e2e.deployment.wait_for_dags([dag_id], timeout=90, unpause=False)
    api.request("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False}, expect=200)
    try:
        run_id = api.trigger(dag_id)["dag_run_id"]
        run = api.wait_run(dag_id, run_id, timeout=180, alive=e2e.alive)
    finally:
        api.request("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": True}, expect=200)
    assert run["state"] == "success"
    health = api.get("/shardmigrate/health", dag_id=dag_id)
    assert health["dag_id"] == dag_id
    assert health["health"]["status"] == "healthy", health
    assert health["report"]["has_drift"] is False
    published = api.xcom(dag_id, health["run_id"], "publish")
    assert published["health"] == health["health"]
