"""Reading shard schemas: one shard through its Airflow hook, a fleet through a bounded pool, and the
drift report that ties the two to the pure comparison in core/drift.py.

Connections are the shards' engines' own (engines/sqlite.py, postgres.py, mysql.py: the official hooks,
chosen by the Airflow connection's type through engines/registry.py), so whatever Airflow knows about a
connection (env ``AIRFLOW_CONN_*``, the metadata DB, secrets backends, extras) applies, and connecting is
bounded as it is for a migration. Every connection is read-only and carries the time budget into the
server: PostgreSQL ``statement_timeout``/``lock_timeout``, MariaDB
``max_statement_time`` (MySQL ``max_execution_time``) and ``lock_wait_timeout``, SQLite a progress-handler
interrupt -- so a slow catalog never leaves a query of ours running after we gave up on the shard.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from importlib import import_module
from typing import Any

from airflow_provider_shardmigrate.core.deadline import Deadline
from airflow_provider_shardmigrate.core.drift import (
    DriftReport,
    ShardError,
    choose_baseline,
    compare_fleet,
    shards_to_compare,
)
from airflow_provider_shardmigrate.core.errors import (
    ErrorCode,
    MigrationTimeoutError,
    SchemaComparisonFailedError,
    ShardMigrateError,
)
from airflow_provider_shardmigrate.core.schema import Schema
from airflow_provider_shardmigrate.core.status import redact
from airflow_provider_shardmigrate.core.topology import DriftDepth, Shard, Topology
from airflow_provider_shardmigrate.engines.registry import CONNECTION_TYPES

#: Seconds one shard's introspection may take (connect + every catalog query).
DEFAULT_TIMEOUT = 60.0
#: Shards introspected at once.
DEFAULT_MAX_WORKERS = 8
#: Extra wait beyond the timeout before a shard whose server ignored its timeout is abandoned.
_ABANDON_SLACK = 5.0
#: ``application_name`` prefix of our PostgreSQL sessions (pg_stat_activity).
APPLICATION_NAME = "shardmigrate-drift"

_TIMEOUT_MARKERS = (
    "statement timeout",
    "lock timeout",
    "max_statement_time",
    "max_execution_time",
    "interrupted",
    "timeout expired",
    "timed out",
)


# -- connections ---------------------------------------------------------------------------------------


def _secret_of(shard: Shard) -> str | None:
    from airflow.sdk import BaseHook

    with suppress(Exception):
        return BaseHook.get_connection(shard.conn_id).password or None
    return None


def _introspector(shard: Shard) -> tuple[str, Any]:
    """``(connection type, introspection module)`` of ``shard`` (engines/registry.py)."""
    from airflow_provider_shardmigrate.engines import connection_type

    conn_type = connection_type(shard.conn_id, shard.id)
    family = CONNECTION_TYPES.get(conn_type)
    if family is None or family.engine is None or family.introspector is None:
        supported = sorted(t for t, f in CONNECTION_TYPES.items() if f.engine and f.introspector)
        raise SchemaComparisonFailedError(
            f"drift detection does not support connection type '{conn_type}' (connection '{shard.conn_id}'); "
            f"supported: {', '.join(supported)}",
            shard_id=shard.id,
        )
    return conn_type, import_module(family.introspector)


@contextmanager
def introspection_connection(shard: Shard, deadline: Deadline) -> Iterator[tuple[Any, Any]]:
    """``(introspection module, open read-only DB-API connection)`` for ``shard``.

    The connection is the shard's engine's own (engines/<engine>.py), opened read-only within ``deadline``:
    the same hook, driver timeouts and error messages as apply and rollback, and every statement bounded
    by the server at the deadline.
    """
    from airflow_provider_shardmigrate.engines import engine_for

    conn_type, module = _introspector(shard)
    engine = engine_for(shard, conn_type=conn_type)
    engine.session_label = APPLICATION_NAME
    with engine.connected(deadline, read_only=True):
        yield module, engine.conn  # type: ignore[attr-defined]


def introspect_shard(shard: Shard, depth: DriftDepth, *, timeout: float = DEFAULT_TIMEOUT) -> Schema:
    """The schema of one shard at ``depth``, within ``timeout`` seconds (enforced by the server).

    Raises :class:`SchemaComparisonFailedError` naming the shard for anything that goes wrong:
    unknown connection, unreachable server, timeout, unexpected catalog contents. The driver's
    exception is not chained: it may carry connection parameters.
    """
    deadline = Deadline(timeout)
    try:
        with introspection_connection(shard, deadline) as (module, conn):
            schema: Schema = module.introspect(conn, DriftDepth(depth))
            return schema
    except SchemaComparisonFailedError:
        raise
    except MigrationTimeoutError as exc:
        raise SchemaComparisonFailedError(f"introspection timed out: {exc.message}", shard_id=shard.id) from None
    except ShardMigrateError as exc:
        raise SchemaComparisonFailedError(exc.message, shard_id=shard.id) from None
    except Exception as exc:
        text = redact(" ".join(str(exc).split()) or type(exc).__name__, _secret_of(shard))
        if deadline.expired() or any(marker in text.lower() for marker in _TIMEOUT_MARKERS):
            message = f"introspection timed out after {timeout:g}s ({type(exc).__name__}: {text})"
        else:
            message = f"cannot introspect connection '{shard.conn_id}': {type(exc).__name__}: {text}"
        raise SchemaComparisonFailedError(message, shard_id=shard.id) from None


# -- a fleet --------------------------------------------------------------------------------------------

Introspector = Callable[..., Schema]


class _Pool:
    """The bounded worker pool behind :func:`introspect_fleet` (daemon threads, abandonment of stuck shards)."""

    def __init__(self, shards: Sequence[Shard], depth: DriftDepth, timeout: float, introspect: Introspector) -> None:
        self.pending = list(shards)
        self.total = len(shards)
        self.depth = depth
        self.timeout = timeout
        self.introspect = introspect
        self.schemas: dict[str, Schema] = {}
        self.errors: dict[str, ShardError] = {}
        self.started: dict[str, float] = {}
        self.finished: set[str] = set()
        self.condition = threading.Condition()

    def _one(self, shard: Shard) -> Schema | ShardError:
        try:
            schema: Schema = self.introspect(shard, self.depth, timeout=self.timeout)
            return schema
        except ShardMigrateError as exc:
            return ShardError(exc.code.value, exc.message)
        except Exception as exc:  # an introspector bug must not take the fleet down
            return ShardError(ErrorCode.SCHEMA_COMPARISON_FAILED.value, redact(f"{type(exc).__name__}: {exc}"))

    def _work(self) -> None:
        while True:
            with self.condition:
                if not self.pending:
                    return
                shard = self.pending.pop(0)
                self.started[shard.id] = time.monotonic()
            outcome = self._one(shard)
            with self.condition:
                if shard.id not in self.finished:  # not abandoned meanwhile
                    self.finished.add(shard.id)
                    if isinstance(outcome, ShardError):
                        self.errors[shard.id] = outcome
                    else:
                        self.schemas[shard.id] = outcome
                self.condition.notify_all()

    def _spawn(self) -> None:
        threading.Thread(target=self._work, name="shardmigrate-introspect", daemon=True).start()

    def _abandon_stuck(self) -> None:
        now = time.monotonic()
        for shard_id, began in list(self.started.items()):
            if shard_id not in self.finished and now - began > self.timeout + _ABANDON_SLACK:
                self.finished.add(shard_id)
                self.errors[shard_id] = ShardError(
                    ErrorCode.SCHEMA_COMPARISON_FAILED.value,
                    f"introspection timed out after {self.timeout:g}s (the server did not stop the query; abandoned)",
                )
                if self.pending:
                    self._spawn()  # the stuck thread keeps its slot busy: give the queue a new worker

    def run(self, workers: int) -> tuple[dict[str, Schema], dict[str, ShardError]]:
        for _ in range(max(1, min(workers, self.total))):
            self._spawn()
        with self.condition:
            while len(self.finished) < self.total:
                self.condition.wait(0.2)
                self._abandon_stuck()
        return self.schemas, self.errors


def introspect_fleet(
    shards: Sequence[Shard],
    depth: DriftDepth,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    max_workers: int = DEFAULT_MAX_WORKERS,
    introspect: Introspector = introspect_shard,
) -> tuple[dict[str, Schema], dict[str, ShardError]]:
    """Introspect ``shards`` with at most ``max_workers`` at once; ``(schemas, errors)`` by shard id.

    Workers are daemon threads: a shard whose server ignores its timeout is abandoned (reported as
    timed out) after ``timeout`` plus a few seconds and a fresh worker takes its place, so one stuck
    shard neither stalls the fleet nor keeps the process from exiting.
    """
    if not shards:
        return {}, {}
    return _Pool(shards, depth, timeout, introspect).run(max_workers)


def detect_drift(
    topology: Topology,
    *,
    depth: DriftDepth | str | None = None,
    baseline: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    max_workers: int = DEFAULT_MAX_WORKERS,
    introspect: Introspector = introspect_shard,
) -> DriftReport:
    """Compare every active shard of ``topology`` with the baseline at ``depth`` (default: the topology's)."""
    level = DriftDepth(depth or topology.drift.depth)
    base = choose_baseline(topology, baseline)
    targets = shards_to_compare(topology, base)
    began = datetime.now(UTC)
    clock = time.monotonic()
    schemas, errors = introspect_fleet(
        [base, *targets], level, timeout=timeout, max_workers=max_workers, introspect=introspect
    )
    return compare_fleet(
        base.id,
        [shard.id for shard in targets],
        schemas,
        errors,
        level,
        generated_at=began,
        duration_ms=int((time.monotonic() - clock) * 1000),
    )
