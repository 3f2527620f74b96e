"""Live progress of a run read from Airflow's metadata DB: the plan the run published, its task instance
states and per-shard XComs.

The plan comes from the run itself (the preflight task publishes it), the shard of each task instance from
the DAG layout (dags/layout.py), and what the outcomes add up to from core/outcomes.py -- so the CLI's live
display and the progress endpoint see the same truth as the Grid and the report. In lanes execution each
shard's status is read as soon as its lane pushed it (``statuses:<n>``), and a running lane is on the first of
its shards (dealt by the layout) without a status -- a rolling lane on the unfinished shards of its first
unfinished batch. Needs metadata-DB access (the api-server, or ``dag.test()``), never a worker.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_shardmigrate.core.outcomes import compute_progress, merge_rollback
from airflow_provider_shardmigrate.core.plans import RolloutPlan, WaveKind
from airflow_provider_shardmigrate.core.status import MigrationProgress, Outcome, ShardStatus
from airflow_provider_shardmigrate.dags.layout import (
    AUTO_ROLLBACK_TASK_ID,
    CANARY_APPROVAL_TASK_ID,
    LANE_STATUSES_KEY_PREFIX,
    PLAN_XCOM_KEY,
    PREFLIGHT_TASK_ID,
    ROLLBACK_SHARDS_TASK_ID,
    STATUS_XCOM_KEY,
    TaskLayout,
    WaveTask,
    is_rollback_dag,
)
from airflow_provider_shardmigrate.operators._context import statuses_in

#: Task states in which a shard's work has been handed to a worker; ``scheduled`` (waiting for a concurrency
#: slot) and ``up_for_retry`` are still waiting.
_RUNNING_STATES = {"queued", "running", "restarting", "deferred", "up_for_reschedule"}

#: States of the canary approval task while it waits for a human answer (HITL tasks defer to the triggerer).
_AWAITING_STATES = {"awaiting_input", "deferred"}

#: (task_id, map_index, state) of one task instance.
TaskRow = tuple[str, int, str | None]


@dataclass
class RunRecord:
    """What a run has recorded so far: task states and the XComs progress reads."""

    tasks: list[TaskRow] = field(default_factory=list)
    #: (task_id, key, value) of the shard tasks' XComs (return values, lane shard statuses, lane states).
    xcoms: list[tuple[str, str, Any]] = field(default_factory=list)
    #: Return values of the rollback task instances of auto-rollback.
    rollbacks: list[Any] = field(default_factory=list)

    def state(self, task_id: str, map_index: int = -1) -> str | None:
        return next((s for t, m, s in self.tasks if t == task_id and m == map_index), None)

    def any_running(self, *task_ids: str) -> bool:
        return any(t in task_ids and s in _RUNNING_STATES for t, _m, s in self.tasks)


def _reported(layout: TaskLayout, record: RunRecord) -> dict[str, ShardStatus]:
    """Statuses the shard tasks pushed (a per-shard task's return value, a lane's ``statuses:<n>``)."""
    shard_tasks = set(layout.shard_task_ids)
    statuses: dict[str, ShardStatus] = {}
    for task_id, key, value in record.xcoms:
        if task_id in shard_tasks and (key == STATUS_XCOM_KEY or key.startswith(LANE_STATUSES_KEY_PREFIX)):
            statuses.update((status.shard_id, status) for status in statuses_in([value]))
    return statuses


def lane_running(wave_task: WaveTask, lane: int, finished: set[str]) -> list[str]:
    """The shards a running lane is on: the first of its shards without a status (lanes run theirs in order);
    a rolling lane runs a batch at once, so the unfinished shards of its first unfinished batch."""
    if wave_task.wave.kind is WaveKind.BATCH:  # one lane instance (map index 0) runs every batch
        for wave in wave_task.waves if lane == 0 else ():
            unfinished = [shard.id for shard in wave.shards if shard.id not in finished]
            if unfinished:
                return unfinished
        return []
    for batch in wave_task.lane_shards(lane) if lane < wave_task.lanes else []:
        for shard in batch:
            if shard.id not in finished:
                return [shard.id]
    return []


def shard_outcomes(layout: TaskLayout, record: RunRecord) -> tuple[dict[str, Outcome], list[str]]:
    """(finished shard -> outcome, running shards) from what the run recorded so far."""
    statuses = _reported(layout, record)
    for rolled in statuses_in(record.rollbacks):
        statuses[rolled.shard_id] = merge_rollback(statuses.get(rolled.shard_id), rolled)
    outcomes = {shard_id: status.outcome for shard_id, status in statuses.items()}
    running: list[str] = []
    for task_id, map_index, state in record.tasks:
        wave_task = layout.task(task_id)
        if wave_task is not None and wave_task.is_lanes:
            if state in _RUNNING_STATES:
                running += lane_running(wave_task, map_index, set(outcomes))
            continue
        shard_id = layout.locate(task_id, map_index)
        if shard_id is None or shard_id in outcomes:
            continue
        if state in _RUNNING_STATES:
            running.append(shard_id)
        elif state == "upstream_failed":
            outcomes[shard_id] = Outcome.PENDING
    return outcomes, running


def progress_from_record(
    *,
    migration_id: str,
    run_id: str | None,
    plan: RolloutPlan | None,
    map_chunk: int | None = None,
    rollback_dag: bool,
    record: RunRecord,
    run_state: str | None,
) -> MigrationProgress:
    """Progress from a run's recorded rows; ``plan`` None when the run has not published it yet."""
    refused = record.state(PREFLIGHT_TASK_ID) == "failed"
    if plan is None:
        return compute_progress(
            migration_id=migration_id, run_id=run_id, plan=None, outcomes={}, run_state=run_state, refused=refused
        )
    layout = TaskLayout.of(plan, rollback=rollback_dag, map_chunk=map_chunk)
    outcomes, running = shard_outcomes(layout, record)
    return compute_progress(
        migration_id=migration_id,
        run_id=run_id,
        plan=plan,
        outcomes=outcomes,
        running=running,
        run_state=run_state,
        rolling_back=record.any_running(AUTO_ROLLBACK_TASK_ID, ROLLBACK_SHARDS_TASK_ID),
        refused=refused,
        awaiting_approval=record.state(CANARY_APPROVAL_TASK_ID) in _AWAITING_STATES,
    )


def _published_plan(rows: Mapping[tuple[str, str], Any]) -> tuple[RolloutPlan | None, int | None]:
    row = rows.get((PREFLIGHT_TASK_ID, PLAN_XCOM_KEY))
    if row is None:
        return None, None
    from airflow.models.xcom import XComModel

    data = XComModel.deserialize_value(row)
    chunk = data.get("map_chunk")
    return RolloutPlan.from_dict(data), int(chunk) if chunk else None


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
    tasks = session.query(TaskInstance.task_id, TaskInstance.map_index, TaskInstance.state).filter(
        TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id
    )
    rows = session.query(XComModel).filter(XComModel.dag_id == dag_id, XComModel.run_id == run_id).all()
    published, map_chunk = _published_plan({(x.task_id, x.key): x for x in rows if x.map_index == -1})
    plan = plan or published
    rollback_dag = is_rollback_dag(dag_id)
    shard_tasks = set(TaskLayout.of(plan, rollback=rollback_dag, map_chunk=map_chunk).shard_task_ids) if plan else set()
    record = RunRecord(tasks=[(t, m, str(s) if s else None) for t, m, s in tasks])
    for x in rows:
        if x.task_id in shard_tasks:
            record.xcoms.append((x.task_id, x.key, XComModel.deserialize_value(x)))
        elif x.task_id == ROLLBACK_SHARDS_TASK_ID and x.key == STATUS_XCOM_KEY:
            record.rollbacks.append(XComModel.deserialize_value(x))
    return progress_from_record(
        migration_id=migration_id,
        run_id=run_id,
        plan=plan,
        map_chunk=map_chunk,
        rollback_dag=rollback_dag,
        record=record,
        run_state=str(run_state) if run_state else None,
    )
