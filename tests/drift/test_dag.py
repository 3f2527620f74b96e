"""The drift DAG: parsed by Airflow's DagBag from a one-line DAG file, and run end to end with ``dag.test()``
on a real SQLite fleet -- converged, persistently drifted, and drifted only for a moment."""

from __future__ import annotations

import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_shardmigrate.dags.drift import DRIFT_DAG_ID, PUBLISH_TASK_ID, SENSOR_TASK_ID, build_drift_dag
from airflow_provider_shardmigrate.sensors.drift import REPORT_KEY
from tests.dags.conftest import run_dag
from tests.drift.conftest import run_sql, write_topology

pytestmark = pytest.mark.slow

SCHEMA = """
CREATE TABLE orders (id INTEGER PRIMARY KEY, total NUMERIC(10,2) NOT NULL);
CREATE TABLE payments (id INTEGER PRIMARY KEY, order_id INTEGER REFERENCES orders (id));
"""
DAG_FILE = textwrap.dedent(
    """
    from airflow_provider_shardmigrate import build_drift_dag

    dag = build_drift_dag(topology="shards.yaml")
    """
)


def test_dag_file_parses_without_touching_connections(tmp_path: Path):
    from airflow.dag_processing.dagbag import DagBag

    folder = tmp_path / "dags"
    folder.mkdir()
    # connections that do not exist: parsing must never look them up
    write_topology(
        folder / "shards.yaml",
        ["a", "b", "c"],
        inactive=("c",),
        schedule="*/15 * * * *",
        baseline="b",
        depth="full",
        critical_tables=["orders", "payments"],
        grace_period=600,
    )
    (folder / "drift_dag.py").write_text(DAG_FILE)
    bag = DagBag(dag_folder=str(folder))
    assert bag.import_errors == {}
    dag = bag.dags[DRIFT_DAG_ID]
    assert sorted(dag.task_ids) == [SENSOR_TASK_ID, PUBLISH_TASK_ID]
    assert dag.schedule == "*/15 * * * *"
    sensor = dag.get_task(SENSOR_TASK_ID)
    assert sensor.mode == "reschedule"
    assert sensor.topology_path == str((folder / "shards.yaml").resolve())
    params = dag.params.dump()
    assert params == {
        "baseline": "b",
        "depth": "full",
        "critical_tables": ["orders", "payments"],
        "grace_period": 600,
        "fail_on": "degraded",
    }
    assert dag.get_task(PUBLISH_TASK_ID).trigger_rule == "all_done"


def test_defaults_without_a_drift_section(tmp_path: Path):
    write_topology(tmp_path / "shards.yaml", ["a", "b"])
    dag = build_drift_dag("shards.yaml", base_dir=tmp_path)
    assert dag.schedule == "@hourly"
    assert dag.params.dump() == {
        "baseline": "",
        "depth": "tables_and_columns",
        "critical_tables": [],
        "grace_period": 1800.0,
        "fail_on": "degraded",
    }


def test_bad_param_values_are_refused(tmp_path: Path):
    from airflow.sdk.exceptions import ParamValidationError

    write_topology(tmp_path / "shards.yaml", ["a", "b"])
    dag = build_drift_dag(tmp_path / "shards.yaml")
    for key, bad in (
        ("depth", "everything"),
        ("baseline", "zz"),
        ("grace_period", -1),
        ("critical_tables", "x"),
        ("fail_on", "healthy"),
    ):
        with pytest.raises(ParamValidationError):
            dag.params.get_param(key).resolve(value=bad)
    dag.params.get_param("baseline").resolve(value="b")  # a shard id is fine


def _pokes(dag_id: str, run_id: str) -> list[Any]:
    """Start times of the sensor's rescheduled pokes (one TaskReschedule row per poke that saw drift)."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.taskreschedule import TaskReschedule
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = (
            session.query(TaskReschedule.start_date)
            .join(TaskInstance, TaskInstance.id == TaskReschedule.ti_id)
            .filter(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id)
            .order_by(TaskReschedule.id)
            .all()
        )
    return [row[0] for row in rows]


def _fleet(sqlite_fleet: Any, tmp_path: Path, **drift: Any) -> Path:
    for shard in ("d0", "d1", "d2"):
        sqlite_fleet.add(shard, SCHEMA)
    path = tmp_path / "shards.yaml"
    write_topology(path, ["d0", "d1", "d2"], depth="full", **drift)
    return path


def test_converged_fleet_succeeds_and_is_healthy(sqlite_fleet, tmp_path, airflow_db):
    path = _fleet(sqlite_fleet, tmp_path, critical_tables=["orders"])
    dag = build_drift_dag(path, dag_id="drift_converged", poke_interval=1)
    run = run_dag(dag)
    assert run.state == "success", run.tasks
    published = run.xcoms[(PUBLISH_TASK_ID, -1)]
    assert published["health"]["status"] == "healthy"
    assert published["report"]["shards_compared"] == ["d1", "d2"]
    assert published["report"]["has_drift"] is False
    assert run.xcoms[(SENSOR_TASK_ID, -1)]["health"]["status"] == "healthy"


def test_persistent_drift_past_the_grace_period_fails_the_run_with_the_report(sqlite_fleet, tmp_path, airflow_db):
    path = _fleet(sqlite_fleet, tmp_path, critical_tables=["orders"], grace_period=1800)
    run_sql(sqlite_fleet, "d2", "ALTER TABLE orders ADD COLUMN coupon TEXT;")
    dag = build_drift_dag(path, dag_id="drift_persistent", poke_interval=1)
    began = time.monotonic()
    run = run_dag(dag, {"grace_period": 2})  # the trigger form overrides the topology's grace period
    assert run.state == "failed"
    assert run.tasks[(SENSOR_TASK_ID, -1)] == "failed"
    assert run.tasks[(PUBLISH_TASK_ID, -1)] == "failed"
    published = run.xcoms[(PUBLISH_TASK_ID, -1)]
    assert published["health"]["status"] == "unhealthy"
    assert published["health"]["critical_drift"] == {"orders": ["d2"]}
    assert published["report"]["drifted_shards"] == ["d2"]
    diff = published["report"]["diffs"]["d2"][0]
    assert diff["table"] == "orders" and diff["columns"][0]["name"] == "coupon"
    assert "tables" not in published["report"]  # differences only
    assert time.monotonic() - began < 60
    pokes = _pokes("drift_persistent", run.run_id)
    assert len(pokes) >= 2, "the sensor rescheduled while drift was within the grace period"
    failed_at = run.times[(SENSOR_TASK_ID, -1)][1]
    assert (failed_at - pokes[0]).total_seconds() >= 2  # it failed only once the grace period had passed


def _fix_after_first_poke(dag_id: str, fix: Any, seen: dict[str, Any]) -> threading.Thread:
    """Wait until the sensor's first poke has reported drift (its XCom is in the metadata DB), then fix it."""

    def watch() -> None:
        from airflow.models.xcom import XComModel
        from airflow.utils.session import create_session

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with create_session() as session:
                row = (
                    session.query(XComModel)
                    .filter(XComModel.dag_id == dag_id, XComModel.key == REPORT_KEY)
                    .order_by(XComModel.timestamp.desc())
                    .first()
                )
                value = XComModel.deserialize_value(row) if row is not None else None
            if value is not None:
                seen["first_poke"] = value
                fix()
                return
            time.sleep(0.1)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_drift_that_disappears_within_the_grace_period_succeeds(sqlite_fleet, tmp_path, airflow_db):
    path = _fleet(sqlite_fleet, tmp_path, grace_period=120)
    run_sql(sqlite_fleet, "d1", "DROP TABLE payments;")  # a rollout caught half-way
    dag = build_drift_dag(path, dag_id="drift_transient", poke_interval=1)
    seen: dict[str, Any] = {}
    fixer = _fix_after_first_poke(
        "drift_transient",
        lambda: run_sql(
            sqlite_fleet,
            "d1",
            "CREATE TABLE payments (id INTEGER PRIMARY KEY, order_id INTEGER REFERENCES orders (id));",
        ),
        seen,
    )
    run = run_dag(dag)
    fixer.join(5)
    assert seen["first_poke"]["report"]["drifted_shards"] == ["d1"]  # the drift was really seen first
    assert seen["first_poke"]["health"]["status"] == "degraded"
    assert run.state == "success", run.tasks
    assert run.xcoms[(PUBLISH_TASK_ID, -1)]["health"]["status"] == "healthy"
    assert len(_pokes("drift_transient", run.run_id)) >= 1  # rescheduled, then succeeded


def test_gauge_and_failure_of_the_publish_step(monkeypatch):
    from airflow.sdk.observability import stats

    from airflow_provider_shardmigrate.dags.drift import DRIFTED_SHARDS_GAUGE, publish_drift

    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(stats, "gauge", lambda *a, **k: calls.append((a, k)))
    report = {
        "baseline": "a",
        "depth": "full",
        "generated_at": "2026-01-01T00:00:00+00:00",
        "shards_compared": ["b", "c"],
        "diffs": {"b": [{"table": "t", "kind": "missing"}]},
        "errors": {},
    }
    health = {"status": "degraded", "description": "degraded: 1 shard(s) drifted"}
    result, failure = publish_drift({"report": report, "health": health})
    assert failure is not None and failure.startswith("[shardmigrate.drift_detected]")
    assert result["report"]["drifted_shards"] == ["b"]
    ((args, kwargs),) = calls
    assert args == (DRIFTED_SHARDS_GAUGE, 1)
    assert kwargs["tags"]["health"] == "degraded" and kwargs["tags"]["baseline"] == "a"
    _, failure = publish_drift(None)
    assert failure is not None and "shardmigrate.schema_comparison_failed" in failure
