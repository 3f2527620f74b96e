"""``build_rollback_dag``: a manual rollback driven by each shard's history.

Every shard of the topology gets a task instance (inactive ones too: they may be rolled back on purpose). The
``shards`` Param says which: picked ids (case-insensitive) or ``all`` for every active shard; the others
report ``not_selected``, and an empty selection refuses the run (core/selection.py). A selected shard whose
history says the migration is there runs ``down`` under its lock; one without it reports ``not_applied``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_provider_shardmigrate.core.errors import InvalidTopologyError
from airflow_provider_shardmigrate.core.options import Strategy
from airflow_provider_shardmigrate.core.plans import RolloutPlan, Wave, WaveKind, memo_by_identity, resolve_execution
from airflow_provider_shardmigrate.core.scripts import Migration
from airflow_provider_shardmigrate.core.selection import ALL
from airflow_provider_shardmigrate.core.topology import Shard, Topology
from airflow_provider_shardmigrate.dags.common import (
    attach_params,
    dag_defaults,
    max_map_length,
    migration_dag_id,
    rollback_dag_id,
)
from airflow_provider_shardmigrate.dags.docs import display_name, rollback_doc
from airflow_provider_shardmigrate.dags.layout import (
    GATE_TASK_ID,
    PLAN_XCOM_KEY,
    PREFLIGHT_TASK_ID,
    REPORT_TASK_ID,
    SHARDS_GROUP,
    TaskLayout,
)
from airflow_provider_shardmigrate.dags.migration import _as_migration, _as_topology, shard_kwargs
from airflow_provider_shardmigrate.dags.params import rollback_params

if TYPE_CHECKING:
    from airflow.sdk import DAG


def rollback_plan(migration: Migration, topology: Topology) -> RolloutPlan:
    """One throttled wave over every shard of the topology, in topology order (the selection decides which
    of them roll back)."""
    shards = topology.shards
    if not shards:
        raise InvalidTopologyError(f"{topology.source}: the topology has no shard: nothing to roll back")
    clash = memo_by_identity(shards, "rollback clash", lambda: next((s.id for s in shards if s.key == ALL), None))
    if clash is not None:
        raise InvalidTopologyError(
            f"{topology.source}: shard '{clash}' is named like the rollback selection keyword '{ALL}'; rename it"
        )
    width = min(migration.options.max_parallelism, len(shards))
    execution = resolve_execution(migration.options.execution, len(shards))
    return memo_by_identity(
        shards,
        ("rollback", width, execution),
        lambda: RolloutPlan(Strategy.PARALLEL, (Wave(0, WaveKind.ALL, shards, width),), width, execution),
    )


def _rollback_kwargs(shards: tuple[Shard, ...]) -> list[dict[str, Any]]:
    """Per-instance arguments: the shard, its connection, and whether ``all`` selects it (active shards)."""
    return [{**kwargs, "in_all": shard.active} for kwargs, shard in zip(shard_kwargs(shards), shards, strict=True)]


def _shard_tasks(dag_id: str, migration: Migration, layout: TaskLayout) -> list[Any]:
    """One mapped task per shard (chunks beyond ``max_map_length``, one after another), or lanes."""
    from airflow.sdk import TriggerRule

    from airflow_provider_shardmigrate.operators.lanes import register_lane_work
    from airflow_provider_shardmigrate.operators.rollback import RollbackLaneOperator
    from airflow_provider_shardmigrate.operators.shard import ShardAction, ShardMigrationOperator

    common: dict[str, Any] = {
        "migration_path": str(migration.path),
        "migration_checksum": migration.checksum,
        "strategy": "rollback",
        "requires": [PREFLIGHT_TASK_ID],
        "retries": 0,
    }
    tasks = []
    for index, wave_task in enumerate(layout):
        if wave_task.is_lanes:
            work = register_lane_work(dag_id, wave_task.task_id, wave_task.lane_batches)
            tasks.append(
                RollbackLaneOperator.partial(
                    task_id=wave_task.name,
                    lanes=wave_task.lanes,
                    plan_fingerprint=work,
                    inactive=list(wave_task.inactive_ids),
                    max_active_tis_per_dagrun=wave_task.lanes,
                    map_index_template="{{ lane_label if lane_label is defined else 'lane ' ~ (ti.map_index + 1) }}",
                    **common,
                ).expand(lane=list(range(wave_task.lanes)))
            )
            continue
        tasks.append(
            ShardMigrationOperator.partial(
                task_id=wave_task.name,
                action=ShardAction.ROLLBACK,
                max_active_tis_per_dagrun=layout.plan.max_parallelism,
                map_index_template="{{ task.shard_id }}",
                trigger_rule=TriggerRule.ALL_SUCCESS if index == 0 else TriggerRule.ALL_DONE,
                **common,
            ).expand_kwargs(_rollback_kwargs(wave_task.shards))
        )
    return tasks


def build_rollback_dag(
    migration: Migration | str | Path,
    topology: Topology | str | Path,
    *,
    dag_id: str | None = None,
    **dag_kwargs: Any,
) -> DAG:
    """Build ``shardmigrate__<migration_id>__rollback``.

    :param migration: A loaded Migration or the path of its folder.
    :param topology: A loaded Topology or the path of the topology file.
    :param dag_id: Override the DAG id.
    :param dag_kwargs: Extra ``DAG`` arguments.
    """
    from airflow.sdk import DAG, TaskGroup, TriggerRule, chain

    from airflow_provider_shardmigrate.operators.preflight import MigrationPreflightOperator
    from airflow_provider_shardmigrate.operators.report import MigrationGateOperator, MigrationReportOperator

    migration = _as_migration(migration)
    topology = _as_topology(topology)
    plan = rollback_plan(migration, topology)
    layout = TaskLayout.of(plan, rollback=True, map_chunk=max_map_length())
    params = rollback_params(list(plan.target_ids), inactive=layout.inactive_ids)
    kwargs = dag_defaults(
        description=f"Roll back {migration.id} on the selected shards whose history says it is applied"[:500],
        dag_display_name=display_name(migration, "rollback"),
        doc_md=rollback_doc(migration, topology, migration_dag_id(migration.id)),
        tags=["shardmigrate", "rollback"],
        max_active_tasks=max(16, plan.max_parallelism + 2),
    )
    kwargs.update(dag_kwargs)
    with DAG(dag_id or rollback_dag_id(migration.id), **kwargs) as dag:
        preflight = MigrationPreflightOperator(
            task_id=PREFLIGHT_TASK_ID,
            migration_path=str(migration.path),
            migration_checksum=migration.checksum,
            shard_conn_ids=plan.conn_ids,
            plan_extra={"map_chunk": max_map_length()},
            plan=plan,
            plan_xcom_key=PLAN_XCOM_KEY,
            accepted_params=list(params),
            check_drift=False,
            selectable_shards=list(plan.target_ids),
        )
        with TaskGroup(SHARDS_GROUP):
            chunks = _shard_tasks(dag.dag_id, migration, layout)
        report = MigrationReportOperator(
            task_id=REPORT_TASK_ID,
            migration_id=migration.id,
            strategy="rollback",
            kind="rollback",
            target_shard_ids=list(plan.target_ids),
            shards_of_task=layout.shards_of(),
            mapped_task_ids=[wave.task_id for wave in layout if not wave.is_lanes],
            lanes_task_id=layout.lanes_task.task_id if layout.lanes_task else None,
            preflight_task_id=PREFLIGHT_TASK_ID,
            trigger_rule=TriggerRule.ALL_DONE,
        )
        gate = MigrationGateOperator(
            task_id=GATE_TASK_ID, report_task_id=REPORT_TASK_ID, trigger_rule=TriggerRule.ALL_DONE
        )
        chain(preflight, *chunks, report, gate)  # chunks of a fleet wider than max_map_length: one after another
    attach_params(dag, params)
    return dag
