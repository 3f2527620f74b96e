"""``build_catchup_dag``: the catch-up DAG ``shardmigrate_catchup`` (docs/contracts.md), built by
``load_migration_dags`` beside the per-migration DAGs.

For every selected shard it applies every migration of the folder the shard does not hold, in id order, up
to the ``up_to`` Param; a shard stops at its first failure (its later migrations stay not applied) and the
other shards go on. It serves a new shard onboarded from an empty schema, a shard restored from an old backup,
and a fleet whose per-migration DAGs were run out of order by hand::

    preflight -> shards.catchup[<shard>...] -> report -> gate       up to 256 shards (chunked beyond max_map_length)
    preflight -> shards.lanes[lane...]      -> report -> gate       beyond: a few lanes, each through many shards

Params: ``shards`` (ids, case-insensitive; empty = every active shard; inactive shards may be named), ``up_to``
(the last migration id to apply; empty = all), ``dry_run``. Building reads the folder and the topology only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_provider_shardmigrate.core.catchup import catchup_steps
from airflow_provider_shardmigrate.core.errors import InvalidTopologyError
from airflow_provider_shardmigrate.core.options import Execution, Strategy
from airflow_provider_shardmigrate.core.plans import RolloutPlan, Wave, WaveKind, resolve_execution
from airflow_provider_shardmigrate.core.scripts import MigrationSet
from airflow_provider_shardmigrate.core.topology import Topology
from airflow_provider_shardmigrate.dags.common import attach_params, dag_defaults, max_map_length
from airflow_provider_shardmigrate.dags.layout import (
    CATCHUP_DAG_ID,
    GATE_TASK_ID,
    PREFLIGHT_TASK_ID,
    REPORT_TASK_ID,
    SHARDS_GROUP,
    TaskLayout,
    WaveTask,
)

if TYPE_CHECKING:
    from airflow.sdk import DAG

#: Shards caught up at once (per-shard tasks at once, or lanes).
CATCHUP_PARALLELISM = 4


def catchup_params(migration_ids: list[str]) -> dict[str, Any]:
    from airflow.sdk import Param

    return {
        "shards": Param(
            [],
            type="array",
            items={"type": "string", "minLength": 1},
            uniqueItems=True,
            title="Shards",
            description="Shard ids to catch up (case-insensitive; inactive shards may be named, e.g. a new shard "
            "before it is activated); empty: every active shard.",
        ),
        "up_to": Param(
            "",
            type="string",
            enum=["", *migration_ids],
            title="Up to",
            description="The last migration to apply (its id); empty: every migration of the folder.",
        ),
        "dry_run": Param(
            False,
            type="boolean",
            title="Dry run",
            description="Every shard lists what it would apply; nothing is written.",
        ),
    }


def catchup_plan(topology: Topology, width: int, execution: Execution = Execution.AUTO) -> RolloutPlan:
    """One throttled wave over every shard of the topology (those not selected skip at once): per-shard tasks,
    or lanes beyond ``AUTO_LANES_ABOVE`` shards."""
    shards = topology.shards
    if not shards:
        raise InvalidTopologyError(f"{topology.source}: the topology has no shard: nothing to catch up")
    concurrency = max(1, min(width, len(shards)))
    resolved = resolve_execution(execution, len(shards))
    return RolloutPlan(Strategy.PARALLEL, (Wave(0, WaveKind.ALL, shards, concurrency),), concurrency, resolved)


def _shard_task(wave_task: WaveTask, common: dict[str, Any], dag_id: str, first: bool) -> Any:
    from airflow.sdk import TriggerRule

    from airflow_provider_shardmigrate.operators.catchup import CatchupLaneOperator, ShardCatchupOperator
    from airflow_provider_shardmigrate.operators.lanes import register_lane_work

    # The first task needs the preflight to succeed; a later chunk runs after the one before whatever it did
    # (each instance checks the preflight itself).
    rule = TriggerRule.ALL_SUCCESS if first else TriggerRule.ALL_DONE
    if wave_task.is_lanes:
        work = register_lane_work(dag_id, wave_task.task_id, wave_task.lane_batches)
        return CatchupLaneOperator.partial(
            task_id=wave_task.name,
            lanes=wave_task.lanes,
            plan_fingerprint=work,
            target_count=len(wave_task.shards),
            max_active_tis_per_dagrun=wave_task.lanes,
            map_index_template="{{ lane_label if lane_label is defined else 'lane ' ~ (ti.map_index + 1) }}",
            trigger_rule=rule,
            **common,
        ).expand(lane=list(range(wave_task.lanes)))
    return ShardCatchupOperator.partial(
        task_id=wave_task.name,
        max_active_tis_per_dagrun=wave_task.wave.concurrency,
        map_index_template="{{ task.shard_id }}",
        trigger_rule=rule,
        **common,
    ).expand_kwargs([{"shard_id": s.id, "conn_id": s.conn_id, "shard_active": s.active} for s in wave_task.shards])


def build_catchup_dag(
    migrations: MigrationSet,
    topology: Topology,
    *,
    dag_id: str = CATCHUP_DAG_ID,
    max_parallelism: int = CATCHUP_PARALLELISM,
    execution: Execution = Execution.AUTO,
    **dag_kwargs: Any,
) -> DAG:
    """Build the catch-up DAG over every shard of ``topology`` for the migrations of ``migrations``.

    :param migrations: The loaded migrations folder (``load_migrations``).
    :param topology: The loaded topology.
    :param dag_id: Override the DAG id.
    :param max_parallelism: Shards caught up at once.
    :param execution: ``per_shard`` tasks, ``lanes``, or ``auto`` (lanes beyond 256 shards).
    :param dag_kwargs: Extra ``DAG`` arguments.
    """
    from airflow.sdk import DAG, TaskGroup, TriggerRule, chain

    from airflow_provider_shardmigrate.operators.catchup import (
        CATCHUP,
        CatchupReportOperator,
        FleetPreflightOperator,
        migration_specs,
    )
    from airflow_provider_shardmigrate.operators.report import MigrationGateOperator

    specs = migration_specs(catchup_steps(migrations))
    plan = catchup_plan(topology, max_parallelism, Execution(execution))
    layout = TaskLayout.catchup(plan, map_chunk=max_map_length())
    lanes_task = layout.lanes_task
    params = catchup_params(list(migrations.ids))
    kwargs = dag_defaults(
        description=f"Apply every pending migration, in order, on each shard ({len(migrations.ids)} migrations)",
        doc_md=_doc(migrations, topology, plan),
        tags=["shardmigrate", CATCHUP],
        max_active_tasks=max(16, plan.max_parallelism + 2),
    )
    kwargs.update(dag_kwargs)
    common = {"migrations": specs, "requires": [PREFLIGHT_TASK_ID], "retries": 0}
    with DAG(dag_id, **kwargs) as dag:
        preflight = FleetPreflightOperator(
            task_id=PREFLIGHT_TASK_ID,
            migrations=specs,
            shard_ids=[shard.id for shard in topology.shards],
            accepted_params=list(params),
        )
        with TaskGroup(SHARDS_GROUP, tooltip=f"{len(plan.targets)} shard(s), catch-up"):
            tasks = [_shard_task(task, common, dag_id, index == 0) for index, task in enumerate(layout)]
        report = CatchupReportOperator(
            task_id=REPORT_TASK_ID,
            migration_ids=list(migrations.ids),
            target_shard_ids=list(plan.target_ids),
            shards_of_task=layout.shards_of(),
            mapped_task_ids=[wave.task_id for wave in layout if wave.mapped and not wave.is_lanes],
            lanes_task_id=lanes_task.task_id if lanes_task else None,
            preflight_task_id=PREFLIGHT_TASK_ID,
            trigger_rule=TriggerRule.ALL_DONE,
        )
        gate = MigrationGateOperator(
            task_id=GATE_TASK_ID, report_task_id=REPORT_TASK_ID, trigger_rule=TriggerRule.ALL_DONE
        )
        chain(preflight, *tasks, report, gate)
    attach_params(dag, params)
    return dag


def _doc(migrations: MigrationSet, topology: Topology, plan: RolloutPlan) -> str:
    shown = ", ".join(f"`{mid}`" for mid in migrations.ids[-10:]) or "none"
    return "\n".join(
        [
            "### Catch-up",
            "",
            "Applies, on each selected shard, every migration of the folder it does not hold yet -- in id order, "
            "each through the per-shard protocol -- and stops a shard at its first failure (its later migrations "
            "stay not applied); the other shards go on.",
            "",
            f"* migrations: {len(migrations.ids)} (the last: {shown})",
            f"* shards: {len(topology.shards)} ({len(topology.active_shards)} active), "
            f"{plan.max_parallelism} at once, {plan.execution.value}",
            "* Params: `shards` (empty: every active shard), `up_to` (the last migration to apply), `dry_run`",
        ]
    )
