"""The REST API as CI/CD uses it: Bearer token from /auth/token, trigger with conf, poll, read every per-shard
XCom and the report (paginated), and check them against the shard databases (catalog + history table)."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.e2e import scenarios
from tests.e2e.conftest import E2E
from tests.e2e.project import migration_dag_id

DAG_ID = migration_dag_id(scenarios.REST_ITEMS.id)
SHARD_KEYS = {"shard_id", "outcome", "duration_ms", "error_code", "error_message"}
REPORT_KEYS = {
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


def test_requests_without_a_valid_token_get_401(e2e: E2E) -> None:
    url = e2e.deployment.url
    anonymous = httpx.Client(base_url=url, timeout=30)
    assert anonymous.get(f"/api/v2/dags/{DAG_ID}").status_code == 401
    assert anonymous.get(f"/api/v2/dags/{DAG_ID}/dagRuns").status_code == 401
    response = anonymous.post(f"/api/v2/dags/{DAG_ID}/dagRuns", json={"logical_date": None, "conf": {}})
    assert response.status_code == 401, response.text
    # A token that is not a valid JWT is refused too (Airflow 3.3 answers 403 "Forbidden" for it).
    forged = httpx.Client(base_url=url, timeout=30, headers={"Authorization": "Bearer not-a-jwt"})
    assert forged.get(f"/api/v2/dags/{DAG_ID}").status_code in (401, 403)
    wrong = anonymous.post("/auth/token", json={"username": "admin", "password": "wrong"})
    assert wrong.status_code == 401
    # ... and the harness's token works (201 from /auth/token, then Bearer).
    assert e2e.api.request("GET", f"/api/v2/dags/{DAG_ID}").status_code == 200


@pytest.mark.parametrize(
    ("conf", "param"),
    [
        ({"stop_on_first_failure": "yes"}, "stop_on_first_failure"),
        ({"auto_rollback": "true"}, "auto_rollback"),
        ({"dry_run": 1}, "dry_run"),
    ],
)
def test_invalid_conf_is_refused_with_400_naming_the_param(e2e: E2E, conf: dict[str, object], param: str) -> None:
    before = e2e.api.get(f"/api/v2/dags/{DAG_ID}/dagRuns")["total_entries"]
    response = e2e.api.request("POST", f"/api/v2/dags/{DAG_ID}/dagRuns", json={"logical_date": None, "conf": conf})
    assert response.status_code == 400, response.text
    detail = response.json()["detail"]
    assert param in detail and "boolean" in detail, detail
    assert e2e.api.get(f"/api/v2/dags/{DAG_ID}/dagRuns")["total_entries"] == before, "a refused trigger made a run"


def test_trigger_poll_and_read_every_shard_through_the_api(e2e: E2E) -> None:
    api = e2e.api
    conf = {"stop_on_first_failure": False, "auto_rollback": True, "dry_run": False}
    run_id = f"e2e_rest_{e2e.deployment.run_token}"
    created = api.trigger(DAG_ID, conf, run_id=run_id)
    assert created["dag_run_id"] == run_id and created["conf"] == conf and created["state"] == "queued"

    run = api.wait_run(DAG_ID, run_id, timeout=180, alive=e2e.alive)
    assert run["state"] == "success", api.task_instances(DAG_ID, run_id)
    assert run["conf"] == conf and run["run_type"] == "manual" and run["triggered_by"] == "rest_api"

    # Task instances, three per page: one per shard + one per other task (auto_rollback, report, gate, ...).
    others = [t["task_id"] for t in api.get(f"/api/v2/dags/{DAG_ID}/tasks")["tasks"]]
    others = [task_id for task_id in others if not task_id.startswith("shards.")]
    assert {"auto_rollback", "report", "gate"} <= set(others), others
    total = len(scenarios.REST_SHARDS) + len(others)
    pages: list[int] = []
    tis = api.task_instances(DAG_ID, run_id, page_size=3, pages=pages)
    assert pages == [3] * (total // 3) + ([total % 3] if total % 3 else []), (pages, total)
    assert len(pages) >= 4, "the listing must span several pages"
    assert len({(t["task_id"], t["map_index"]) for t in tis}) == len(tis) == total
    states = {(t["task_id"], t["map_index"]): t["state"] for t in tis}
    shard_tis = {t["rendered_map_index"]: t for t in tis if t["task_id"] == "shards.apply"}
    assert sorted(shard_tis) == sorted(scenarios.REST_SHARDS), "the Grid label of every mapped TI is its shard id"
    assert all(t["state"] == "success" for t in shard_tis.values()), states
    assert states[("auto_rollback", -1)] == "skipped", "nothing to roll back"
    assert states[("rollbacks.rollback", -1)] == "skipped", "no rollback task instance"
    skipped = {"auto_rollback", "rollbacks.rollback"}
    assert all(states[(task_id, -1)] == "success" for task_id in others if task_id not in skipped), states

    # The XCom list of the mapped task, paginated (3 per page), then each value by map index.
    xcom_pages: list[int] = []
    entries = list(
        api.paginate(
            f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/shards.apply/xcomEntries",
            "xcom_entries",
            page_size=3,
            pages=xcom_pages,
        )
    )
    assert xcom_pages == [3, 3, 1], xcom_pages
    assert sorted(e["map_index"] for e in entries) == list(range(len(scenarios.REST_SHARDS)))
    per_shard = {}
    for entry in entries:
        value = api.xcom(DAG_ID, run_id, "shards.apply", entry["map_index"])
        assert set(value) == SHARD_KEYS, value
        # Topology order is the map order, and the Grid label names the same shard.
        assert value["shard_id"] == scenarios.REST_SHARDS[entry["map_index"]]
        assert shard_tis[value["shard_id"]]["map_index"] == entry["map_index"]
        per_shard[value["shard_id"]] = value
    for value in per_shard.values():
        assert value["outcome"] == "succeeded", value
        assert value["error_code"] is None and value["error_message"] is None
        assert isinstance(value["duration_ms"], int) and value["duration_ms"] >= 0

    report = api.xcom(DAG_ID, run_id, "report")
    assert set(report) == REPORT_KEYS, report
    assert report["migration_id"] == scenarios.REST_ITEMS.id and report["dag_run_id"] == run_id
    assert report["strategy"] == "parallel" and report["all_succeeded"] is True
    assert (
        report["succeeded_count"],
        report["failed_count"],
        report["pending_count"],
        report["rolled_back_count"],
    ) == (len(scenarios.REST_SHARDS), 0, 0, 0)
    # Every targeted shard, once (key order is not kept: the metadata DB stores XCom as JSONB).
    assert sorted(report["shards"]) == sorted(scenarios.REST_SHARDS)
    assert report["shards"] == per_shard, "the report carries exactly the per-shard statuses"
    assert report["total_duration_ms"] > 0

    # What the API says is what the shard databases say: the catalog and the history table.
    for shard_id in scenarios.REST_SHARDS:
        assert "e2e_items" in e2e.tables(shard_id), f"{shard_id}: table missing"
        row = e2e.history(shard_id)[scenarios.REST_ITEMS.id]
        assert row["status"] == "applied", row
        assert row["dag_id"] == DAG_ID and row["run_id"] == run_id, row
        assert str(row["checksum"]).startswith("sha256:") and row["error"] in (None, ""), row

    # Nothing secret in XCom: the metadata DB URL, the JWT secret and the UI password never appear.
    dumped = json.dumps([report, per_shard])
    for secret in (e2e.deployment.password, e2e.deployment.environment()["AIRFLOW__API_AUTH__JWT_SECRET"]):
        assert secret not in dumped
