"""Strategy plans (docs/contracts.md, strategies) as pure functions: which shards run in which wave, how many at once.

The DAG builders only translate a plan into tasks, and ``shardmigrate plan`` prints the same plan, so
what a user previews is exactly what Airflow will run.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property
from typing import Any, TypeVar

from airflow_provider_shardmigrate.core.errors import InvalidScriptError, InvalidTopologyError
from airflow_provider_shardmigrate.core.options import AUTO_LANES_ABOVE, Execution, MigrationOptions, Strategy
from airflow_provider_shardmigrate.core.topology import Shard


class WaveKind(StrEnum):
    SHARD = "shard"  # one shard of a sequential chain
    ALL = "all"  # the whole fleet, throttled (parallel)
    BATCH = "batch"  # one rolling batch
    CANARY = "canary"
    REST = "rest"  # everything after the canary, throttled


@dataclass(frozen=True)
class Wave:
    """Shards that may run together; wave k+1 starts only after wave k has finished."""

    index: int
    kind: WaveKind
    shards: tuple[Shard, ...]
    concurrency: int

    @property
    def label(self) -> str:
        if self.kind is WaveKind.SHARD:
            return f"shard {self.shards[0].id}"
        if self.kind is WaveKind.BATCH:
            return f"batch {self.index + 1}"
        return self.kind.value


@dataclass(frozen=True)
class RolloutPlan:
    strategy: Strategy
    waves: tuple[Wave, ...]
    max_parallelism: int
    #: ``per_shard`` (a task instance per shard) or ``lanes``; never ``auto`` once planned.
    execution: Execution = Execution.PER_SHARD

    @cached_property
    def targets(self) -> tuple[Shard, ...]:
        return tuple(shard for wave in self.waves for shard in wave.shards)

    @cached_property
    def target_ids(self) -> tuple[str, ...]:
        return tuple(shard.id for shard in self.targets)

    @cached_property
    def conn_ids(self) -> Mapping[str, str]:
        """Targeted shard id -> its Airflow connection id, in rollout order (shared: do not modify)."""
        return {shard.id: shard.conn_id for shard in self.targets}

    @property
    def canary(self) -> Shard | None:
        return self.waves[0].shards[0] if self.waves and self.waves[0].kind is WaveKind.CANARY else None

    def to_dict(self) -> dict[str, Any]:
        """The plan as the run publishes it (shard ids only: progress needs no connection)."""
        return {
            "strategy": self.strategy.value,
            "max_parallelism": self.max_parallelism,
            "execution": self.execution.value,
            "waves": [
                {
                    "index": wave.index,
                    "kind": wave.kind.value,
                    "concurrency": wave.concurrency,
                    "shards": [shard.id for shard in wave.shards],
                }
                for wave in self.waves
            ],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RolloutPlan:
        waves = tuple(
            Wave(
                index=int(wave["index"]),
                kind=WaveKind(wave["kind"]),
                shards=tuple(Shard(str(shard_id), "") for shard_id in wave["shards"]),
                concurrency=int(wave["concurrency"]),
            )
            for wave in data["waves"]
        )
        return cls(
            strategy=Strategy(data["strategy"]),
            waves=waves,
            max_parallelism=int(data["max_parallelism"]),
            execution=Execution(data.get("execution", Execution.PER_SHARD.value)),
        )


def choose_canary(active: Sequence[Shard], requested: str | None) -> Shard:
    if requested is None:
        return active[0]
    for shard in active:
        if shard.key == requested.casefold():
            return shard
    raise InvalidScriptError(
        f"canary '{requested}' is not an active shard of the topology (active: "
        f"{', '.join(s.id for s in active[:10])}{', ...' if len(active) > 10 else ''})"
    )


def resolve_execution(requested: Execution, targets: int) -> Execution:
    """``auto`` -> per-shard tasks up to ``AUTO_LANES_ABOVE`` targeted shards, lanes beyond."""
    if requested is not Execution.AUTO:
        return requested
    return Execution.LANES if targets > AUTO_LANES_ABOVE else Execution.PER_SHARD


def deal(shards: Sequence[Shard], lanes: int) -> list[tuple[Shard, ...]]:
    """Shards dealt round-robin to ``lanes`` lanes in topology order: lane i gets shards i, i+lanes, ...

    With shards of similar duration every lane finishes together (the wave takes ceil(n / lanes) shard
    times), and the assignment is a pure function of the plan: a cleared lane re-runs exactly its shards.
    """
    count = max(1, min(lanes, len(shards)))
    return [tuple(shards[i::count]) for i in range(count)]


_T = TypeVar("_T")
#: Inside :func:`shared_plans`: what was computed for an immutable owner (a topology's shard tuple, a plan),
#: by the owner's identity and a key; None outside.
_MEMO: dict[Hashable, tuple[object, Any]] | None = None


@contextmanager
def shared_plans() -> Iterator[None]:
    """Within the block, a plan (and its task layout, lane work, fingerprint) is computed once per topology and
    shaping options: the migrations of one folder share the topology, and most share their options, so a
    10,000-shard fleet is planned a few times per parse instead of once per migration. Forgotten at the end
    of the block (``load_migration_dags`` wraps one parse in it)."""
    global _MEMO
    outer = _MEMO
    if outer is None:
        _MEMO = {}
    try:
        yield
    finally:
        if outer is None:
            _MEMO = None


def memo_by_identity(owner: object, key: Hashable, compute: Callable[[], _T]) -> _T:
    """``compute()``, once per ``owner`` object and ``key`` inside :func:`shared_plans` (always outside it).
    The entry keeps ``owner`` alive, so its id cannot be reused by another object meanwhile."""
    memo = _MEMO
    if memo is None:
        return compute()
    memo_key = (id(owner), key)
    hit = memo.get(memo_key)
    if hit is not None and hit[0] is owner:
        return hit[1]  # type: ignore[no-any-return]
    value = compute()
    memo[memo_key] = (owner, value)
    return value


def plan_rollout(shards: Sequence[Shard], options: MigrationOptions) -> RolloutPlan:
    """Plan a rollout over the *active* shards of ``shards``, in topology order (one plan per topology and
    shaping options: a shard tuple is immutable, so its plan is computed once)."""
    if not isinstance(shards, tuple):
        return _plan_rollout(shards, options)
    key = ("rollout", options.strategy, options.max_parallelism, options.canary, options.execution)
    return memo_by_identity(shards, key, lambda: _plan_rollout(shards, options))


def _plan_rollout(shards: Sequence[Shard], options: MigrationOptions) -> RolloutPlan:
    active = [shard for shard in shards if shard.active]
    if not active:
        raise InvalidTopologyError("the topology has no active shard: nothing to migrate")
    width = max(1, options.max_parallelism)
    waves: list[Wave] = []
    if options.strategy is Strategy.SEQUENTIAL:
        waves = [Wave(i, WaveKind.SHARD, (shard,), 1) for i, shard in enumerate(active)]
    elif options.strategy is Strategy.PARALLEL:
        waves = [Wave(0, WaveKind.ALL, tuple(active), min(width, len(active)))]
    elif options.strategy is Strategy.ROLLING:
        batches = [tuple(active[i : i + width]) for i in range(0, len(active), width)]
        waves = [Wave(i, WaveKind.BATCH, batch, len(batch)) for i, batch in enumerate(batches)]
    elif options.strategy is Strategy.CANARY_FIRST:
        canary = choose_canary(active, options.canary)
        rest = tuple(shard for shard in active if shard is not canary)
        waves = [Wave(0, WaveKind.CANARY, (canary,), 1)]
        if rest:
            waves.append(Wave(1, WaveKind.REST, rest, min(width, len(rest))))
    else:  # pragma: no cover - Strategy is a closed enum
        raise InvalidScriptError(f"unknown strategy {options.strategy!r}")
    execution = resolve_execution(options.execution, len(active))
    return RolloutPlan(strategy=options.strategy, waves=tuple(waves), max_parallelism=width, execution=execution)
