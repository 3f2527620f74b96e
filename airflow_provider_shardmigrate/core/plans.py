"""Strategy plans (docs/contracts.md, strategies) as pure functions: which shards run in which wave, how many at once.

The DAG builders only translate a plan into tasks, and ``shardmigrate plan`` prints the same plan, so
what a user previews is exactly what Airflow will run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from airflow_provider_shardmigrate.core.errors import InvalidScriptError, InvalidTopologyError
from airflow_provider_shardmigrate.core.options import MigrationOptions, Strategy
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

    @property
    def targets(self) -> tuple[Shard, ...]:
        return tuple(shard for wave in self.waves for shard in wave.shards)

    @property
    def canary(self) -> Shard | None:
        return self.waves[0].shards[0] if self.waves and self.waves[0].kind is WaveKind.CANARY else None

    def to_dict(self) -> dict[str, Any]:
        """The plan as the run publishes it (shard ids only: progress needs no connection)."""
        return {
            "strategy": self.strategy.value,
            "max_parallelism": self.max_parallelism,
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
        return cls(strategy=Strategy(data["strategy"]), waves=waves, max_parallelism=int(data["max_parallelism"]))


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


def plan_rollout(shards: Sequence[Shard], options: MigrationOptions) -> RolloutPlan:
    """Plan a rollout over the *active* shards of ``shards``, in topology order."""
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
    return RolloutPlan(strategy=options.strategy, waves=tuple(waves), max_parallelism=width)
