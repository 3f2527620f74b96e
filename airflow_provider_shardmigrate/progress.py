"""Live progress of a rollout read from Airflow's metadata DB (task instance states + per-shard XCom).

The seed's progress could not be read while a run was going; here it is derived from what Airflow
already records, so the CLI's live display and the progress endpoint see the same truth as the Grid.
Needs metadata-DB access (the api-server, the scheduler's side, or ``dag.test()``), never a worker.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from airflow_provider_shardmigrate.core.plans import RolloutPlan, WaveKind
from airflow_provider_shardmigrate.core.status import MigrationProgress, Outcome
from airflow_provider_shardmigrate.operators.report import ROLLBACK_TASK_ID
from airflow_provider_shardmigrate.operators.shard import SHARDS_GROUP

SHARD_TASK_PREFIX = f"{SHARDS_GROUP}."
_RUNNING_STATES = {"running", "queued", "scheduled", "up_for_retry", "up_for_reschedule", "deferred", "restarting"}


def shard_for_task(plan: RolloutPlan, task_id: str, rendered_map_index: str | None) -> str | None:
    """Which shard a task instance works on, from the task ids the DAG builder gives per-shard tasks."""
    if not task_id.startswith(SHARD_TASK_PREFIX):
        return None
    if rendered_map_index:
        return rendered_map_index
    name = task_id[len(SHARD_TASK_PREFIX) :]
    if name == "canary":
        return plan.canary.id if plan.canary else None
    for wave in plan.waves:
        if wave.kind is WaveKind.SHARD and wave.shards[0].id == name:
            return name
    return None


def progress_from_rows(
    *,
    migration_id: str,
    run_id: str | None,
    plan: RolloutPlan,
    task_rows: Iterable[tuple[str, int, str | None, str | None]],
    shard_xcoms: Iterable[dict[str, Any]],
    run_state: str | None,
    rollback_xcom: dict[str, Any] | None = None,
) -> MigrationProgress:
    """``task_rows``: (task_id, map_index, rendered_map_index, state) of the run's task instances;
    ``rollback_xcom``: the auto-rollback task's result (shard id -> status), when it ran."""
    outcomes: dict[str, Outcome] = {}
    for value in [*shard_xcoms, *(rollback_xcom or {}).values()]:
        if not (isinstance(value, dict) and "shard_id" in value and "outcome" in value):
            continue
        # a failed rollback does not hide that the shard was applied
        if value["outcome"] != Outcome.FAILED or value["shard_id"] not in outcomes:
            outcomes[value["shard_id"]] = Outcome(value["outcome"])
    running: list[str] = []
    rolling_back = False
    for task_id, _map_index, rendered, state in task_rows:
        if task_id == ROLLBACK_TASK_ID and state == "running":
            rolling_back = True
        shard_id = shard_for_task(plan, task_id, rendered)
        if shard_id is None:
            continue
        if state in _RUNNING_STATES and shard_id not in outcomes:
            running.append(shard_id)
        elif state == "upstream_failed":
            outcomes.setdefault(shard_id, Outcome.PENDING)
    return MigrationProgress.compute(
        migration_id=migration_id,
        run_id=run_id,
        plan=plan,
        outcomes=outcomes,
        running=running,
        run_finished=run_state in ("success", "failed"),
        rolling_back=rolling_back,
    )


def read_progress(session: Any, *, dag_id: str, run_id: str, migration_id: str, plan: RolloutPlan) -> MigrationProgress:
    """Progress of one DAG run, read with an ORM ``session`` on the metadata DB."""
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel

    run_state = session.query(DagRun.state).filter(DagRun.dag_id == dag_id, DagRun.run_id == run_id).scalar()
    rows = session.query(
        TaskInstance.task_id, TaskInstance.map_index, TaskInstance._rendered_map_index, TaskInstance.state
    ).filter(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id)
    xcoms = (
        session.query(XComModel)
        .filter(
            XComModel.dag_id == dag_id,
            XComModel.run_id == run_id,
            XComModel.key == "return_value",
        )
        .all()
    )
    shard_xcoms = [XComModel.deserialize_value(x) for x in xcoms if x.task_id.startswith(SHARD_TASK_PREFIX)]
    rollback = [XComModel.deserialize_value(x) for x in xcoms if x.task_id == ROLLBACK_TASK_ID]
    return progress_from_rows(
        migration_id=migration_id,
        run_id=run_id,
        plan=plan,
        task_rows=[(t, m, r, str(s) if s else None) for t, m, r, s in rows],
        shard_xcoms=shard_xcoms,
        run_state=str(run_state) if run_state else None,
        rollback_xcom=rollback[0] if rollback else None,
    )
