"""``build_rollback_dag``: a manual rollback driven by each shard's history.

Every active shard gets a task; a shard whose history says the migration is there runs ``down`` under
its lock, a shard without it reports ``pending`` ("nothing to roll back"). The ``shards`` param limits
the rollback to chosen shards.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_provider_shardmigrate.core.errors import InvalidTopologyError
from airflow_provider_shardmigrate.core.scripts import Migration
from airflow_provider_shardmigrate.core.topology import Topology
from airflow_provider_shardmigrate.dags.common import attach_params, check_mappable, dag_defaults, rollback_dag_id
from airflow_provider_shardmigrate.dags.migration import _as_migration, _as_topology
from airflow_provider_shardmigrate.dags.params import rollback_params

if TYPE_CHECKING:
    from airflow.sdk import DAG


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
    from airflow.sdk import DAG, TaskGroup, TriggerRule

    from airflow_provider_shardmigrate.operators.report import (
        REPORT_TASK_ID,
        MigrationGateOperator,
        MigrationReportOperator,
    )
    from airflow_provider_shardmigrate.operators.shard import SHARDS_GROUP, ShardMigrationOperator

    migration = _as_migration(migration)
    topology = _as_topology(topology)
    shards = topology.active_shards
    if not shards:
        raise InvalidTopologyError(f"{topology.source}: the topology has no active shard: nothing to roll back")
    check_mappable(len(shards), "the rollback DAG")
    width = min(migration.options.max_parallelism, len(shards))
    kwargs = dag_defaults(
        description=f"Roll back {migration.id} on the shards whose history says it is applied"[:500],
        doc_md=(
            f"### Rollback of `{migration.id}`\n\nRuns `down` on every selected active shard whose history row is "
            "`applied` or `baselined`, and marks it `rolled_back`. Shards without the migration report `pending`."
        ),
        tags=["shardmigrate", "rollback"],
        max_active_tasks=max(16, width + 2),
    )
    kwargs.update(dag_kwargs)
    with DAG(dag_id or rollback_dag_id(migration.id), **kwargs) as dag:
        with TaskGroup(SHARDS_GROUP):
            undo = ShardMigrationOperator.partial(
                task_id="rollback",
                migration_path=str(migration.path),
                migration_checksum=migration.checksum,
                action="rollback",
                strategy="rollback",
                retries=0,
                max_active_tis_per_dagrun=width,
                map_index_template="{{ task.shard_id }}",
            ).expand_kwargs([{"shard_id": shard.id, "conn_id": shard.conn_id} for shard in shards])
        report = MigrationReportOperator(
            task_id=REPORT_TASK_ID,
            migration_id=migration.id,
            strategy="rollback",
            target_shard_ids=[shard.id for shard in shards],
            shard_task_ids=[undo.task_id],
            shards_of_task={undo.task_id: [shard.id for shard in shards]},
            rollback_mode=True,
            trigger_rule=TriggerRule.ALL_DONE,
        )
        gate = MigrationGateOperator(task_id="gate", trigger_rule=TriggerRule.ALL_DONE)
        undo >> report >> gate
    attach_params(dag, rollback_params([shard.id for shard in shards]))
    return dag
