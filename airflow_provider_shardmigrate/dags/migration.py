"""``build_migration_dag``: one DAG per migration, shaped by its strategy (DESIGN 2.3, 2.4).

    sequential    shards.<id> -> shards.<id> -> ...            (a chain; each waits for the previous)
    parallel      shards.apply[<id>...]                        (one mapped task, max_parallelism at once)
    rolling       shards.batch_1.apply[...] -> batch_2 -> ...  (batch k+1 after batch k)
    canary_first  shards.canary -> canary_gate -> shards.apply[rest...]

then ``auto_rollback`` -> ``report`` -> ``gate`` (the only leaf, so the run state tells the truth).
Building reads only the migration folder and the topology: no database, no connection, no Variable.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_provider_shardmigrate.core.options import Strategy
from airflow_provider_shardmigrate.core.plans import RolloutPlan, Wave, WaveKind, plan_rollout
from airflow_provider_shardmigrate.core.scripts import Migration, load_migration
from airflow_provider_shardmigrate.core.topology import Topology, load_topology
from airflow_provider_shardmigrate.dags.common import attach_params, check_mappable, dag_defaults, migration_dag_id
from airflow_provider_shardmigrate.dags.params import migration_params
from airflow_provider_shardmigrate.operators.shard import SHARDS_GROUP

#: Task id of the validate_before_apply gate that runs before any shard.
PREFLIGHT_TASK_ID = "preflight"
#: Task id of the mapped per-shard task of a parallel wave (inside the ``shards`` group).
MAPPED_TASK_ID = f"{SHARDS_GROUP}.apply"

if TYPE_CHECKING:
    from airflow.sdk import DAG

    from airflow_provider_shardmigrate.operators.shard import ShardMigrationOperator


def _as_migration(migration: Migration | str | Path) -> Migration:
    return migration if isinstance(migration, Migration) else load_migration(migration)


def _as_topology(topology: Topology | str | Path) -> Topology:
    return topology if isinstance(topology, Topology) else load_topology(topology)


class _ShardTasks:
    """Creates per-shard tasks for one DAG with the arguments they all share."""

    def __init__(self, migration: Migration, strategy: str) -> None:
        self.common: dict[str, Any] = {
            "migration_path": str(migration.path),
            "migration_checksum": migration.checksum,
            "strategy": strategy,
            "retries": 0,
        }
        if migration.options.validate_before_apply:
            self.common["requires"] = [PREFLIGHT_TASK_ID]
        self.task_ids: list[str] = []
        #: task id -> the shards it runs, in map-index order (one shard, map index -1, when not mapped)
        self.shards_of: dict[str, list[str]] = {}

    def single(self, task_id: str, wave: Wave, **kwargs: Any) -> ShardMigrationOperator:
        from airflow_provider_shardmigrate.operators.shard import ShardMigrationOperator

        shard = wave.shards[0]
        task = ShardMigrationOperator(
            task_id=task_id, shard_id=shard.id, conn_id=shard.conn_id, **self.common, **kwargs
        )
        self.task_ids.append(task.task_id)
        self.shards_of[task.task_id] = [shard.id]
        return task

    def mapped(self, task_id: str, wave: Wave, what: str, **kwargs: Any) -> Any:
        from airflow_provider_shardmigrate.operators.shard import ShardMigrationOperator

        check_mappable(len(wave.shards), what)
        task = ShardMigrationOperator.partial(
            task_id=task_id,
            max_active_tis_per_dagrun=wave.concurrency,
            map_index_template="{{ task.shard_id }}",
            **self.common,
            **kwargs,
        ).expand_kwargs([{"shard_id": shard.id, "conn_id": shard.conn_id} for shard in wave.shards])
        self.task_ids.append(task.task_id)
        self.shards_of[task.task_id] = [shard.id for shard in wave.shards]
        return task


def _wire_shards(plan: RolloutPlan, tasks: _ShardTasks, migration: Migration) -> list[Any]:
    """Create the per-shard tasks of ``plan``; return the last wave's task, which finishes last: every
    link of a chain waits for the previous one (``all_done``), and a failed canary fails its gate and
    the rest (``upstream_failed`` counts as done)."""
    from airflow.sdk import TaskGroup, TriggerRule

    from airflow_provider_shardmigrate.operators.canary import CanaryGateOperator

    previous: Any = None
    for wave in plan.waves:
        after = [previous.task_id] if previous is not None else []
        if wave.kind is WaveKind.SHARD:
            task = tasks.single(wave.shards[0].id, wave, trigger_rule=TriggerRule.ALL_DONE, stop_after=after)
        elif wave.kind is WaveKind.ALL:
            task = tasks.mapped("apply", wave, "the parallel strategy", stop_watch=[MAPPED_TASK_ID])
        elif wave.kind is WaveKind.BATCH:
            with TaskGroup(f"batch_{wave.index + 1}", tooltip=", ".join(s.id for s in wave.shards[:20])):
                task = tasks.mapped(
                    "apply",
                    wave,
                    f"rolling batch {wave.index + 1}",
                    trigger_rule=TriggerRule.ALL_DONE,
                    stop_after=after,
                )
        elif wave.kind is WaveKind.CANARY:
            canary = wave.shards[0]
            task = tasks.single("canary", wave, task_display_name=f"canary {canary.id}")
        else:  # REST after the canary: only when the canary gate passed
            assert plan.canary is not None
            gate = CanaryGateOperator(
                task_id="canary_gate",
                canary_task_id=tasks.task_ids[0],
                canary_shard_id=plan.canary.id,
                canary_conn_id=plan.canary.conn_id,
                validation_query=migration.options.canary_validation,
                bake_time=migration.options.canary_bake_time,
                timeout=migration.options.per_shard_timeout,
            )
            previous >> gate
            previous = gate
            task = tasks.mapped("apply", wave, "the canary_first strategy", stop_watch=[MAPPED_TASK_ID])
        if previous is not None:
            previous >> task
        previous = task
    return [previous]


def build_migration_dag(
    migration: Migration | str | Path,
    topology: Topology | str | Path,
    *,
    dag_id: str | None = None,
    **dag_kwargs: Any,
) -> DAG:
    """Build the rollout DAG ``shardmigrate__<migration_id>``.

    :param migration: A loaded Migration or the path of its folder.
    :param topology: A loaded Topology or the path of the topology file.
    :param dag_id: Override the DAG id.
    :param dag_kwargs: Extra ``DAG`` arguments (tags, owner links, ...).
    """
    from airflow.sdk import DAG, TaskGroup, TriggerRule

    from airflow_provider_shardmigrate.operators.preflight import MigrationPreflightOperator
    from airflow_provider_shardmigrate.operators.report import (
        REPORT_TASK_ID,
        ROLLBACK_TASK_ID,
        AutoRollbackOperator,
        MigrationGateOperator,
        MigrationReportOperator,
    )

    migration = _as_migration(migration)
    topology = _as_topology(topology)
    options = migration.options
    plan = plan_rollout(topology.shards, options)
    targets = plan.targets
    strategy = options.strategy.value
    kwargs = dag_defaults(
        description=(migration.description or f"Roll out {migration.id}")[:500],
        doc_md=_doc(migration, plan),
        tags=["shardmigrate", f"strategy:{strategy}"],
        max_active_tasks=max(16, plan.max_parallelism + 2),
    )
    kwargs.update(dag_kwargs)
    with DAG(dag_id or migration_dag_id(migration.id), **kwargs) as dag:
        tasks = _ShardTasks(migration, strategy)
        with TaskGroup(SHARDS_GROUP, tooltip=f"{len(targets)} shard(s), {strategy}") as shards_group:
            leaves = _wire_shards(plan, tasks, migration)
        if options.validate_before_apply:
            preflight = MigrationPreflightOperator(
                task_id=PREFLIGHT_TASK_ID,
                migration_path=str(migration.path),
                migration_checksum=migration.checksum,
                shard_conn_ids={shard.id: shard.conn_id for shard in targets},
                timeout=min(60.0, options.per_shard_timeout),
                max_workers=max(8, plan.max_parallelism),
            )
            preflight >> shards_group
        rollback = AutoRollbackOperator(
            task_id=ROLLBACK_TASK_ID,
            migration_path=str(migration.path),
            migration_checksum=migration.checksum,
            shard_task_ids=tasks.task_ids,
            shard_conn_ids={shard.id: shard.conn_id for shard in targets},
            max_parallelism=plan.max_parallelism,
            trigger_rule=TriggerRule.ALL_DONE,
        )
        report = MigrationReportOperator(
            task_id=REPORT_TASK_ID,
            migration_id=migration.id,
            strategy=strategy,
            target_shard_ids=[shard.id for shard in targets],
            shard_task_ids=tasks.task_ids,
            shards_of_task=tasks.shards_of,
            rollback_task_id=ROLLBACK_TASK_ID,
            trigger_rule=TriggerRule.ALL_DONE,
        )
        gate = MigrationGateOperator(task_id="gate", trigger_rule=TriggerRule.ALL_DONE)
        leaves >> rollback
        rollback >> report >> gate
    attach_params(dag, migration_params(options))
    return dag


def _doc(migration: Migration, plan: RolloutPlan) -> str:
    lines = [
        f"### Migration `{migration.id}`",
        "",
        migration.description or "",
        "",
        f"* strategy: **{plan.strategy.value}**, max_parallelism {plan.max_parallelism}, "
        f"per_shard_timeout {migration.options.per_shard_timeout:g}s, transactional {migration.options.transactional}",
        f"* checksum: `{migration.checksum}`",
        f"* {len(plan.targets)} shard(s) in {len(plan.waves)} wave(s):",
    ]
    for wave in plan.waves[:50]:
        shown = ", ".join(s.id for s in wave.shards[:12]) + (" ..." if len(wave.shards) > 12 else "")
        lines.append(f"  * {wave.label} ({len(wave.shards)}): {shown}")
    if len(plan.waves) > 50:
        lines.append(f"  * ... {len(plan.waves) - 50} more")
    if plan.strategy is Strategy.CANARY_FIRST:
        lines.append("* a failed canary leaves every other shard pending")
    return "\n".join(lines)
