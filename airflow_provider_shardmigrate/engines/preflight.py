"""The ``validate_before_apply`` gate: before a rollout starts, the tables its script touches must be
defined identically on every shard that has not applied it yet.

Shards that already hold the migration (applied or baselined) are left out -- they differ by design
during a partial rollout. Shards are compared with the first pending shard *of the same engine*: a
PostgreSQL ``text`` and a MariaDB ``varchar(100)`` are not drift. A shard that cannot be read refuses
the rollout too (``schema_comparison_failed``, each such shard named with its own error code): a gate
that could not look must not say "identical".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from airflow_provider_shardmigrate.core.drift import differing_tables, tables_in_script
from airflow_provider_shardmigrate.core.errors import (
    DriftDetectedError,
    SchemaComparisonFailedError,
    ShardMigrateError,
)
from airflow_provider_shardmigrate.core.history import HistoryStatus
from airflow_provider_shardmigrate.core.schema import Schema
from airflow_provider_shardmigrate.core.scripts import Migration
from airflow_provider_shardmigrate.core.status import redact
from airflow_provider_shardmigrate.core.topology import DriftDepth, Shard
from airflow_provider_shardmigrate.engines.base import ShardEngine

AT_TARGET = (HistoryStatus.APPLIED, HistoryStatus.BASELINED)
#: Unreadable shards named one by one in the error (the rest are counted).
_LISTED = 20


@dataclass
class PreflightResult:
    tables: tuple[str, ...]
    #: table -> shards whose definition differs from the first pending shard of their engine
    conflicts: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: shard -> the shard it was compared with
    compared_with: dict[str, str] = field(default_factory=dict)
    already_applied: list[str] = field(default_factory=list)
    #: shard -> "[code] message" of the error that kept it from being read
    unreadable: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.conflicts and not self.unreadable

    def error(self) -> ShardMigrateError | None:
        """Why the rollout must not start, or None when it may."""
        if self.unreadable:
            listed = list(self.unreadable.items())[:_LISTED]
            shards = "\n".join(f"shard '{shard_id}': {reason}" for shard_id, reason in listed)
            if len(self.unreadable) > _LISTED:
                shards += f"\n... and {len(self.unreadable) - _LISTED} more"
            return SchemaComparisonFailedError(
                f"the preflight could not read {len(self.unreadable)} shard(s), so it cannot tell whether the "
                "tables this migration touches are the same everywhere; fix the shard(s) (or set "
                "validate_before_apply: false in migration.yaml)\n" + shards
            )
        if self.conflicts:
            return DriftDetectedError(
                "the tables this migration touches already differ between the shards it would migrate; "
                "fix the drift (see the drift DAG) or set validate_before_apply: false in migration.yaml\n"
                + self.describe()
            )
        return None

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


#: (shard, engine variant, schema -- None when the shard already holds the migration --, error)
_Reading = tuple[Shard, str | None, Schema | None, str | None]


def _reader(
    migration: Migration,
    timeout: float,
    engine_factory: Callable[[Shard], ShardEngine],
    introspect: Callable[[Shard, DriftDepth, float], Schema],
) -> Callable[[Shard], _Reading]:
    def read(shard: Shard) -> _Reading:
        try:
            with engine_factory(shard) as engine:
                row = engine.read_history(migration.id)
                variant = engine.variant
            if row is not None and row.status in AT_TARGET:
                return shard, variant, None, None
            return shard, variant, introspect(shard, DriftDepth.FULL, timeout), None
        except ShardMigrateError as exc:
            return shard, None, None, redact(f"[{exc.code}] {exc.message}")
        except Exception as exc:  # a driver error the engine did not map
            return shard, None, None, redact(f"[{SchemaComparisonFailedError.code}] {type(exc).__name__}: {exc}")

    return read


def _compare(result: PreflightResult, readings: list[_Reading]) -> None:
    by_engine: dict[str, dict[str, Schema]] = {}
    for shard, variant, schema, error in readings:  # topology order is kept: the first pending shard leads
        if error is not None:
            result.unreadable[shard.id] = error
        elif schema is None:
            result.already_applied.append(shard.id)
        else:
            by_engine.setdefault(variant or "", {})[shard.id] = schema
    for schemas in by_engine.values():
        reference = next(iter(schemas))
        for table, differing in differing_tables(schemas, result.tables, DriftDepth.FULL).items():
            result.conflicts[table] = result.conflicts.get(table, ()) + differing
            for shard_id in differing:
                result.compared_with[shard_id] = reference


def check_touched_tables(
    shards: Sequence[Shard],
    migration: Migration,
    *,
    timeout: float = 60.0,
    max_workers: int = 8,
    engine_factory: Callable[[Shard], ShardEngine] = _default_engine,
    introspect: Callable[[Shard, DriftDepth, float], Schema] = _default_introspect,
) -> PreflightResult:
    """Read every shard (``max_workers`` at once) and compare the touched tables; see :class:`PreflightResult`."""
    result = PreflightResult(tables=touched_tables(migration))
    if not result.tables:
        return result
    read = _reader(migration, timeout, engine_factory, introspect)
    with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(shards)))) as pool:
        _compare(result, list(pool.map(read, shards)))
    return result
