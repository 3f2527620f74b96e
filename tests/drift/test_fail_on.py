"""``drift.fail_on``: one rule for the drift run. ``degraded`` (the default) fails on any drift that outlasts
the grace period; ``unhealthy`` fails only on drift in a critical table (or an unreadable shard) and lets
degraded drift through with the report published. Real drift DAG runs (``dag.test()``) on SQLite shards."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from airflow_provider_shardmigrate.core.errors import InvalidTopologyError
from airflow_provider_shardmigrate.core.health import HealthStatus
from airflow_provider_shardmigrate.core.topology import DriftFailOn, parse_topology
from airflow_provider_shardmigrate.dags.drift import PUBLISH_TASK_ID, SENSOR_TASK_ID, build_drift_dag
from tests.dags.conftest import RunOutcome, run_dag
from tests.drift.conftest import run_sql, write_topology

pytestmark = pytest.mark.slow

SCHEMA = """
CREATE TABLE orders (id INTEGER PRIMARY KEY, total NUMERIC(10,2) NOT NULL);
CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT);
"""


def _drifted_fleet(sqlite_fleet: Any, tmp_path: Path, table: str, **drift: Any) -> Path:
    """Three shards; ``f2`` has an extra column in ``table``. ``orders`` is the critical table."""
    for shard in ("f0", "f1", "f2"):
        sqlite_fleet.add(shard, SCHEMA)
    run_sql(sqlite_fleet, "f2", f"ALTER TABLE {table} ADD COLUMN extra TEXT;")
    path = tmp_path / "shards.yaml"
    write_topology(path, ["f0", "f1", "f2"], critical_tables=["orders"], grace_period=1, **drift)
    return path


def _run(path: Path, dag_id: str, conf: dict[str, Any] | None = None) -> RunOutcome:
    return run_dag(build_drift_dag(path, dag_id=dag_id, poke_interval=1), conf)


def test_the_topology_setting_is_validated():
    shards = [{"id": "a", "conn_id": "a"}]
    assert parse_topology({"shards": shards}).drift.fail_on is DriftFailOn.DEGRADED
    assert parse_topology({"shards": shards, "drift": {"fail_on": "unhealthy"}}).drift.fail_on is DriftFailOn.UNHEALTHY
    with pytest.raises(InvalidTopologyError, match=r"field 'drift.fail_on': unknown fail_on 'never'"):
        parse_topology({"shards": shards, "drift": {"fail_on": "never"}})


def test_the_rule():
    assert not HealthStatus.HEALTHY.fails("degraded") and not HealthStatus.HEALTHY.fails("unhealthy")
    assert HealthStatus.DEGRADED.fails("degraded") and not HealthStatus.DEGRADED.fails("unhealthy")
    assert HealthStatus.UNHEALTHY.fails("degraded") and HealthStatus.UNHEALTHY.fails("unhealthy")


def test_default_degraded_fails_on_drift_outside_critical_tables(sqlite_fleet, tmp_path, airflow_db):
    path = _drifted_fleet(sqlite_fleet, tmp_path, "notes")
    run = _run(path, "fail_on_default")
    assert run.state == "failed"
    assert run.tasks[(SENSOR_TASK_ID, -1)] == "failed"
    published = run.xcoms[(PUBLISH_TASK_ID, -1)]
    assert published["health"]["status"] == "degraded"
    assert published["report"]["drifted_shards"] == ["f2"]


def test_unhealthy_lets_degraded_drift_through_with_the_report(sqlite_fleet, tmp_path, airflow_db):
    path = _drifted_fleet(sqlite_fleet, tmp_path, "notes", fail_on="unhealthy")
    run = _run(path, "fail_on_unhealthy_degraded")
    assert run.state == "success", run.tasks
    published = run.xcoms[(PUBLISH_TASK_ID, -1)]
    assert published["health"]["status"] == "degraded"
    assert published["report"]["diffs"]["f2"][0]["table"] == "notes"


def test_unhealthy_still_fails_on_a_critical_table(sqlite_fleet, tmp_path, airflow_db):
    path = _drifted_fleet(sqlite_fleet, tmp_path, "orders", fail_on="unhealthy")
    run = _run(path, "fail_on_unhealthy_critical")
    assert run.state == "failed"
    assert run.xcoms[(PUBLISH_TASK_ID, -1)]["health"]["critical_drift"] == {"orders": ["f2"]}


def test_the_trigger_form_overrides_the_topology(sqlite_fleet, tmp_path, airflow_db):
    path = _drifted_fleet(sqlite_fleet, tmp_path, "notes")  # topology: degraded
    run = _run(path, "fail_on_override", {"fail_on": "unhealthy"})
    assert run.state == "success", run.tasks
    assert run.xcoms[(PUBLISH_TASK_ID, -1)]["health"]["status"] == "degraded"
