"""The plugin as the api-server serves it (Airflow's own app, built in-process on the session's metadata DB,
with every entry-point plugin mounted): the fleet page and its data behind the login, the API reference
without a CDN, and the app built only when the api-server asks for it.

The data comes from real DAG runs (``dag.test()``): a rollout that fails on one SQLite shard and auto-rolls
back the others, a drift DAG that finds drift, a canary rollout waiting for its approval (live progress), and
the fleet status published by a stand-in ``shardmigrate_status`` DAG (tests/plugins/fleet_status.py)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import yaml

from airflow_provider_shardmigrate.core.topology import parse_topology
from airflow_provider_shardmigrate.dags.drift import build_drift_dag
from airflow_provider_shardmigrate.dags.layout import CANARY_APPROVAL_TASK_ID
from airflow_provider_shardmigrate.dags.migration import build_migration_dag
from airflow_provider_shardmigrate.plugins.shardmigrate_plugin import ShardMigratePlugin
from tests.airflow_api import airflow_api, task_instance, wait_for
from tests.conftest import BASE_SCHEMA
from tests.dags.conftest import run_dag
from tests.drift.conftest import run_sql, write_topology
from tests.plugins.fleet_status import fleet_status, publish, row_from_history

pytestmark = pytest.mark.slow

UNIQUE_UP = "CREATE UNIQUE INDEX idx_customers_name ON customers (name);"
DUPLICATE = BASE_SCHEMA + "INSERT INTO customers (name) VALUES ('ada');"
PROTECTED = [
    "/shardmigrate/fleet",
    "/shardmigrate/fleet/summary",
    "/shardmigrate/fleet/matrix",
    "/shardmigrate/static/fleet.js",
    "/shardmigrate/static/fleet.css",
    "/shardmigrate/docs",
    "/shardmigrate/redoc",
    "/shardmigrate/openapi.json",
    "/shardmigrate/health",
]


def test_the_app_is_built_only_when_the_api_server_asks_for_it():
    plugin = ShardMigratePlugin()
    assert plugin._fastapi_apps is None  # a task process instantiates the plugin and never reads fastapi_apps
    (view,) = plugin.external_views
    assert view["url_route"] == "shardmigrate-fleet" and view["destination"] == "nav"
    assert view["href"].endswith("/shardmigrate/fleet")
    (app,) = plugin.fastapi_apps
    assert app["url_prefix"] == "/shardmigrate" and plugin.fastapi_apps[0]["app"] is app["app"]


def test_every_route_needs_a_login(airflow_db):
    with airflow_api(user=None) as anonymous:
        for path in PROTECTED:
            response = anonymous.get(path)
            assert response.status_code == 401, (path, response.status_code, response.text[:200])


def test_the_api_reference_is_local_html(airflow_db):
    with airflow_api() as client:
        for path in ("/shardmigrate/docs", "/shardmigrate/redoc"):
            page = client.get(path)
            assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
            assert "GET /fleet/summary" in page.text and "GET /progress/{dag_id}/{run_id}" in page.text
            assert "http://" not in page.text and "https://" not in page.text and "<script" not in page.text
        schema = client.get("/shardmigrate/openapi.json").json()
        assert "/fleet/matrix" in schema["paths"] and "/docs" not in schema["paths"]
        page = client.get("/shardmigrate/fleet")
        assert page.status_code == 200 and 'src="static/fleet.js"' in page.text
        assert "https://" not in page.text  # every asset comes with the package
        assert client.get("/shardmigrate/static/../api.py").status_code == 404
        assert client.get("/shardmigrate/static/nope.js").status_code == 404


def _partial_failure(sqlite_fleet: Any, write_migration: Any) -> tuple[str, Any]:
    shards = ["f0", "f1", "f2", "f3"]
    for shard_id in shards:
        sqlite_fleet.add(shard_id, DUPLICATE if shard_id == "f2" else BASE_SCHEMA)
    topology = parse_topology(yaml.safe_load(sqlite_fleet.topology()), "shards.yaml")
    migration = write_migration(
        "600_fleet_unique",
        up=UNIQUE_UP,
        options={"strategy": "parallel", "stop_on_first_failure": False, "auto_rollback": True},
    )
    run = run_dag(build_migration_dag(migration, topology))
    assert run.state == "failed"
    assert run.outcomes() == {"f0": "rolled_back", "f1": "rolled_back", "f2": "failed", "f3": "rolled_back"}
    return "600_fleet_unique", run


def test_the_page_before_anything_is_published(airflow_db):
    with airflow_api() as client:
        summary = client.get("/shardmigrate/fleet/summary", params={"fleet": "no_status_yet"}).json()
        assert summary["status"]["published"] is False
        assert summary["status"]["message"].startswith("No fleet status has been published yet")
        missing = client.get("/shardmigrate/fleet/matrix", params={"fleet": "no_status_yet"})
        assert missing.status_code == 404


def test_fleet_summary_after_a_partial_failure_with_auto_rollback(sqlite_fleet, write_migration, tmp_path, airflow_db):
    migration_id, run = _partial_failure(sqlite_fleet, write_migration)
    rows = {s: row_from_history(sqlite_fleet.history(s), [migration_id]) for s in sqlite_fleet.paths}
    # SQLite applies in one transaction: the failed shard kept no history row (not applied).
    assert rows == {"f0": "X", "f1": "X", "f2": "-", "f3": "X"}
    publish(fleet_status([migration_id], rows))
    # Drift: f3 has an extra column; `notes` is not critical (degraded), read by the page from the drift DAG.
    for shard_id in ("d0", "d1"):
        sqlite_fleet.add(shard_id, BASE_SCHEMA)
    run_sql(sqlite_fleet, "d1", "ALTER TABLE customers ADD COLUMN nickname TEXT;")
    write_topology(tmp_path / "drift.yaml", ["d0", "d1"], grace_period=0)
    assert run_dag(build_drift_dag(tmp_path / "drift.yaml", poke_interval=1)).state == "failed"

    with airflow_api() as client:
        summary = client.get("/shardmigrate/fleet/summary").json()
        matrix = client.get("/shardmigrate/fleet/matrix").json()
    status = summary["status"]
    assert status["published"] is True and status["migrations"] == [migration_id]
    assert status["counts"][migration_id] == {"rolled_back": 3, "not_applied": 1}
    assert status["shards"] == {"total": 4, "active": 4, "with_error": 0, "unreadable": 0, "lacking": 4}
    assert status["complete"] is False
    entry = next(m for m in summary["migrations"] if m["migration_id"] == migration_id)
    latest = entry["rollout"]["latest_run"]
    assert latest["state"] == "failed" and latest["run_id"] == run.run_id
    assert (
        latest["url"] == f"/dags/shardmigrate__{migration_id}/runs/{run.run_id.replace(':', '%3A').replace('+', '%2B')}"
    )
    assert "progress" not in latest  # a finished run has no live bar
    assert entry["rollout"]["display_name"] == migration_id
    drift = summary["drift"]
    assert drift["published"] is True and drift["status"] == "degraded"
    assert drift["tables"] == [{"table": "customers", "shards": ["d1"], "shard_count": 1}]
    assert [row["id"] for row in matrix["rows"]] == ["f0", "f1", "f2", "f3"]
    assert [row["row"] for row in matrix["rows"]] == ["X", "X", "-", "X"]


def test_matrix_pages_and_filters_at_ten_thousand_shards(airflow_db):
    migrations = ["m1", "m2", "m3"]
    rows = {f"shard-{i:05d}": ("AAF" if i % 1000 == 7 else "AA-") for i in range(10_000)}
    rows["shard-09999"] = "A??"
    publish(
        fleet_status(migrations, rows, errors={"shard-09999": "connection refused"}), dag_id="shardmigrate_status__big"
    )
    with airflow_api() as client:

        def page(**params: Any) -> dict[str, Any]:
            response = client.get("/shardmigrate/fleet/matrix", params={"fleet": "big", **params})
            assert response.status_code == 200, response.text
            return dict(response.json())

        first = page()
        assert first["total"] == 10_000 and first["matching"] == 10_000 and len(first["rows"]) == 50
        assert first["rows"][0]["id"] == "shard-00000"
        third = page(offset=100, limit=25)
        assert [r["id"] for r in third["rows"]] == [f"shard-{i:05d}" for i in range(100, 125)]
        failed = page(migration="m3", status="F", limit=200)
        assert failed["matching"] == 10 and {r["row"] for r in failed["rows"]} == {"AAF"}
        assert page(q="SHARD-0999")["matching"] == 10  # case-insensitive substring
        unreadable = page(status="?")
        assert [(r["id"], r["error"]) for r in unreadable["rows"]] == [("shard-09999", "connection refused")]
        assert client.get("/shardmigrate/fleet/matrix", params={"fleet": "big", "limit": 5000}).status_code == 422
        bad = client.get("/shardmigrate/fleet/matrix", params={"fleet": "big", "migration": "m9"})
        assert bad.status_code == 400 and "no migration 'm9'" in bad.json()["detail"]
        summary = client.get("/shardmigrate/fleet/summary", params={"fleet": "big"}).json()
    assert summary["status"]["counts"]["m3"] == {"not_applied": 9989, "failed": 10, "unreadable": 1}
    assert "shards" not in summary["status"] or isinstance(summary["status"]["shards"], dict)  # no rows in it
    assert summary["status"]["complete"] is False
    # 9,999 readable shards lack m3, one is unreadable: counted apart
    assert summary["status"]["shards"] == {
        "total": 10_000,
        "active": 10_000,
        "with_error": 1,
        "unreadable": 1,
        "lacking": 9_999,
    }
    assert summary["fleet"] == "big" and "big" in summary["fleets"]


def test_live_progress_and_the_approval_link_of_a_running_rollout(sqlite_fleet, write_migration, airflow_db):
    for shard_id in ("c0", "c1", "c2"):
        sqlite_fleet.add(shard_id)
    topology = parse_topology(yaml.safe_load(sqlite_fleet.topology()), "shards.yaml")
    migration = write_migration("601_fleet_live", options={"strategy": "canary_first", "canary_approval": True})
    dag = build_migration_dag(migration, topology)
    seen: dict[str, Any] = {}

    def look_then_approve() -> None:
        try:
            ti = wait_for(
                "the approval to be asked",
                lambda: (
                    (t := task_instance(dag.dag_id, CANARY_APPROVAL_TASK_ID)) is not None
                    and str(t.state) == "awaiting_input"
                    and t
                ),
            )
            with airflow_api("carol") as client:
                seen["summary"] = client.get("/shardmigrate/fleet/summary").json()
                path = f"/api/v2/dags/{ti.dag_id}/dagRuns/{ti.run_id}/taskInstances/{ti.task_id}/-1/hitlDetails"
                client.patch(path, json={"chosen_options": ["Approve"], "params_input": {"comment": "ok"}})
        except BaseException as exc:
            seen["error"] = exc

    thread = threading.Thread(target=look_then_approve, daemon=True)
    thread.start()
    run = run_dag(dag)
    thread.join(60)
    assert "error" not in seen, seen.get("error")
    assert run.state == "success"
    entry = next(m for m in seen["summary"]["migrations"] if m["migration_id"] == "601_fleet_live")
    latest = entry["rollout"]["latest_run"]
    assert latest["state"] == "running"
    progress = latest["progress"]
    assert progress["total_shards"] == 3 and progress["completed_shards"] == 1
    assert {segment["kind"]: segment["count"] for segment in progress["bar"]} == {"at_migration": 1, "waiting": 2}
    assert latest["awaiting_approval"]["url"].endswith(
        f"/tasks/{CANARY_APPROVAL_TASK_ID}/required_actions?map_index=-1"
    )
