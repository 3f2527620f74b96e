"""Live progress of a run read from Airflow's metadata DB: the plan the run published, its task instance
states and per-shard XComs.

The plan comes from the run itself (the preflight task publishes it), the shard of each task instance from
the DAG layout (dags/layout.py), and what the outcomes add up to from core/outcomes.py -- so the CLI's live
display and the progress endpoint see the same truth as the Grid and the report. Needs metadata-DB access
(the api-server, or ``dag.test()``), never a worker.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from airflow_provider_shardmigrate.core.outcomes import compute_progress, merge_rollback
from airflow_provider_shardmigrate.core.plans import RolloutPlan
from airflow_provider_shardmigrate.core.status import MigrationProgress, Outcome, ShardStatus
from airflow_provider_shardmigrate.dags.layout import (
    AUTO_ROLLBACK_TASK_ID,
    PLAN_XCOM_KEY,
    PREFLIGHT_TASK_ID,
    STATUS_XCOM_KEY,
    TaskLayout,
    is_rollback_dag,
)

#: Task states in which a shard's work has been handed to a worker; ``scheduled`` (waiting for a concurrency
#: slot) and ``up_for_retry`` are still waiting.
_RUNNING_STATES = {"queued", "running", "restarting", "deferred", "up_for_reschedule"}

#: (task_id, map_index, state) of one task instance.
TaskRow = tuple[str, int, str | None]


def shard_outcomes(
    layout: TaskLayout,
    task_rows: Iterable[TaskRow],
    xcoms: Iterable[tuple[str, Any]],
    rollback_xcom: Mapping[str, Any] | None,
) -> tuple[dict[str, Outcome], list[str]]:
    """(finished shard -> outcome, running shards) from what the run recorded so far; ``xcoms`` are
    ``(task_id, return_value)`` of the run's tasks."""
    shard_tasks = set(layout.shard_task_ids)
    statuses: dict[str, ShardStatus] = {}
    for task_id, value in xcoms:
        if task_id in shard_tasks and ShardStatus.is_xcom(value):
            status = ShardStatus.from_xcom(value)
            statuses[status.shard_id] = status
    for value in (rollback_xcom or {}).values():
        if ShardStatus.is_xcom(value):
            rolled = ShardStatus.from_xcom(value)
            statuses[rolled.shard_id] = merge_rollback(statuses.get(rolled.shard_id), rolled)
    outcomes = {shard_id: status.outcome for shard_id, status in statuses.items()}
    running: list[str] = []
    for task_id, map_index, state in task_rows:
        shard_id = layout.locate(task_id, map_index)
        if shard_id is None or shard_id in outcomes:
            continue
        if state in _RUNNING_STATES:
            running.append(shard_id)
        elif state == "upstream_failed":
            outcomes[shard_id] = Outcome.PENDING
    return outcomes, running


def progress_from_rows(
    *,
    migration_id: str,
    run_id: str | None,
    plan: RolloutPlan | None,
    rollback_dag: bool,
    task_rows: Iterable[TaskRow],
    xcoms: Iterable[tuple[str, Any]],
    run_state: str | None,
    rollback_xcom: Mapping[str, Any] | None = None,
) -> MigrationProgress:
    """Progress from a run's recorded rows (``xcoms``: ``(task_id, return_value)``); ``plan`` None when the
    run has not published it yet."""
    rows = list(task_rows)
    states = {(task_id, map_index): state for task_id, map_index, state in rows}
    refused = states.get((PREFLIGHT_TASK_ID, -1)) == "failed"
    rolling_back = states.get((AUTO_ROLLBACK_TASK_ID, -1)) == "running"
    if plan is None:
        return compute_progress(
            migration_id=migration_id, run_id=run_id, plan=None, outcomes={}, run_state=run_state, refused=refused
        )
    layout = TaskLayout.of(plan, rollback=rollback_dag)
    outcomes, running = shard_outcomes(layout, rows, xcoms, rollback_xcom)
    return compute_progress(
        migration_id=migration_id,
        run_id=run_id,
        plan=plan,
        outcomes=outcomes,
        running=running,
        run_state=run_state,
        rolling_back=rolling_back,
        refused=refused,
    )


def read_progress(
    session: Any, *, dag_id: str, run_id: str, migration_id: str, plan: RolloutPlan | None = None
) -> MigrationProgress:
    """Progress of one DAG run, read with an ORM ``session`` on the metadata DB.

    ``plan``: the plan when the caller has it (the CLI built the DAG); otherwise the one the run published.
    """
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel

    run_state = session.query(DagRun.state).filter(DagRun.dag_id == dag_id, DagRun.run_id == run_id).scalar()
    rows = session.query(TaskInstance.task_id, TaskInstance.map_index, TaskInstance.state).filter(
        TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id
    )
    xcoms = session.query(XComModel).filter(XComModel.dag_id == dag_id, XComModel.run_id == run_id).all()
    by_key = {(x.task_id, x.map_index, x.key): x for x in xcoms}
    if plan is None and (published := by_key.get((PREFLIGHT_TASK_ID, -1, PLAN_XCOM_KEY))) is not None:
        plan = RolloutPlan.from_dict(XComModel.deserialize_value(published))
    rollback_dag = is_rollback_dag(dag_id)
    shard_tasks = set(TaskLayout.of(plan, rollback=rollback_dag).shard_task_ids) if plan else set()
    returned = [
        (x.task_id, XComModel.deserialize_value(x))
        for x in xcoms
        if x.key == STATUS_XCOM_KEY and x.task_id in shard_tasks
    ]
    rollback = by_key.get((AUTO_ROLLBACK_TASK_ID, -1, STATUS_XCOM_KEY))
    return progress_from_rows(
        migration_id=migration_id,
        run_id=run_id,
        plan=plan,
        rollback_dag=rollback_dag,
        task_rows=[(t, m, str(s) if s else None) for t, m, s in rows],
        xcoms=returned,
        run_state=str(run_state) if run_state else None,
        rollback_xcom=XComModel.deserialize_value(rollback) if rollback is not None else None,
    )
