"""The shape of every shardmigrate DAG in one place: task ids, group names, XCom keys, and which task
instance runs which shard.

The DAG builders create tasks from a :class:`TaskLayout`; the report, progress, the plugin and the CLI find
shards through the same layout, computed from the plan the run published -- so no reader rebuilds the
rollout from task ids, and renaming a task is a change to this file only.

Per-shard execution (one task instance per shard)::

    preflight -> shards.<id> -> shards.<id> ...                    sequential
    preflight -> shards.apply[<id>...]                             parallel
    preflight -> shards.batch_1.apply[...] -> shards.batch_2 ...   rolling
    preflight -> shards.canary -> shards.canary_gate -> shards.apply[rest...]   canary_first
                                   (-> shards.canary_approval, with canary_approval: true)

A mapped wave wider than ``[core] max_map_length`` is split into chained chunks ``apply``, ``apply_2``, ...

Lanes execution (a few task instances, each working through many shards)::

    preflight -> shards.lanes[lane...]                             sequential (1 lane), parallel, rolling
    preflight -> shards.canary -> shards.canary_gate -> shards.lanes[lane...]   canary_first

then ``auto_rollback`` (decides) -> ``rollbacks.rollback[...]`` (one instance per shard, or per lane of
shards) -> ``report`` -> ``gate``. The rollback DAG: ``preflight -> shards.rollback[<id>...] -> report -> gate``
(``shards.lanes[lane...]`` beyond 256 shards, like a rollout).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property

from airflow_provider_shardmigrate.core.options import Execution
from airflow_provider_shardmigrate.core.plans import RolloutPlan, Wave, WaveKind, deal, memo_by_identity
from airflow_provider_shardmigrate.core.topology import Shard
from airflow_provider_shardmigrate.operators._context import LANE_STATE_KEY as LANE_STATE_KEY
from airflow_provider_shardmigrate.operators._context import LANE_STATUSES_KEY_PREFIX as LANE_STATUSES_KEY_PREFIX
from airflow_provider_shardmigrate.operators._context import lane_statuses_key as lane_statuses_key

DAG_PREFIX = "shardmigrate__"
ROLLBACK_SUFFIX = "__rollback"

SHARDS_GROUP = "shards"
PREFLIGHT_TASK_ID = "preflight"
CANARY_GATE_TASK_ID = f"{SHARDS_GROUP}.canary_gate"
#: ``canary_approval: true``: the human approval between the canary gate and the rest of the fleet.
CANARY_APPROVAL_TASK_ID = f"{SHARDS_GROUP}.canary_approval"
AUTO_ROLLBACK_TASK_ID = "auto_rollback"
ROLLBACKS_GROUP = "rollbacks"
ROLLBACK_SHARDS_TASK_ID = f"{ROLLBACKS_GROUP}.rollback"
REPORT_TASK_ID = "report"
GATE_TASK_ID = "gate"

#: The fleet page's route inside the Airflow UI (``/plugin/<route>``, the plugin's external view), linked
#: from every migration DAG's docs.
FLEET_VIEW_ROUTE = "shardmigrate-fleet"

#: The fleet-level DAGs ``load_migration_dags`` builds beside the per-migration ones (docs/contracts.md).
CATCHUP_DAG_ID = "shardmigrate_catchup"
STATUS_DAG_ID = "shardmigrate_status"
BASELINE_DAG_ID = "shardmigrate_baseline"
#: The catch-up DAG's per-shard task (mapped, chunked like ``shards.apply``); lanes use ``shards.lanes``.
CATCHUP_SHARDS_TASK_ID = f"{SHARDS_GROUP}.catchup"
#: The status DAG's one task; its ``return_value`` is the fleet matrix.
STATUS_TASK_ID = "publish"
#: The baseline DAG's task that records the migrations on the shard.
BASELINE_TASK_ID = "baseline"

#: XCom key under which the preflight task publishes the run's plan (``RolloutPlan.to_dict()`` + ``map_chunk``).
PLAN_XCOM_KEY = "plan"
#: Per-shard status XComs are the ``return_value`` of the task that ran the shard; a lane returns a list.
STATUS_XCOM_KEY = "return_value"

_APPLY = "apply"
_ROLLBACK = "rollback"
_CANARY = "canary"
_LANES = "lanes"


def fleet_dag_id(base: str, fleet: str | None = None) -> str:
    """A fleet-level DAG id (``shardmigrate_catchup``), suffixed ``__<fleet>`` when one dags folder holds several
    migrations folders (each ``load_migration_dags(..., fleet="eu")`` call then has DAG ids of its own)."""
    return f"{base}__{fleet}" if fleet else base


def migration_dag_id(migration_id: str) -> str:
    return f"{DAG_PREFIX}{migration_id}"


def rollback_dag_id(migration_id: str) -> str:
    return f"{DAG_PREFIX}{migration_id}{ROLLBACK_SUFFIX}"


def migration_id_of(dag_id: str) -> str:
    """The migration id of a rollout or rollback DAG id."""
    return dag_id.removeprefix(DAG_PREFIX).removesuffix(ROLLBACK_SUFFIX)


def is_rollback_dag(dag_id: str) -> bool:
    return dag_id.startswith(DAG_PREFIX) and dag_id.endswith(ROLLBACK_SUFFIX)


@dataclass(frozen=True)
class WaveTask:
    """One shard task of the DAG: a plain task for one shard, a mapped task over shards, or lanes.

    ``waves`` are the plan's waves it runs (several for a lanes task: every link of a sequential chain, every
    rolling batch); ``shards`` the shards it covers, in order.
    """

    waves: tuple[Wave, ...]
    shards: tuple[Shard, ...]
    #: Task group inside ``shards`` (rolling batches), or None.
    group: str | None
    #: Task id inside its group.
    name: str
    mapped: bool
    #: Number of lanes of a lanes task; 0 for a per-shard task.
    lanes: int = 0

    @property
    def wave(self) -> Wave:
        return self.waves[0]

    @property
    def is_lanes(self) -> bool:
        return self.lanes > 0

    @property
    def group_id(self) -> str:
        return f"{SHARDS_GROUP}.{self.group}" if self.group else SHARDS_GROUP

    @property
    def task_id(self) -> str:
        return f"{self.group_id}.{self.name}"

    @cached_property
    def shard_ids(self) -> list[str]:
        """Shards in map-index order for a per-shard task (a single shard for a plain task)."""
        return [shard.id for shard in self.shards]

    @cached_property
    def lane_batches(self) -> list[list[tuple[Shard, ...]]]:
        """``[batch][lane] -> shards`` of a lanes task: a rolling batch's shards go one per lane, a parallel
        wave's are dealt round-robin, a sequential chain runs in one lane -- as one batch (its shards one after
        another, as batch after batch of one shard would run them, without a batch per shard)."""
        if not self.lanes:
            return []
        if self.lanes == 1:
            return [[self.shards]]
        return [
            deal(wave.shards, self.lanes) + [()] * (self.lanes - min(self.lanes, len(wave.shards)))
            for wave in self.waves
        ]

    @cached_property
    def inactive_ids(self) -> tuple[str, ...]:
        return tuple(shard.id for shard in self.shards if not shard.active)

    def lane_shards(self, lane: int) -> list[tuple[Shard, ...]]:
        """The shards lane ``lane`` runs, batch by batch."""
        return [batch[lane] for batch in self.lane_batches]


def _chunks(wave: Wave, chunk: int | None) -> list[tuple[Shard, ...]]:
    if not chunk or len(wave.shards) <= chunk:
        return [wave.shards]
    return [wave.shards[i : i + chunk] for i in range(0, len(wave.shards), chunk)]


def _per_shard_tasks(wave: Wave, *, rollback: bool, chunk: int | None, name: str | None = None) -> list[WaveTask]:
    if wave.kind is WaveKind.SHARD:
        return [WaveTask((wave,), wave.shards, None, wave.shards[0].id, mapped=False)]
    if wave.kind is WaveKind.CANARY:
        return [WaveTask((wave,), wave.shards, None, _CANARY, mapped=False)]
    group = f"batch_{wave.index + 1}" if wave.kind is WaveKind.BATCH else None
    base = name or (_ROLLBACK if rollback else _APPLY)
    return [
        WaveTask((wave,), part, group, base if i == 0 else f"{base}_{i + 1}", mapped=True)
        for i, part in enumerate(_chunks(wave, chunk))
    ]


def _lane_tasks(waves: Sequence[Wave], width: int) -> list[WaveTask]:
    """Lanes: the canary stays a task of its own; every other wave of the plan goes into one lanes task."""
    tasks: list[WaveTask] = []
    rest = [wave for wave in waves if wave.kind is not WaveKind.CANARY]
    for wave in waves:
        if wave.kind is WaveKind.CANARY:
            tasks.append(WaveTask((wave,), wave.shards, None, _CANARY, mapped=False))
    if rest:
        shards = tuple(shard for wave in rest for shard in wave.shards)
        lanes = 1 if rest[0].kind is WaveKind.SHARD else min(width, max(len(w.shards) for w in rest))
        tasks.append(WaveTask(tuple(rest), shards, None, _LANES, mapped=True, lanes=max(1, lanes)))
    return tasks


@dataclass(frozen=True)
class TaskLayout:
    """Which task (and map index) runs which shard, for one plan."""

    plan: RolloutPlan
    waves: tuple[WaveTask, ...]
    #: Mapped per-shard waves are split into chunks of at most this many shards (``[core] max_map_length``).
    map_chunk: int | None = None

    @classmethod
    def of(cls, plan: RolloutPlan, *, rollback: bool = False, map_chunk: int | None = None) -> TaskLayout:
        """The layout of a rollout DAG built from ``plan`` (or of the rollback DAG, whose one wave is mapped);
        computed once per plan (the migrations of a folder share their plans, core/plans.memo_by_identity)."""
        return memo_by_identity(plan, ("layout", rollback, map_chunk), lambda: cls._of(plan, rollback, map_chunk))

    @classmethod
    def _of(cls, plan: RolloutPlan, rollback: bool, map_chunk: int | None) -> TaskLayout:
        if plan.execution is Execution.LANES:
            return cls(plan, tuple(_lane_tasks(plan.waves, plan.max_parallelism)), map_chunk)
        tasks = [task for wave in plan.waves for task in _per_shard_tasks(wave, rollback=rollback, chunk=map_chunk)]
        return cls(plan, tuple(tasks), map_chunk)

    @classmethod
    def catchup(cls, plan: RolloutPlan, *, map_chunk: int | None = None) -> TaskLayout:
        """The catch-up DAG's layout: one mapped ``shards.catchup`` wave (chunked beyond ``map_chunk``), or lanes."""
        if plan.execution is Execution.LANES:
            return cls(plan, tuple(_lane_tasks(plan.waves, plan.max_parallelism)), map_chunk)
        name = CATCHUP_SHARDS_TASK_ID.removeprefix(f"{SHARDS_GROUP}.")
        tasks = [
            task for wave in plan.waves for task in _per_shard_tasks(wave, rollback=False, chunk=map_chunk, name=name)
        ]
        return cls(plan, tuple(tasks), map_chunk)

    @property
    def shard_task_ids(self) -> list[str]:
        return [wave.task_id for wave in self.waves]

    @cached_property
    def inactive_ids(self) -> tuple[str, ...]:
        """Ids of the inactive shards the layout covers (a rollback DAG covers every shard of the topology)."""
        return tuple(shard_id for wave in self.waves for shard_id in wave.inactive_ids)

    @property
    def lanes_task(self) -> WaveTask | None:
        return next((wave for wave in self.waves if wave.is_lanes), None)

    def shards_of(self) -> dict[str, list[str]]:
        """Per-shard task id -> the shards it runs, in map-index order (lanes tasks are not listed)."""
        return {wave.task_id: wave.shard_ids for wave in self.waves if not wave.is_lanes}

    def __iter__(self) -> Iterator[WaveTask]:
        return iter(self.waves)

    @cached_property
    def _by_task_id(self) -> dict[str, WaveTask]:
        return {wave.task_id: wave for wave in self.waves}

    def task(self, task_id: str) -> WaveTask | None:
        return self._by_task_id.get(task_id)

    def locate(self, task_id: str, map_index: int) -> str | None:
        """The shard a per-shard task instance works on; None for other tasks (a lane runs many shards)."""
        wave = self._by_task_id.get(task_id)
        if wave is None or wave.is_lanes:
            return None
        if not wave.mapped:
            return wave.shard_ids[0] if map_index < 0 else None
        shards = wave.shard_ids
        return shards[map_index] if 0 <= map_index < len(shards) else None

    def is_mapped(self, task_id: str) -> bool:
        wave = self._by_task_id.get(task_id)
        return wave is not None and wave.mapped
