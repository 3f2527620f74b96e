"""Live progress of a rollout read from Airflow's metadata DB (task instance states + per-shard XCom).

The seed's progress could not be read while a run was going; here it is derived from what Airflow
already records, so the CLI's live display and the progress endpoint see the same truth as the Grid.
Needs metadata-DB access (the api-server, the scheduler's side, or ``dag.test()``), never a worker.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from airflow_provider_shardmigrate.core.options import Strategy
from airflow_provider_shardmigrate.core.plans import RolloutPlan, Wave, WaveKind
from airflow_provider_shardmigrate.core.status import MigrationProgress, Outcome
from airflow_provider_shardmigrate.core.topology import Shard
from airflow_provider_shardmigrate.operators.report import ROLLBACK_TASK_ID
from airflow_provider_shardmigrate.operators.shard import SHARDS_GROUP

SHARD_TASK_PREFIX = f"{SHARDS_GROUP}."
CANARY_GATE = f"{SHARD_TASK_PREFIX}canary_gate"
_RUNNING_STATES = {"running", "queued", "scheduled", "up_for_retry", "up_for_reschedule", "deferred", "restarting"}


_STRATEGY_OF = {
    WaveKind.SHARD: Strategy.SEQUENTIAL,
    WaveKind.ALL: Strategy.PARALLEL,
    WaveKind.BATCH: Strategy.ROLLING,
    WaveKind.CANARY: Strategy.CANARY_FIRST,
}


def plan_from_dag(dag: Any) -> RolloutPlan | None:
    """The rollout plan a migration DAG was built from, read back from its tasks (an authoring DAG or the
    serialized DAG the api-server holds): chained shard tasks, the canary, and the shard list each mapped
    task expands over. None for a DAG that is not a shardmigrate rollout."""
    shard_tasks = [t for t in dag.tasks if t.task_id.startswith(SHARD_TASK_PREFIX) and t.task_id != CANARY_GATE]
    if not shard_tasks:
        return None
    order = {task_id: index for index, task_id in enumerate(_topological(dag))}
    waves: list[Wave] = []
    for task in sorted(shard_tasks, key=lambda t: order.get(t.task_id, 0)):
        expand = getattr(task, "expand_input", None)
        if expand is not None:
            shards = tuple(Shard(item["shard_id"], item.get("conn_id", "")) for item in expand.value)
            if ".batch_" in task.task_id:
                kind = WaveKind.BATCH
            else:
                kind = WaveKind.REST if waves and waves[0].kind is WaveKind.CANARY else WaveKind.ALL
        elif task.task_id == f"{SHARD_TASK_PREFIX}canary":
            kind, shards = WaveKind.CANARY, (Shard(str(task.task_display_name).removeprefix("canary "), ""),)
        else:
            kind, shards = WaveKind.SHARD, (Shard(task.task_id[len(SHARD_TASK_PREFIX) :], ""),)
        waves.append(Wave(len(waves), kind, shards, len(shards)))
    strategy = _STRATEGY_OF[waves[0].kind]
    return RolloutPlan(strategy=strategy, waves=tuple(waves), max_parallelism=max(w.concurrency for w in waves))


def _topological(dag: Any) -> list[str]:
    """Task ids so that every task comes after its upstream tasks (Kahn's algorithm, ties by task id)."""
    remaining = {t.task_id: set(t.upstream_task_ids) for t in dag.tasks}
    ordered: list[str] = []
    while remaining:
        ready = sorted(task_id for task_id, upstream in remaining.items() if not upstream - set(ordered))
        if not ready:  # a cycle cannot happen in a DAG; stop rather than loop
            ordered.extend(sorted(remaining))
            break
        ordered.extend(ready)
        for task_id in ready:
            del remaining[task_id]
    return ordered


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
