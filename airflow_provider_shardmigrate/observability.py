"""Metrics and spans through Airflow's own stats and OpenTelemetry tracer.

Going through Airflow means the deployment's statsd/OTel settings apply, and with metrics or tracing
switched off every call here is a no-op.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from airflow_provider_shardmigrate.core.status import MigrationResult, Outcome, ShardStatus


def _stats() -> Any:
    from airflow.sdk.observability import stats

    return stats


def record_shard(status: ShardStatus, *, migration_id: str, strategy: str) -> None:
    tags = {"migration": migration_id, "strategy": strategy, "shard": status.shard_id, "outcome": status.outcome.value}
    stats = _stats()
    if status.outcome is Outcome.SUCCEEDED:
        stats.incr("shardmigrate.shards_migrated", tags=tags)
    elif status.outcome is Outcome.FAILED:
        stats.incr("shardmigrate.shards_failed", tags={**tags, "error_code": status.error_code or ""})
    elif status.outcome is Outcome.ROLLED_BACK:
        stats.incr("shardmigrate.rollbacks", tags=tags)
    stats.timing("shardmigrate.shard_duration_ms", status.duration_ms, tags=tags)


def record_result(result: MigrationResult) -> None:
    tags = {"migration": result.migration_id, "strategy": result.strategy}
    _stats().timing("shardmigrate.total_duration_ms", result.total_duration_ms, tags=tags)


@contextmanager
def span(name: str, **attributes: Any) -> Iterator[Any]:
    """A span nested under Airflow's task span (the current span while a task runs); attributes get the
    ``migration.`` prefix."""
    from airflow.sdk.observability import trace

    tracer = trace.get_tracer("airflow_provider_shardmigrate")
    with tracer.start_as_current_span(name) as current:
        for key, value in attributes.items():
            if value is not None:
                current.set_attribute(f"migration.{key}", value)
        yield current
