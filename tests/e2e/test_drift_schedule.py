"""The scheduled drift DAG on the real scheduler: a DAG file holding ``dag = build_drift_dag(topology=...)``
whose topology says ``drift.schedule: "* * * * *"``; unpaused through the REST API, the scheduler (not a
trigger) runs it, and a fleet of identical shards comes out healthy."""

from __future__ import annotations

import time

from tests.e2e import scenarios
from tests.e2e.conftest import E2E

SCHEDULED_RUN_TIMEOUT = 180.0


def test_drift_dag_runs_on_its_schedule_once_unpaused(e2e: E2E) -> None:
    api, dag_id = e2e.api, e2e.drift_dag_id
    e2e.deployment.wait_for_dags([dag_id], timeout=90, unpause=False)
    dag = api.get(f"/api/v2/dags/{dag_id}")
    assert dag["is_paused"] is True, "DAGs start paused in this deployment; the test unpauses it"
    assert dag["timetable_summary"] in ("* * * * *", "Every minute"), dag["timetable_summary"]
    assert api.get(f"/api/v2/dags/{dag_id}/dagRuns")["total_entries"] == 0

    patched = api.request("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False}, expect=200).json()
    assert patched["is_paused"] is False
    try:
        end = time.monotonic() + SCHEDULED_RUN_TIMEOUT
        finished = None
        while finished is None:
            runs = api.get(f"/api/v2/dags/{dag_id}/dagRuns", order_by="-run_after")["dag_runs"]
            assert all(r["run_type"] == "scheduled" for r in runs), runs
            finished = next((r for r in runs if r["state"] in ("success", "failed")), None)
            if finished is None:
                e2e.alive()
                assert time.monotonic() < end, (
                    f"no scheduled run finished {SCHEDULED_RUN_TIMEOUT:g}s after unpausing: {runs}"
                )
                time.sleep(1)
    finally:
        api.request("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": True}, expect=200)

    tis = {t["task_id"]: t for t in api.task_instances(dag_id, finished["dag_run_id"])}
    assert finished["run_type"] == "scheduled" and finished["triggered_by"] != "rest_api"
    assert finished["state"] == "success", tis
    assert tis["detect_drift"]["state"] == "success" and tis["publish"]["state"] == "success"
    published = api.xcom(dag_id, finished["dag_run_id"], "publish")
    assert published["health"]["status"] == "healthy", published
    report = published["report"]
    assert report is not None and report.get("baseline") == scenarios.DRIFT_SETTINGS["baseline"], report
