"""Reading shard schemas: one shard through its Airflow hook, a fleet through a bounded pool, and the
drift report that ties the two to the pure comparison in core/drift.py.

Connections are opened through the official hooks (SqliteHook, PostgresHook, MySqlHook), chosen by the
Airflow connection's type, so whatever Airflow knows about a connection (env ``AIRFLOW_CONN_*``, the
metadata DB, secrets backends, extras) applies. Every connection is read-only and carries the time
budget into the server: PostgreSQL ``statement_timeout``/``lock_timeout``, MariaDB
``max_statement_time`` (MySQL ``max_execution_time``) and ``lock_wait_timeout``, SQLite a progress-handler
interrupt -- so a slow catalog never leaves a query of ours running after we gave up on the shard.
"""

from __future__ import annotations

import functools
import json
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from importlib import import_module
from pathlib import Path
from typing import Any
from urllib.parse import quote

from airflow_provider_shardmigrate.core.deadline import Deadline
from airflow_provider_shardmigrate.core.drift import (
    DriftReport,
    ShardError,
    choose_baseline,
    compare_fleet,
    shards_to_compare,
)
from airflow_provider_shardmigrate.core.errors import ErrorCode, SchemaComparisonFailedError, ShardMigrateError
from airflow_provider_shardmigrate.core.schema import Schema
from airflow_provider_shardmigrate.core.status import redact
from airflow_provider_shardmigrate.core.topology import DriftDepth, Shard, Topology

#: Seconds one shard's introspection may take (connect + every catalog query).
DEFAULT_TIMEOUT = 60.0
#: Shards introspected at once.
DEFAULT_MAX_WORKERS = 8
#: Extra wait beyond the timeout before a shard whose server ignored its timeout is abandoned.
_ABANDON_SLACK = 5.0
#: ``application_name`` prefix of our PostgreSQL sessions (pg_stat_activity).
APPLICATION_NAME = "shardmigrate-drift"

#: Airflow connection type -> introspection module.
INTROSPECTORS = {
    "sqlite": "airflow_provider_shardmigrate.engines.introspect_sqlite",
    "postgres": "airflow_provider_shardmigrate.engines.introspect_postgres",
    "postgresql": "airflow_provider_shardmigrate.engines.introspect_postgres",
    "mysql": "airflow_provider_shardmigrate.engines.introspect_mysql",
}

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


@functools.cache
def _mysql_hook_class() -> type[Any]:
    from airflow.providers.mysql.hooks.mysql import MySqlHook

    class IntrospectionMySqlHook(MySqlHook):  # type: ignore[misc]
        """MySqlHook that bounds the connect time (the hook has no setting for it; the drivers wait for the OS)."""

        connect_timeout = 10

        def _get_conn_config_mysql_client(self, conn: Any) -> dict[str, Any]:
            config: dict[str, Any] = super()._get_conn_config_mysql_client(conn)
            config.setdefault("connect_timeout", self.connect_timeout)
            return config

        def _get_conn_config_mysql_connector_python(self, conn: Any) -> dict[str, Any]:
            config: dict[str, Any] = super()._get_conn_config_mysql_connector_python(conn)
            config.setdefault("connection_timeout", self.connect_timeout)
            return config

    return IntrospectionMySqlHook


def _connect_seconds(deadline: Deadline) -> int:
    return max(2, min(30, math.ceil(deadline.remaining())))


def _open_sqlite(shard: Shard, deadline: Deadline) -> Any:
    from airflow.providers.sqlite.hooks.sqlite import SqliteHook

    connection = SqliteHook(sqlite_conn_id=shard.conn_id).get_connection(shard.conn_id)  # type: ignore[no-untyped-call]
    raw = connection.host or connection.schema or ""
    if not raw:
        raise SchemaComparisonFailedError(
            f"connection '{shard.conn_id}' has no database file path (set the connection's host to the file)",
            shard_id=shard.id,
        )
    path = Path(raw)
    if not path.is_file():  # sqlite3 would create an empty file: a typo must not read as "every table missing"
        raise SchemaComparisonFailedError(
            f"SQLite database file '{path}' (connection '{shard.conn_id}') does not exist", shard_id=shard.id
        )
    conn = sqlite3.connect(
        f"file:{quote(str(path))}?mode=ro", uri=True, timeout=deadline.remaining(), check_same_thread=False
    )
    conn.set_progress_handler(lambda: 1 if deadline.expired() else 0, 10_000)
    return conn


def _open_postgres(shard: Shard, deadline: Deadline) -> Any:
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    hook = PostgresHook(postgres_conn_id=shard.conn_id)
    connection = hook.connection
    # The hook hands extras to libpq as connection keywords: bound the connect (libpq waits forever by
    # default) and label the session, unless the connection already says otherwise.
    extras = connection.extra_dejson
    additions: dict[str, Any] = {}
    if "connect_timeout" not in extras:
        additions["connect_timeout"] = _connect_seconds(deadline)
    if "application_name" not in extras:
        additions["application_name"] = f"{APPLICATION_NAME}:{shard.id}"[:63]
    if additions:
        connection.extra = json.dumps({**extras, **additions})
    conn = hook.get_conn()
    milliseconds = deadline.remaining_ms()
    cursor = conn.cursor()
    try:  # one round trip; the transaction (never committed) carries the settings to every catalog query
        cursor.execute(
            f"SET TRANSACTION READ ONLY; SET statement_timeout = {milliseconds}; SET lock_timeout = {milliseconds}"
        )
    finally:
        cursor.close()
    return conn


def _open_mysql(shard: Shard, deadline: Deadline) -> Any:
    hook = _mysql_hook_class()(mysql_conn_id=shard.conn_id)
    hook.connect_timeout = _connect_seconds(deadline)
    conn = hook.get_conn()
    info = conn.get_server_info() if hasattr(conn, "get_server_info") else ""
    info = info.decode() if isinstance(info, bytes) else str(info)
    cursor = conn.cursor()
    try:
        seconds = max(0.001, deadline.remaining())
        statement_limit = (
            f"max_statement_time = {seconds:.3f}"
            if "mariadb" in info.lower()
            else f"max_execution_time = {int(seconds * 1000)}"  # MySQL: SELECTs only, which is all we run
        )
        cursor.execute(f"SET SESSION {statement_limit}, SESSION lock_wait_timeout = {max(1, math.ceil(seconds))}")
        cursor.execute("SET SESSION TRANSACTION READ ONLY")
    finally:
        cursor.close()
    return conn


_OPENERS: dict[str, Callable[[Shard, Deadline], Any]] = {
    "sqlite": _open_sqlite,
    "postgres": _open_postgres,
    "postgresql": _open_postgres,
    "mysql": _open_mysql,
}


def _close(conn: Any) -> None:
    # the connection may already be broken; closing is all that matters
    with suppress(Exception):
        conn.rollback()  # read-only work: nothing to keep
    with suppress(Exception):
        conn.close()


def _secret_of(shard: Shard) -> str | None:
    from airflow.sdk import BaseHook

    with suppress(Exception):
        return BaseHook.get_connection(shard.conn_id).password or None
    return None


@contextmanager
def introspection_connection(shard: Shard, deadline: Deadline) -> Iterator[tuple[Any, Any]]:
    """``(introspection module, open read-only DB-API connection)`` for ``shard``."""
    from airflow_provider_shardmigrate.engines import connection_type

    conn_type = connection_type(shard.conn_id, shard.id)
    if conn_type not in INTROSPECTORS:
        raise SchemaComparisonFailedError(
            f"drift detection does not support connection type '{conn_type}' (connection '{shard.conn_id}'); "
            f"supported: {', '.join(sorted(set(INTROSPECTORS)))}",
            shard_id=shard.id,
        )
    module = import_module(INTROSPECTORS[conn_type])
    conn = _OPENERS[conn_type](shard, deadline)
    try:
        yield module, conn
    finally:
        _close(conn)


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
