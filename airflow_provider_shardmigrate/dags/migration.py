"""``build_migration_dag``: one DAG per migration, shaped by its strategy (docs/contracts.md).

    sequential    shards.<id> -> shards.<id> -> ...            (a chain; each waits for the previous)
    parallel      shards.apply[<id>...]                        (one mapped task, max_parallelism at once)
    rolling       shards.batch_1.apply[...] -> batch_2 -> ...  (batch k+1 after batch k)
    canary_first  shards.canary -> canary_gate -> shards.apply[rest...]

after ``preflight`` (which publishes the plan and may refuse the run) and before ``auto_rollback`` ->
``report`` -> ``gate`` (the only leaf, so the run state tells the truth). Task ids: dags/layout.py.
Building reads only the migration folder and the topology: no database, no connection, no Variable.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_provider_shardmigrate.core.plans import RolloutPlan, WaveKind, memo_by_identity, plan_rollout
from airflow_provider_shardmigrate.core.scripts import Migration, load_migration, sibling_requirements
from airflow_provider_shardmigrate.core.topology import Shard, Topology, load_topology
from airflow_provider_shardmigrate.dags.common import attach_params, dag_defaults, max_map_length, migration_dag_id
from airflow_provider_shardmigrate.dags.docs import display_name, migration_doc
from airflow_provider_shardmigrate.dags.layout import (
    AUTO_ROLLBACK_TASK_ID,
    CANARY_APPROVAL_TASK_ID,
    CANARY_GATE_TASK_ID,
    GATE_TASK_ID,
    PLAN_XCOM_KEY,
    PREFLIGHT_TASK_ID,
    REPORT_TASK_ID,
    ROLLBACK_SHARDS_TASK_ID,
    ROLLBACKS_GROUP,
    SHARDS_GROUP,
    TaskLayout,
    WaveTask,
)
from airflow_provider_shardmigrate.dags.params import migration_params

if TYPE_CHECKING:
    from airflow.sdk import DAG


def _as_migration(migration: Migration | str | Path) -> Migration:
    return migration if isinstance(migration, Migration) else load_migration(migration)


def _as_topology(topology: Topology | str | Path) -> Topology:
    return topology if isinstance(topology, Topology) else load_topology(topology)


def shard_kwargs(shards: tuple[Shard, ...]) -> list[dict[str, str]]:
    return [{"shard_id": shard.id, "conn_id": shard.conn_id} for shard in shards]


class _ShardTasks:
    """Creates the shard tasks of a layout, with the arguments they all share."""

    def __init__(self, dag_id: str, migration: Migration, plan: RolloutPlan, required: Sequence[str]) -> None:
        self.dag_id = dag_id
        self.common: dict[str, Any] = {
            "migration_path": str(migration.path),
            "migration_checksum": migration.checksum,
            "strategy": plan.strategy.value,
            "retries": 0,
            "requires": [PREFLIGHT_TASK_ID],
            "target_count": len(plan.targets),
            "required_migrations": list(required),
        }

    def create(self, wave_task: WaveTask, **kwargs: Any) -> Any:
        from airflow_provider_shardmigrate.operators.shard import ShardMigrationOperator

        if wave_task.is_lanes:
            return self._lanes(wave_task, **kwargs)
        if not wave_task.mapped:
            shard = wave_task.shards[0]
            return ShardMigrationOperator(
                task_id=wave_task.name, shard_id=shard.id, conn_id=shard.conn_id, **self.common, **kwargs
            )
        return ShardMigrationOperator.partial(
            task_id=wave_task.name,
            max_active_tis_per_dagrun=wave_task.wave.concurrency,
            map_index_template="{{ task.shard_id }}",
            **self.common,
            **kwargs,
        ).expand_kwargs(shard_kwargs(wave_task.shards))

    def _lanes(self, wave_task: WaveTask, **kwargs: Any) -> Any:
        from airflow_provider_shardmigrate.operators.lanes import ShardLaneOperator, register_lane_work

        kwargs.pop("stop_watch", None)  # lanes count failures among themselves (operators/lanes.py)
        kwargs.pop("stop_after", None)
        # Rolling batches run in one lane instance, ``max_parallelism`` shards at once, batch after batch;
        # otherwise each lane works through the shards dealt to it, one at a time.
        rolling = wave_task.wave.kind is WaveKind.BATCH
        lanes = 1 if rolling else wave_task.lanes
        batches = (
            memo_by_identity(wave_task, "rolling batches", lambda: [[wave.shards] for wave in wave_task.waves])
            if rolling
            else wave_task.lane_batches
        )
        work = register_lane_work(self.dag_id, wave_task.task_id, batches)
        return ShardLaneOperator.partial(
            task_id=wave_task.name,
            lanes=lanes,
            workers=wave_task.lanes if rolling else 1,
            plan_fingerprint=work,
            max_active_tis_per_dagrun=lanes,
            map_index_template="{{ lane_label if lane_label is defined else 'lane ' ~ (ti.map_index + 1) }}",
            **self.common,
            **kwargs,
        ).expand(lane=list(range(lanes)))


def _canary_gate(migration: Migration, plan: RolloutPlan, canary_task_id: str) -> Any:
    from airflow_provider_shardmigrate.operators.canary import CanaryGateOperator

    assert plan.canary is not None
    return CanaryGateOperator(
        task_id=CANARY_GATE_TASK_ID.removeprefix(f"{SHARDS_GROUP}."),
        canary_task_id=canary_task_id,
        canary_shard_id=plan.canary.id,
        canary_conn_id=plan.canary.conn_id,
        validation_query=migration.options.canary_validation,
        bake_time=migration.options.canary_bake_time,
        timeout=migration.options.per_shard_timeout,
    )


def _canary_approval(migration: Migration, plan: RolloutPlan, canary_task_id: str) -> Any:
    from airflow_provider_shardmigrate.operators.approval import CanaryApprovalOperator

    assert plan.canary is not None
    return CanaryApprovalOperator(
        task_id=CANARY_APPROVAL_TASK_ID.removeprefix(f"{SHARDS_GROUP}."),
        migration_id=migration.id,
        canary_task_id=canary_task_id,
        canary_gate_task_id=CANARY_GATE_TASK_ID,
        canary_shard_id=plan.canary.id,
        waiting_shards=len(plan.targets) - 1,
        approval_timeout=migration.options.canary_approval_timeout,
    )


def _canary_checks(migration: Migration, plan: RolloutPlan, canary: Any) -> Any:
    """The gate after the canary (and the human approval after it, with ``canary_approval``); returns the
    last of them, which the rest of the fleet follows."""
    gate = _canary_gate(migration, plan, canary.task_id)
    canary >> gate
    if not migration.options.canary_approval:
        return gate
    approval = _canary_approval(migration, plan, canary.task_id)
    gate >> approval
    return approval


def _wire_shards(layout: TaskLayout, tasks: _ShardTasks, migration: Migration) -> Any:
    """Create the shard tasks of ``layout`` in order; return the last one, which finishes last.

    Every link of a chain -- sequential shards, rolling batches, chunks of a wide wave -- waits for the
    previous one (``all_done``) and counts the failures of every shard task before it against the failure
    threshold; a parallel wave counts its own. A failed canary fails its gate and the rest
    (``upstream_failed`` counts as done).
    """
    from airflow.sdk import TaskGroup, TriggerRule

    previous: Any = None
    before: list[str] = []  # every shard task id created so far
    for wave_task in layout:
        kind = wave_task.wave.kind
        after = [previous.task_id] if previous is not None else []
        chained = {"trigger_rule": TriggerRule.ALL_DONE, "stop_after": after, "stop_watch": list(before)}
        if kind is WaveKind.CANARY:
            task = tasks.create(wave_task, task_display_name=f"canary {wave_task.shards[0].id}")
        elif kind is WaveKind.REST and previous is not None and previous.task_id.endswith(".canary"):
            previous = _canary_checks(migration, layout.plan, previous)
            task = tasks.create(wave_task, stop_watch=[wave_task.task_id])
        elif wave_task.is_lanes:
            task = tasks.create(wave_task)
        elif kind is WaveKind.BATCH:  # a batch that started completes: it watches the batches before it only
            with TaskGroup(str(wave_task.group), tooltip=", ".join(s.id for s in wave_task.shards[:20])):
                task = tasks.create(wave_task, **chained)
        elif previous is None:  # a parallel wave (or its first chunk) counts its own failures
            task = tasks.create(wave_task, stop_watch=[wave_task.task_id])
        else:  # a sequential link, or the next chunk of a wide wave
            task = tasks.create(wave_task, **chained)
        if previous is not None:
            previous >> task
        previous = task
        before.append(wave_task.task_id)
    return previous


def build_migration_dag(
    migration: Migration | str | Path,
    topology: Topology | str | Path,
    *,
    dag_id: str | None = None,
    requires: Sequence[str] | None = None,
    **dag_kwargs: Any,
) -> DAG:
    """Build the rollout DAG ``shardmigrate__<migration_id>``.

    :param migration: A loaded Migration or the path of its folder.
    :param topology: A loaded Topology or the path of the topology file.
    :param dag_id: Override the DAG id.
    :param requires: Migrations every shard must hold before this one runs (``load_migration_dags`` passes
        them); default: from the folder the migration lives in (its earlier migrations, or ``depends_on``).
    :param dag_kwargs: Extra ``DAG`` arguments (tags, owner links, ...).
    """
    from airflow.sdk import DAG, TaskGroup, TriggerRule

    from airflow_provider_shardmigrate.operators.preflight import MigrationPreflightOperator
    from airflow_provider_shardmigrate.operators.report import (
        AutoRollbackOperator,
        MigrationGateOperator,
        MigrationReportOperator,
    )
    from airflow_provider_shardmigrate.operators.rollback import ShardRollbackOperator

    migration = _as_migration(migration)
    topology = _as_topology(topology)
    required = sibling_requirements(migration) if requires is None else tuple(requires)
    options = migration.options
    plan = plan_rollout(topology.shards, options)
    chunk = max_map_length()
    layout = TaskLayout.of(plan, map_chunk=chunk)
    lanes_task = layout.lanes_task
    targets = plan.targets
    conn_ids = plan.conn_ids
    strategy = options.strategy.value
    params = migration_params(options)
    dag_id = dag_id or migration_dag_id(migration.id)
    kwargs = dag_defaults(
        description=(migration.description or f"Roll out {migration.id}")[:500],
        dag_display_name=display_name(migration),
        doc_md=migration_doc(migration, plan, required),
        tags=["shardmigrate", f"strategy:{strategy}", f"execution:{plan.execution.value}"],
        max_active_tasks=max(16, plan.max_parallelism + 2),
    )
    kwargs.update(dag_kwargs)
    with DAG(dag_id, **kwargs) as dag:
        preflight = MigrationPreflightOperator(
            task_id=PREFLIGHT_TASK_ID,
            migration_path=str(migration.path),
            migration_checksum=migration.checksum,
            shard_conn_ids=conn_ids,
            plan=plan,
            plan_extra={"map_chunk": chunk},
            plan_xcom_key=PLAN_XCOM_KEY,
            accepted_params=list(params),
            check_drift=options.validate_before_apply,
            timeout=min(60.0, options.per_shard_timeout),
            max_workers=max(8, plan.max_parallelism),
        )
        with TaskGroup(SHARDS_GROUP, tooltip=f"{len(targets)} shard(s), {strategy}") as shards_group:
            last = _wire_shards(layout, _ShardTasks(dag_id, migration, plan, required), migration)
        decide = AutoRollbackOperator(
            task_id=AUTO_ROLLBACK_TASK_ID,
            shard_task_ids=layout.shard_task_ids,
            shard_conn_ids=conn_ids,
            lanes=lanes_task.lanes if lanes_task else 0,
            max_items=chunk,
            trigger_rule=TriggerRule.ALL_DONE,
        )
        with TaskGroup(ROLLBACKS_GROUP, tooltip="auto-rollback: one task instance per shard reverted"):
            undo = ShardRollbackOperator.partial(
                task_id=ROLLBACK_SHARDS_TASK_ID.removeprefix(f"{ROLLBACKS_GROUP}."),
                migration_path=str(migration.path),
                migration_checksum=migration.checksum,
                max_active_tis_per_dagrun=plan.max_parallelism,
                map_index_template="{{ task.work_label }}",
                retries=0,
            ).expand(work=decide.output)
        report = MigrationReportOperator(
            task_id=REPORT_TASK_ID,
            migration_id=migration.id,
            strategy=strategy,
            target_shard_ids=list(plan.target_ids),
            shards_of_task=layout.shards_of(),
            mapped_task_ids=[wave.task_id for wave in layout if wave.mapped and not wave.is_lanes],
            lanes_task_id=lanes_task.task_id if lanes_task else None,
            rollback_task_id=ROLLBACK_SHARDS_TASK_ID,
            rollback_decider_id=AUTO_ROLLBACK_TASK_ID,
            preflight_task_id=PREFLIGHT_TASK_ID,
            canary_shard_id=plan.canary.id if plan.canary else None,
            canary_gate_task_id=CANARY_GATE_TASK_ID if plan.canary else None,
            approval_task_id=CANARY_APPROVAL_TASK_ID if plan.canary and options.canary_approval else None,
            trigger_rule=TriggerRule.ALL_DONE,
        )
        gate = MigrationGateOperator(
            task_id=GATE_TASK_ID, report_task_id=REPORT_TASK_ID, trigger_rule=TriggerRule.ALL_DONE
        )
        preflight >> shards_group
        last >> decide
        [decide, undo] >> report >> gate
    attach_params(dag, params)
    return dag
