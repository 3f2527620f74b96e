"""The provider's metrics go through Airflow's own stats: with the deployment's statsd settings, a rollout's
per-shard and per-run metrics and the drift gauge arrive at the StatsD server."""

from __future__ import annotations

from tests.e2e import scenarios
from tests.e2e.conftest import E2E
from tests.e2e.project import migration_dag_id


def test_rollout_and_drift_metrics_reach_statsd(e2e: E2E) -> None:
    statsd = e2e.statsd
    assert statsd is not None
    api = e2e.api
    dag_id = migration_dag_id(scenarios.METRICS_TABLE.id)
    run_id = api.trigger(dag_id)["dag_run_id"]
    assert api.wait_run(dag_id, run_id, timeout=180, alive=e2e.alive)["state"] == "success"

    shards = len(scenarios.REST_SHARDS)
    migrated = statsd.wait_for("airflow.shardmigrate.shards_migrated:", count=shards)
    assert len(migrated) >= shards and all(line.endswith("|c") for line in migrated), migrated
    durations = statsd.wait_for("airflow.shardmigrate.shard_duration_ms:", count=shards)
    assert all(line.endswith("|ms") for line in durations), durations
    totals = statsd.wait_for("airflow.shardmigrate.total_duration_ms:")
    assert totals and totals[-1].endswith("|ms"), totals
    assert int(float(totals[-1].split(":")[1].split("|")[0])) > 0

    drift = e2e.drift_dag_id
    api.request("PATCH", f"/api/v2/dags/{drift}", json={"is_paused": False}, expect=200)
    try:
        drift_run = api.trigger(drift)["dag_run_id"]
        assert api.wait_run(drift, drift_run, timeout=180, alive=e2e.alive)["state"] == "success"
    finally:
        api.request("PATCH", f"/api/v2/dags/{drift}", json={"is_paused": True}, expect=200)
    gauges = statsd.wait_for("airflow.shardmigrate.drifted_shards:")
    assert gauges and gauges[-1] == "airflow.shardmigrate.drifted_shards:0|g", gauges
