"""Retry one shard: it fails for a fixable reason (another session holds its migration lock); once the lock
is released, clearing that shard's task instance through the REST API (with downstream) re-runs only that
shard plus auto_rollback/report/gate, and the run ends success with a report that says so."""

from __future__ import annotations

from tests.e2e import scenarios
from tests.e2e.conftest import E2E
from tests.e2e.project import migration_dag_id

DAG_ID = migration_dag_id(scenarios.RETRY_INDEX.id)
BLOCKED = "rpg-1"
INDEX = "e2e_idx_customers_name"


def test_clearing_one_failed_shard_reruns_only_that_shard(e2e: E2E) -> None:
    api = e2e.api
    with e2e.pg.hold_migration_lock(BLOCKED):
        run_id = api.trigger(DAG_ID, {"stop_on_first_failure": False})["dag_run_id"]
        run = api.wait_run(DAG_ID, run_id, timeout=180, alive=e2e.alive)
    assert run["state"] == "failed"
    before = {(t["task_id"], t["map_index"]): t for t in api.task_instances(DAG_ID, run_id)}
    shard_ti = next(t for t in before.values() if t["rendered_map_index"] == BLOCKED)
    assert shard_ti["task_id"] == "shards.apply" and shard_ti["state"] == "failed"
    failed = api.xcom(DAG_ID, run_id, "shards.apply", shard_ti["map_index"])
    assert failed["outcome"] == "failed" and failed["error_code"] == "shardmigrate.lock_timeout", failed
    first_report = api.xcom(DAG_ID, run_id, "report")
    assert first_report["failed_count"] == 1 and first_report["shards"][BLOCKED]["outcome"] == "failed"
    assert INDEX not in e2e.fleet(BLOCKED).indexes(BLOCKED)
    others = [s for s in scenarios.REST_SHARDS if s != BLOCKED]
    assert all(first_report["shards"][s]["outcome"] == "succeeded" for s in others), first_report

    # The lock is released (the blocking session ended): clear that shard, and downstream, through the API.
    body = {
        "dry_run": False,
        "dag_run_id": run_id,
        "task_ids": [["shards.apply", shard_ti["map_index"]]],
        "include_downstream": True,
        "only_failed": False,
        "reset_dag_runs": True,
    }
    cleared = api.request("POST", f"/api/v2/dags/{DAG_ID}/clearTaskInstances", json=body, expect=200).json()
    cleared_keys = {(t["task_id"], t["map_index"]) for t in cleared["task_instances"]}
    # That shard and what is downstream of it (auto_rollback -> report -> gate); no other shard.
    assert {("shards.apply", shard_ti["map_index"]), ("auto_rollback", -1), ("report", -1), ("gate", -1)} == {
        key for key in cleared_keys if key[0].startswith("shards.") or key[0] in ("auto_rollback", "report", "gate")
    }, cleared_keys
    run = api.wait_run(DAG_ID, run_id, timeout=180, alive=e2e.alive)
    assert run["state"] == "success", api.task_instances(DAG_ID, run_id)

    after = {(t["task_id"], t["map_index"]): t for t in api.task_instances(DAG_ID, run_id)}
    rerun = {key for key, ti in after.items() if ti["try_number"] != before[key]["try_number"]}
    # the mapped rollback task had nothing to do again: Airflow skips it without running it
    assert rerun == cleared_keys - {("rollbacks.rollback", -1)}, "exactly the cleared task instances ran again"
    assert after[("rollbacks.rollback", -1)]["state"] == "skipped"
    assert [key for key in rerun if key[0].startswith("shards.")] == [("shards.apply", shard_ti["map_index"])]
    for key, ti in after.items():
        if key not in rerun:
            assert ti["start_date"] == before[key]["start_date"] and ti["state"] == before[key]["state"], (key, ti)
            if key[0].startswith("shards."):
                assert ti["state"] == "success", (key, ti)
    assert after[("shards.apply", shard_ti["map_index"])]["state"] == "success"
    assert after[("report", -1)]["state"] == "success" and after[("gate", -1)]["state"] == "success"

    status = api.xcom(DAG_ID, run_id, "shards.apply", shard_ti["map_index"])
    assert status["shard_id"] == BLOCKED and status["outcome"] == "succeeded" and status["error_code"] is None
    report = api.xcom(DAG_ID, run_id, "report")
    assert report["all_succeeded"] is True and report["failed_count"] == 0
    assert report["succeeded_count"] == len(scenarios.REST_SHARDS)
    assert report["shards"][BLOCKED] == status
    for shard_id in scenarios.REST_SHARDS:
        assert INDEX in e2e.fleet(shard_id).indexes(shard_id), shard_id
        row = e2e.history(shard_id)[scenarios.RETRY_INDEX.id]
        assert row["status"] == "applied" and row["run_id"] == run_id, row
