"""The ``validate_before_apply`` gate: before a rollout starts, the tables its script touches must be
defined identically on every shard that has not applied it yet.

Shards that already hold the migration (applied or baselined) are left out -- they differ by design
during a partial rollout. Shards are compared with the first pending shard *of the same engine*: a
PostgreSQL ``text`` and a MariaDB ``varchar(100)`` are not drift. A shard that cannot be read is
listed, not fatal: its own apply task will fail with the precise error.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from airflow_provider_shardmigrate.core.drift import differing_tables, tables_in_script
from airflow_provider_shardmigrate.core.history import HistoryStatus
from airflow_provider_shardmigrate.core.schema import Schema
from airflow_provider_shardmigrate.core.scripts import Migration
from airflow_provider_shardmigrate.core.status import redact
from airflow_provider_shardmigrate.core.topology import DriftDepth, Shard
from airflow_provider_shardmigrate.engines.base import ShardEngine

AT_TARGET = (HistoryStatus.APPLIED, HistoryStatus.BASELINED)


@dataclass
class PreflightResult:
    tables: tuple[str, ...]
    #: table -> shards whose definition differs from the first pending shard of their engine
    conflicts: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: shard -> the shard it was compared with
    compared_with: dict[str, str] = field(default_factory=dict)
    already_applied: list[str] = field(default_factory=list)
    unreadable: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.conflicts

    def describe(self) -> str:
        lines = []
        for table, shards in sorted(self.conflicts.items()):
            by_reference: dict[str, list[str]] = {}
            for shard_id in shards:
                by_reference.setdefault(self.compared_with.get(shard_id, "?"), []).append(shard_id)
            parts = "; ".join(f"{', '.join(ids)} differ from {ref}" for ref, ids in by_reference.items())
            lines.append(f"table '{table}': {parts}")
        return "\n".join(lines)


def touched_tables(migration: Migration) -> tuple[str, ...]:
    names: set[str] = set()
    for name, text in migration.scripts.items():
        if name.startswith("up.") and name.endswith(".sql"):
            names |= tables_in_script(text)
    return tuple(sorted(names))


def _default_engine(shard: Shard) -> ShardEngine:
    from airflow_provider_shardmigrate.engines import engine_for

    return engine_for(shard)


def _default_introspect(shard: Shard, depth: DriftDepth, timeout: float) -> Schema:
    from airflow_provider_shardmigrate.engines.introspect import introspect_shard

    return introspect_shard(shard, depth, timeout=timeout)


def check_touched_tables(
    shards: Sequence[Shard],
    migration: Migration,
    *,
    timeout: float = 60.0,
    max_workers: int = 8,
    engine_factory: Callable[[Shard], ShardEngine] = _default_engine,
    introspect: Callable[[Shard, DriftDepth, float], Schema] = _default_introspect,
) -> PreflightResult:
    result = PreflightResult(tables=touched_tables(migration))
    if not result.tables:
        return result

    def read(shard: Shard) -> tuple[Shard, str | None, Schema | None, str | None]:
        """(shard, engine variant, schema or None when already applied, error)."""
        try:
            with engine_factory(shard) as engine:
                row = engine.read_history(migration.id)
                variant = engine.variant
            if row is not None and row.status in AT_TARGET:
                return shard, variant, None, None
            return shard, variant, introspect(shard, DriftDepth.FULL, timeout), None
        except Exception as exc:  # reported per shard; its apply task gives the precise error
            return shard, None, None, redact(str(exc))

    with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(shards)))) as pool:
        readings = list(pool.map(read, shards))
    _compare(result, _sort_readings(result, readings))
    return result


def _sort_readings(
    result: PreflightResult, readings: Sequence[tuple[Shard, str | None, Schema | None, str | None]]
) -> dict[str, dict[str, Schema]]:
    """Record unreadable and already-applied shards; the others' schemas by engine variant, in topology order
    (the first pending shard of each engine is the reference)."""
    by_engine: dict[str, dict[str, Schema]] = {}
    for shard, variant, schema, error in readings:
        if error is not None:
            result.unreadable[shard.id] = error
        elif schema is None:
            result.already_applied.append(shard.id)
        else:
            by_engine.setdefault(variant or "", {})[shard.id] = schema
    return by_engine


def _compare(result: PreflightResult, by_engine: dict[str, dict[str, Schema]]) -> None:
    for schemas in by_engine.values():
        reference = next(iter(schemas))
        for table, differing in differing_tables(schemas, result.tables, DriftDepth.FULL).items():
            result.conflicts[table] = result.conflicts.get(table, ()) + differing
            for shard_id in differing:
                result.compared_with[shard_id] = reference
