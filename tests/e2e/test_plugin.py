"""The provider's plugin on the real api-server: live progress of a rollout while it runs, fleet health
from the latest drift report, both behind Airflow authentication."""

from __future__ import annotations

import contextlib
import functools
from typing import Any

import httpx

from tests.e2e import scenarios
from tests.e2e.conftest import E2E
from tests.e2e.faults import ShardDb, wait_until
from tests.e2e.project import migration_dag_id

DAG_ID = migration_dag_id(scenarios.CONC_PARALLEL.id)


def test_plugin_requires_authentication(e2e: E2E) -> None:
    url = str(e2e.api.client.base_url)
    for path in (f"/shardmigrate/progress/{DAG_ID}", "/shardmigrate/health"):
        assert httpx.get(url + path, timeout=30).status_code == 401, path


def test_progress_is_readable_while_the_rollout_runs(e2e: E2E) -> None:
    """While the test holds a row lock on ``customers`` of every shard, the migration's ALTER waits on each
    shard it starts: max_parallelism = 2 shards are running -- for as long as the test wants, not for as
    long as a race allows -- and six are waiting. The test reads the progress in that state, then lets go."""
    api, migration = e2e.api, scenarios.PLUGIN_PROGRESS
    dag_id = migration_dag_id(migration.id)
    shards = [
        ShardDb(shard_id, "postgres", e2e.pg.databases[shard_id], functools.partial(e2e.pg.connect, shard_id))
        for shard_id in scenarios.CONC_SHARDS
    ]
    seen: list[dict[str, Any]] = []

    def progress() -> dict[str, Any]:
        seen.append(api.request("GET", f"/shardmigrate/progress/{dag_id}/{run_id}", expect=(200,)).json())
        return seen[-1]

    with contextlib.ExitStack() as stack:
        locks = [stack.enter_context(shard.row_lock()) for shard in shards]
        run_id = api.trigger(dag_id)["dag_run_id"]
        # Two ALTERs wait for our locks (the database says so), and the endpoint says two are running.
        wait_until(
            "two shards' DDL waiting for the test's locks",
            lambda: sum(s.waiting_ddl() for s in shards) == 2,
            180,
            alive=e2e.alive,
        )
        during = wait_until(
            "the progress endpoint to show the blocked shards running",
            lambda: (p := progress())["running_shards"] == 2 and p,
            60,
            alive=e2e.alive,
        )
        assert not during["is_finished"] and during["phase"] == "Parallel", during
        assert list(during["shards"]) == scenarios.CONC_SHARDS, during
        states = list(during["shards"].values())
        assert (states.count("running"), states.count("waiting")) == (2, 6), during
        assert during["completed_shards"] == 0 and during["total_shards"] == 8, during
        assert sum(s.waiting_ddl() for s in shards) == 2, "still blocked after reading the progress"
        for lock in locks:
            lock.release()
    final = wait_until("the rollout to finish", lambda: (p := progress())["is_finished"] and p, 180, alive=e2e.alive)
    assert final["run_id"] == run_id and final["dag_id"] == dag_id and final["run_state"] == "success", final
    assert final["migration_id"] == migration.id
    assert final["total_shards"] == len(scenarios.CONC_SHARDS)
    assert list(final["shards"]) == scenarios.CONC_SHARDS  # topology order
    assert set(final["shards"].values()) == {"succeeded"}, final
    assert final["completed_shards"] == len(scenarios.CONC_SHARDS) and final["phase"] == "Completed"
    assert all(p["running_shards"] <= 2 for p in seen), "never more than max_parallelism = 2 running"
    latest = api.get(f"/shardmigrate/progress/{dag_id}")
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
