"""``build_baseline_dag``: onboarding a shard as a DAG, ``shardmigrate_baseline`` (docs/howto/onboard-a-shard.md),
built by ``load_migration_dags`` beside the ``shardmigrate baseline`` command.

Params ``shard`` (a shard id, case-insensitive) and ``up_to`` (a migration id): every migration up to it that
the shard does not hold is recorded as ``baselined`` without running -- for a shard restored or cloned from a
snapshot that already has them. Later rollouts and the catch-up DAG then treat them as there::

    preflight -> baseline
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_provider_shardmigrate.core.catchup import catchup_steps
from airflow_provider_shardmigrate.core.scripts import MigrationSet
from airflow_provider_shardmigrate.core.topology import Topology
from airflow_provider_shardmigrate.dags.common import attach_params, dag_defaults
from airflow_provider_shardmigrate.dags.layout import BASELINE_DAG_ID, BASELINE_TASK_ID, PREFLIGHT_TASK_ID

if TYPE_CHECKING:
    from airflow.sdk import DAG


def baseline_params(migration_ids: list[str]) -> dict[str, Any]:
    from airflow.sdk import Param

    return {
        "shard": Param(
            type="string",
            minLength=1,
            title="Shard",
            description="The shard to baseline (its id in the topology, case-insensitive).",
        ),
        "up_to": Param(
            type="string",
            enum=migration_ids,
            title="Up to",
            description="Every migration up to this one (included) is recorded as baselined, without running.",
        ),
    }


def build_baseline_dag(
    migrations: MigrationSet,
    topology: Topology,
    *,
    dag_id: str = BASELINE_DAG_ID,
    **dag_kwargs: Any,
) -> DAG:
    """Build the baseline DAG for the shards of ``topology`` and the migrations of ``migrations``.

    :param migrations: The loaded migrations folder.
    :param topology: The loaded topology.
    :param dag_id: Override the DAG id.
    :param dag_kwargs: Extra ``DAG`` arguments.
    """
    from airflow.sdk import DAG

    from airflow_provider_shardmigrate.operators.catchup import (
        BaselineOperator,
        FleetPreflightOperator,
        migration_specs,
    )

    specs = migration_specs(catchup_steps(migrations))
    params = baseline_params(list(migrations.ids))
    kwargs = dag_defaults(
        description="Record migrations up to an id as baselined on one shard, without running them",
        doc_md=(
            "### Baseline a shard\n\nFor a shard restored or cloned from a snapshot that already holds the "
            "migrations: every migration up to `up_to` that the shard's history does not hold is recorded as "
            "`baselined` (nothing runs). A `failed` or `running` row stops it: look at the shard first."
        ),
        tags=["shardmigrate", "baseline"],
    )
    kwargs.update(dag_kwargs)
    with DAG(dag_id, **kwargs) as dag:
        preflight = FleetPreflightOperator(
            task_id=PREFLIGHT_TASK_ID,
            migrations=specs,
            shard_ids=[shard.id for shard in topology.shards],
            shard_param="shard",
            accepted_params=list(params),
        )
        baseline = BaselineOperator(
            task_id=BASELINE_TASK_ID,
            shard_conn_ids={shard.id: shard.conn_id for shard in topology.shards},
            migrations=specs,
            requires=[PREFLIGHT_TASK_ID],
            retries=0,
        )
        preflight >> baseline
    attach_params(dag, params)
    return dag
