"""``build_status_dag``: the scheduled fleet-status DAG ``shardmigrate_status`` (docs/contracts.md), built by
``load_migration_dags``: its one task ``publish`` reads every shard's history table and publishes the shard x
migration matrix as its ``return_value``, for the UI to read without opening shard connections.

The schedule comes from the topology's optional ``status: {schedule: ...}`` section (default ``@hourly``).
Building reads nothing but its arguments: the folder and the topology are read when the task runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_provider_shardmigrate.dags.common import dag_defaults
from airflow_provider_shardmigrate.dags.layout import STATUS_DAG_ID, STATUS_TASK_ID

if TYPE_CHECKING:
    from airflow.sdk import DAG


def build_status_dag(
    migrations: str | Path,
    topology: str | Path,
    *,
    schedule: str | None = "@hourly",
    dag_id: str = STATUS_DAG_ID,
    timeout: float = 30.0,
    max_workers: int = 8,
    **dag_kwargs: Any,
) -> DAG:
    """Build the fleet-status DAG.

    :param migrations: The migrations folder.
    :param topology: The topology file.
    :param schedule: When to publish (the topology's ``status.schedule``).
    :param dag_id: Override the DAG id.
    :param timeout: Seconds one shard may take to answer.
    :param max_workers: Shards read at once.
    :param dag_kwargs: Extra ``DAG`` arguments.
    """
    from airflow.sdk import DAG

    from airflow_provider_shardmigrate.operators.fleet_status import FleetStatusOperator

    kwargs = dag_defaults(
        schedule=schedule,
        description="Which migration is on which shard: the shard x migration matrix",
        doc_md=(
            "### Fleet status\n\n`publish` reads every shard's history table (read-only, a few shards at a time, "
            f"{timeout:g}s each) and publishes the shard x migration matrix as its XCom: one character per "
            "migration per shard (`A` applied, `B` baselined, `F` failed, `R` running, `X` rolled back, `-` not "
            "applied, `?` unreadable), counts per migration, and whether every active shard has every migration."
        ),
        tags=["shardmigrate", "status"],
    )
    kwargs.update(dag_kwargs)
    with DAG(dag_id, **kwargs) as dag:
        FleetStatusOperator(
            task_id=STATUS_TASK_ID,
            migrations_path=str(migrations),
            topology_path=str(topology),
            timeout=timeout,
            max_workers=max_workers,
            retries=0,
        )
    return dag
