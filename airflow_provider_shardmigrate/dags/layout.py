"""The shape of every shardmigrate DAG in one place: task ids, group names, XCom keys, and which task
instance runs which shard.

The DAG builders create tasks from a :class:`TaskLayout`; the report, progress, the plugin and the CLI find
shards through the same layout, computed from the plan the run published -- so no reader rebuilds the
rollout from task ids, and renaming a task is a change to this file only.

    preflight -> shards.<id> -> shards.<id> ...                    sequential
    preflight -> shards.apply[<id>...]                             parallel
    preflight -> shards.batch_1.apply[...] -> shards.batch_2 ...   rolling
    preflight -> shards.canary -> shards.canary_gate -> shards.apply[rest...]   canary_first
                                   (-> shards.canary_approval, with canary_approval: true)
              -> auto_rollback -> report -> gate

The rollback DAG: ``preflight -> shards.rollback[<id>...] -> report -> gate``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

from airflow_provider_shardmigrate.core.plans import RolloutPlan, Wave, WaveKind

DAG_PREFIX = "shardmigrate__"
ROLLBACK_SUFFIX = "__rollback"

SHARDS_GROUP = "shards"
PREFLIGHT_TASK_ID = "preflight"
CANARY_GATE_TASK_ID = f"{SHARDS_GROUP}.canary_gate"
#: ``canary_approval: true``: the human approval between the canary gate and the rest of the fleet.
CANARY_APPROVAL_TASK_ID = f"{SHARDS_GROUP}.canary_approval"
AUTO_ROLLBACK_TASK_ID = "auto_rollback"
REPORT_TASK_ID = "report"
GATE_TASK_ID = "gate"

#: The fleet page's route inside the Airflow UI (``/plugin/<route>``, the plugin's external view), linked
#: from every migration DAG's docs.
FLEET_VIEW_ROUTE = "shardmigrate-fleet"

#: XCom key under which the preflight task publishes the run's plan (``RolloutPlan.to_dict()``).
PLAN_XCOM_KEY = "plan"
#: Per-shard status XComs are the ``return_value`` of the task that ran the shard.
STATUS_XCOM_KEY = "return_value"

_APPLY = "apply"
_ROLLBACK = "rollback"
_CANARY = "canary"


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
    """The task that runs one wave of the plan: a plain task for one shard, a mapped task for many."""

    wave: Wave
    #: Task group inside ``shards`` (rolling batches), or None.
    group: str | None
    #: Task id inside its group.
    name: str
    mapped: bool

    @property
    def group_id(self) -> str:
        return f"{SHARDS_GROUP}.{self.group}" if self.group else SHARDS_GROUP

    @property
    def task_id(self) -> str:
        return f"{self.group_id}.{self.name}"

    @cached_property
    def shard_ids(self) -> list[str]:
        """Shards in map-index order (a single shard for a plain task)."""
        return [shard.id for shard in self.wave.shards]


def _wave_task(wave: Wave, *, rollback: bool) -> WaveTask:
    if rollback:
        return WaveTask(wave, None, _ROLLBACK, mapped=True)
    if wave.kind is WaveKind.SHARD:
        return WaveTask(wave, None, wave.shards[0].id, mapped=False)
    if wave.kind is WaveKind.CANARY:
        return WaveTask(wave, None, _CANARY, mapped=False)
    if wave.kind is WaveKind.BATCH:
        return WaveTask(wave, f"batch_{wave.index + 1}", _APPLY, mapped=True)
    return WaveTask(wave, None, _APPLY, mapped=True)  # ALL, REST


@dataclass(frozen=True)
class TaskLayout:
    """Which task (and map index) runs which shard, for one plan."""

    plan: RolloutPlan
    waves: tuple[WaveTask, ...]

    @classmethod
    def of(cls, plan: RolloutPlan, *, rollback: bool = False) -> TaskLayout:
        """The layout of a rollout DAG built from ``plan`` (or of the rollback DAG, whose one wave is mapped)."""
        return cls(plan, tuple(_wave_task(wave, rollback=rollback) for wave in plan.waves))

    @property
    def shard_task_ids(self) -> list[str]:
        return [wave.task_id for wave in self.waves]

    def shards_of(self) -> dict[str, list[str]]:
        """Task id -> the shards it runs, in map-index order."""
        return {wave.task_id: wave.shard_ids for wave in self.waves}

    def __iter__(self) -> Iterator[WaveTask]:
        return iter(self.waves)

    @cached_property
    def _by_task_id(self) -> dict[str, WaveTask]:
        return {wave.task_id: wave for wave in self.waves}

    def locate(self, task_id: str, map_index: int) -> str | None:
        """The shard a task instance works on; None for a task that is not a shard task."""
        wave = self._by_task_id.get(task_id)
        if wave is None:
            return None
        if not wave.mapped:
            return wave.shard_ids[0] if map_index < 0 else None
        shards = wave.shard_ids
        return shards[map_index] if 0 <= map_index < len(shards) else None

    def is_mapped(self, task_id: str) -> bool:
        wave = self._by_task_id.get(task_id)
        return wave is not None and wave.mapped
