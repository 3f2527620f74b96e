"""Reading every shard's history table at once, for the fleet status (core/fleet_status.py).

Each shard is read read-only through its engine (the same hook and connect bound as a migration), within a
per-shard time budget, by the drift reader's bounded pool (engines/introspect.py): at most ``max_workers``
shards at once, and a shard whose server never answers is abandoned after its timeout instead of hanging
the fleet.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

from airflow_provider_shardmigrate.core.deadline import Deadline
from airflow_provider_shardmigrate.core.errors import ErrorCode, ShardMigrateError
from airflow_provider_shardmigrate.core.fleet_status import ShardHistory
from airflow_provider_shardmigrate.core.status import redact
from airflow_provider_shardmigrate.core.topology import DriftDepth, Shard
from airflow_provider_shardmigrate.engines.introspect import DEFAULT_MAX_WORKERS, Introspector, introspect_fleet

#: Seconds one shard may take to answer (connect + read).
DEFAULT_TIMEOUT = 30.0

#: ``(shard, timeout) -> ShardHistory``; never raises.
HistoryReader = Callable[..., ShardHistory]


def read_shard_history(shard: Shard, _depth: Any = None, *, timeout: float = DEFAULT_TIMEOUT) -> ShardHistory:
    """One shard's history rows and engine, or the error (``[code] message``) that kept them from being read."""
    from airflow_provider_shardmigrate.engines import engine_for

    engine_name: str | None = None
    try:
        engine = engine_for(shard)
        engine_name = engine.variant
        with engine.connected(Deadline(timeout), read_only=True):
            return ShardHistory(engine_name, tuple(engine.list_history()))
    except ShardMigrateError as exc:
        return ShardHistory(engine_name, error=f"[{exc.code}] {exc.message}")
    except Exception as exc:  # a driver surprise must not take the fleet down
        return ShardHistory(engine_name, error=redact(f"[{ErrorCode.MIGRATION_FAILED}] {type(exc).__name__}: {exc}"))


def read_fleet_history(
    shards: Sequence[Shard],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    max_workers: int = DEFAULT_MAX_WORKERS,
    reader: HistoryReader = read_shard_history,
) -> dict[str, ShardHistory]:
    """Every shard's :class:`ShardHistory`, by shard id, read ``max_workers`` at a time."""
    reads, errors = introspect_fleet(
        shards,
        DriftDepth.TABLES_ONLY,  # unused by the reader: the pool passes it through
        timeout=timeout,
        max_workers=max_workers,
        introspect=cast(Introspector, reader),
    )
    found: dict[str, ShardHistory] = {shard_id: cast(ShardHistory, read) for shard_id, read in reads.items()}
    for shard_id, error in errors.items():  # abandoned by the pool: the server ignored every bound
        found[shard_id] = ShardHistory(
            None,
            error=f"[{ErrorCode.MIGRATION_TIMEOUT}] the history could not be read within {timeout:g}s "
            f"(the server did not answer; abandoned): {error.message}",
        )
    return found
