"""The fleet page's reads of Airflow's metadata database (XCom, DAGs, runs, task instances) -- and nothing else:
the page never opens a shard connection. Every function takes the api-server's ORM session."""

from __future__ import annotations

import threading
from collections.abc import Collection
from typing import Any

from airflow_provider_shardmigrate.dags.layout import DAG_PREFIX, REPORT_TASK_ID, ROLLBACK_SUFFIX, migration_id_of
from airflow_provider_shardmigrate.plugins.fleet import (
    FleetStatus,
    progress_bar,
    required_action_url,
    run_url,
)

#: Run states in which a run shows live progress.
LIVE_STATES = ("queued", "running")
#: What the page shows of a finished run's report (docs/contracts.md, XCom: Report) -- never the shard map.
REPORT_FIELDS = (
    "all_succeeded",
    "succeeded_count",
    "failed_count",
    "pending_count",
    "rolled_back_count",
    "outcome_counts",
    "halted_reason",
    "refused",
)

_cache_lock = threading.Lock()
#: status DAG id -> (the publication it was parsed from, the parsed status)
_parsed: dict[str, tuple[tuple[Any, ...], FleetStatus]] = {}
#: (dag_id, run_id) -> (the report XCom's timestamp, what the page shows of it); a run's report changes only
#: when the run is cleared and runs again.
_reports: dict[tuple[str, str], tuple[Any, dict[str, Any]]] = {}
MAX_CACHED_REPORTS = 1000


def _newest(session: Any, dag_id: str, task_id: str) -> Any:
    from airflow.models.xcom import XComModel

    return (
        session.query(XComModel)
        .filter(XComModel.dag_id == dag_id, XComModel.task_id == task_id, XComModel.key == "return_value")
        .order_by(XComModel.timestamp.desc())
        .first()
    )


def latest_publish(session: Any, dag_id: str, task_id: str) -> tuple[Any, str, str] | None:
    """``(value, run_id, published_at)`` of the newest ``return_value`` XCom of ``dag_id.task_id``, or None."""
    from airflow.models.xcom import XComModel

    row = _newest(session, dag_id, task_id)
    if row is None:
        return None
    return XComModel.deserialize_value(row), row.run_id, row.timestamp.isoformat()


def fleet_status(session: Any, dag_id: str, task_id: str) -> tuple[FleetStatus, str, str] | None:
    """The newest published fleet status, deserialized and checked once per publication (the matrix of a
    10,000-shard fleet is about a megabyte; the page asks for it on every refresh)."""
    from airflow.models.xcom import XComModel

    row = _newest(session, dag_id, task_id)
    if row is None:
        return None
    key = (row.run_id, row.map_index, row.timestamp)
    with _cache_lock:
        cached = _parsed.get(dag_id)
    if cached is None or cached[0] != key:
        cached = (key, FleetStatus.parse(XComModel.deserialize_value(row)))
        with _cache_lock:
            _parsed[dag_id] = cached
    return cached[1], row.run_id, row.timestamp.isoformat()


def _latest_runs(session: Any, dag_ids: Collection[str]) -> dict[str, Any]:
    from airflow.models.dagrun import DagRun
    from sqlalchemy import and_, func, select

    if not dag_ids:
        return {}
    newest = (
        select(DagRun.dag_id, func.max(DagRun.run_after).label("run_after"))
        .where(DagRun.dag_id.in_(list(dag_ids)))
        .group_by(DagRun.dag_id)
        .subquery()
    )
    runs = session.scalars(
        select(DagRun).join(newest, and_(DagRun.dag_id == newest.c.dag_id, DagRun.run_after == newest.c.run_after))
    )
    return {run.dag_id: run for run in runs}


def _awaiting_input(session: Any, runs: Collection[Any]) -> dict[tuple[str, str], tuple[str, int]]:
    """(dag_id, run_id) -> (task_id, map_index) of a task waiting for a human answer (the canary approval)."""
    from airflow.models.taskinstance import TaskInstance
    from sqlalchemy import tuple_

    keys = [(run.dag_id, run.run_id) for run in runs]
    if not keys:
        return {}
    rows = session.execute(
        TaskInstance.__table__.select()
        .with_only_columns(TaskInstance.dag_id, TaskInstance.run_id, TaskInstance.task_id, TaskInstance.map_index)
        .where(tuple_(TaskInstance.dag_id, TaskInstance.run_id).in_(keys), TaskInstance.state == "awaiting_input")
    )
    return {(dag_id, run_id): (task_id, map_index) for dag_id, run_id, task_id, map_index in rows}


def _report_summaries(session: Any, runs: Collection[Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """What each finished run's report says, without its per-shard map: the counts and the halting reason."""
    from airflow.models.xcom import XComModel
    from sqlalchemy import tuple_

    keys = [(run.dag_id, run.run_id) for run in runs]
    if not keys:
        return {}
    rows = (
        session.query(XComModel)
        .filter(
            tuple_(XComModel.dag_id, XComModel.run_id).in_(keys),
            XComModel.task_id == REPORT_TASK_ID,
            XComModel.key == "return_value",
        )
        .all()
    )
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        key = (row.dag_id, row.run_id)
        with _cache_lock:
            cached = _reports.get(key)
        if cached is None or cached[0] != row.timestamp:
            value = XComModel.deserialize_value(row) or {}
            summary = {name: value.get(name) for name in REPORT_FIELDS}
            cached = (row.timestamp, summary)
            with _cache_lock:
                if len(_reports) >= MAX_CACHED_REPORTS:
                    _reports.clear()
                _reports[key] = cached
        found[key] = cached[1]
    return found


def _describe_run(
    session: Any, base: str, run: Any, awaiting: tuple[str, int] | None, report: dict[str, Any] | None
) -> dict[str, Any]:
    from airflow_provider_shardmigrate.progress import read_progress

    state = str(run.state)
    described: dict[str, Any] = {
        "run_id": run.run_id,
        "state": state,
        "run_after": run.run_after.isoformat() if run.run_after else None,
        "start_date": run.start_date.isoformat() if run.start_date else None,
        "end_date": run.end_date.isoformat() if run.end_date else None,
        "url": run_url(base, run.dag_id, run.run_id),
    }
    if state in LIVE_STATES:
        progress = read_progress(
            session, dag_id=run.dag_id, run_id=run.run_id, migration_id=migration_id_of(run.dag_id)
        ).to_dict()
        progress.pop("shards", None)  # the bar needs the counts, not every shard of a 10,000-shard run
        described["progress"] = {**progress, "bar": progress_bar(progress)}
    if report is not None:
        described["report"] = report
    if awaiting is not None:
        task_id, map_index = awaiting
        described["awaiting_approval"] = {
            "task_id": task_id,
            "url": required_action_url(base, run.dag_id, run.run_id, task_id, map_index),
        }
    return described


def migration_runs(session: Any, base: str, readable: Collection[str] | None) -> list[dict[str, Any]]:
    """Every migration with its rollout DAG and rollback DAG: display name, paused, and the latest run of each
    (state, link, live progress while running). ``readable``: the DAG ids the user may read (None: all)."""
    from airflow.models.dag import DagModel
    from sqlalchemy import select

    rows = session.execute(
        select(DagModel.dag_id, DagModel._dag_display_property_value, DagModel.is_paused).where(
            DagModel.dag_id.startswith(DAG_PREFIX, autoescape=True), DagModel.is_stale.is_(False)
        )
    ).all()
    dags = {dag_id: (name, paused) for dag_id, name, paused in rows if readable is None or dag_id in readable}
    latest = _latest_runs(session, list(dags))
    live = [run for run in latest.values() if str(run.state) in LIVE_STATES]
    awaiting = _awaiting_input(session, live)
    reports = _report_summaries(session, [run for run in latest.values() if str(run.state) not in LIVE_STATES])
    by_migration: dict[str, dict[str, Any]] = {}
    for dag_id in sorted(dags):
        name, paused = dags[dag_id]
        kind = "rollback" if dag_id.endswith(ROLLBACK_SUFFIX) else "rollout"
        run = latest.get(dag_id)
        entry = by_migration.setdefault(migration_id_of(dag_id), {"migration_id": migration_id_of(dag_id)})
        entry[kind] = {
            "dag_id": dag_id,
            "display_name": name or dag_id,
            "is_paused": bool(paused),
            "url": run_url(base, dag_id),
            "latest_run": (
                _describe_run(session, base, run, awaiting.get((dag_id, run.run_id)), reports.get((dag_id, run.run_id)))
                if run
                else None
            ),
        }
    return [by_migration[key] for key in sorted(by_migration)]
