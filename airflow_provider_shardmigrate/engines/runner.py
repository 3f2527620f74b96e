"""The per-shard protocol (DESIGN 2.5), written once for every engine, strategy, the CLI and batches.

lock -> history check -> apply (one transaction where the engine allows it, statement by statement with
a ``running`` row where it does not) -> history row -> unlock. Every failure becomes a ShardStatus
with an error code; nothing raises out of here, so a caller can always report the shard truthfully.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from airflow_provider_shardmigrate.core.deadline import Deadline
from airflow_provider_shardmigrate.core.errors import (
    ErrorCode,
    InvalidScriptError,
    MigrationTimeoutError,
    RollbackFailedError,
    ShardMigrateError,
)
from airflow_provider_shardmigrate.core.history import (
    ApplyAction,
    HistoryRecord,
    HistoryStatus,
    decide_apply,
)
from airflow_provider_shardmigrate.core.scripts import Migration
from airflow_provider_shardmigrate.core.sqltext import preview
from airflow_provider_shardmigrate.core.status import Outcome, ShardStatus, redact
from airflow_provider_shardmigrate.core.topology import Shard
from airflow_provider_shardmigrate.engines.base import ShardEngine, Step

log = logging.getLogger(__name__)

EngineFactory = Callable[[Shard], ShardEngine]


@dataclass(frozen=True)
class RunInfo:
    """Who is running: recorded in history rows so a shard's state points back at the Airflow run."""

    dag_id: str | None = None
    run_id: str | None = None


def _now() -> datetime:
    return datetime.now(UTC)


def _default_factory(shard: Shard) -> ShardEngine:
    from airflow_provider_shardmigrate.engines import engine_for

    return engine_for(shard)


def _script(migration: Migration, direction: str, engine: ShardEngine) -> str:
    found = migration.script_for(direction, engine.variant)
    if found is None:
        raise InvalidScriptError(
            f"migration '{migration.id}' has no {direction} script for {engine.variant} shards "
            f"(add {direction}.sql or {direction}.{engine.variant}.{'json' if engine.variant == 'mongo' else 'sql'})",
            shard_id=engine.shard_id,
        )
    return found[1]


def failure_status(shard: Shard, started: float, exc: BaseException, default: ErrorCode) -> ShardStatus:
    if isinstance(exc, ShardMigrateError):
        code, message = exc.code, exc.message
    else:
        code, message = default, f"{type(exc).__name__}: {exc}"
    return ShardStatus(shard.id, Outcome.FAILED, _elapsed_ms(started), code.value, redact(message))


def _elapsed_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def apply_to_shard(
    shard: Shard,
    migration: Migration,
    *,
    dry_run: bool = False,
    run: RunInfo = RunInfo(),
    engine_factory: EngineFactory = _default_factory,
) -> ShardStatus:
    """Apply ``migration`` to ``shard`` and say what happened; never raises for a shard-level failure."""
    started = time.monotonic()
    try:
        deadline = Deadline(migration.options.per_shard_timeout)
        with engine_factory(shard) as engine:
            script = _script(migration, "up", engine)
            with engine.migration_lock(deadline):
                if not dry_run:
                    engine.ensure_history_table()
                row = engine.read_history(migration.id)
                decision = decide_apply(row, migration.checksum)
                if decision.action is ApplyAction.SKIP:
                    return ShardStatus(shard.id, Outcome.ALREADY_APPLIED, _elapsed_ms(started), None, decision.reason)
                if decision.action is ApplyAction.REFUSE:
                    raise InvalidScriptError(decision.reason, shard_id=shard.id)
                steps = engine.split(script)
                if not steps:
                    raise InvalidScriptError(f"the {engine.variant} up script holds no statement", shard_id=shard.id)
                if dry_run:
                    todo = len(steps) - decision.start_at
                    note = f"would run {todo} statement(s)" + (f"; {decision.reason}" if decision.start_at else "")
                    return ShardStatus(shard.id, Outcome.WOULD_APPLY, _elapsed_ms(started), None, note)
                _apply(engine, migration, steps, decision.start_at, deadline, run, started)
                return ShardStatus(shard.id, Outcome.SUCCEEDED, _elapsed_ms(started))
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        # Not logged above debug: the caller reports the status (a task logs it once, the CLI prints it).
        log.debug("shard %s: %s", shard.id, exc, exc_info=True)
        return failure_status(shard, started, exc, ErrorCode.MIGRATION_FAILED)


def _apply(
    engine: ShardEngine,
    migration: Migration,
    steps: list[Step],
    start_at: int,
    deadline: Deadline,
    run: RunInfo,
    started: float,
) -> None:
    record = HistoryRecord(
        migration_id=migration.id,
        checksum=migration.checksum,
        status=HistoryStatus.RUNNING,
        description=migration.description,
        statements_applied=start_at,
        statements_total=len(steps),
        dag_id=run.dag_id,
        run_id=run.run_id,
    )
    if engine.transactional_ddl and migration.options.transactional and start_at == 0:
        done = record.evolve(
            status=HistoryStatus.APPLIED,
            statements_applied=len(steps),
            applied_at=_now(),
            duration_ms=_elapsed_ms(started),
        )
        engine.run_in_transaction(steps, done, deadline)
        return
    # Non-transactional: a running row first, progress after every statement, so a crash or a failure
    # leaves a row that says exactly how far the shard got, and a re-run resumes there.
    engine.save_history(record)
    for index in range(start_at, len(steps)):
        try:
            if deadline.expired():
                raise MigrationTimeoutError(
                    f"per_shard_timeout of {deadline.seconds:g}s exceeded before statement {index + 1}",
                    shard_id=engine.shard_id,
                )
            engine.run_step(steps[index], deadline)
        except BaseException as exc:
            message = exc.message if isinstance(exc, ShardMigrateError) else str(exc)
            engine.save_history(
                record.evolve(
                    status=HistoryStatus.FAILED,
                    duration_ms=_elapsed_ms(started),
                    error=redact(
                        f"statement {index + 1} of {len(steps)} failed: {message} -- {preview(str(steps[index]))}"
                    ),
                )
            )
            raise
        record = record.evolve(statements_applied=index + 1)
        engine.save_history(record)
    engine.save_history(
        record.evolve(status=HistoryStatus.APPLIED, applied_at=_now(), duration_ms=_elapsed_ms(started), error=None)
    )


def rollback_shard(
    shard: Shard,
    migration: Migration,
    *,
    dry_run: bool = False,
    run: RunInfo = RunInfo(),
    engine_factory: EngineFactory = _default_factory,
) -> ShardStatus:
    """Run ``down`` on a shard whose history says the migration is there; mark the row ``rolled_back``."""
    started = time.monotonic()
    try:
        deadline = Deadline(migration.options.per_shard_timeout)
        with engine_factory(shard) as engine:
            script = _script(migration, "down", engine)
            with engine.migration_lock(deadline):
                row = engine.read_history(migration.id)
                if row is None or (
                    row.status in (HistoryStatus.RUNNING, HistoryStatus.FAILED) and row.statements_applied == 0
                ):
                    return ShardStatus(
                        shard.id,
                        Outcome.NOT_APPLIED,
                        _elapsed_ms(started),
                        None,
                        "nothing to roll back: not applied here",
                    )
                if row.status is HistoryStatus.ROLLED_BACK:
                    when = row.rolled_back_at.isoformat() if row.rolled_back_at else "earlier"
                    return ShardStatus(
                        shard.id,
                        Outcome.NOT_APPLIED,
                        _elapsed_ms(started),
                        None,
                        f"nothing to roll back: already rolled back ({when})",
                    )
                if row.status in (HistoryStatus.RUNNING, HistoryStatus.FAILED):
                    raise RollbackFailedError(
                        f"migration is partially applied ({row.statements_applied} of {row.statements_total} "
                        "statements); the down script assumes a complete apply -- resume the migration first, or "
                        "repair the shard by hand",
                        shard_id=shard.id,
                    )
                steps = engine.split(script)
                if dry_run:
                    return ShardStatus(
                        shard.id,
                        Outcome.WOULD_ROLL_BACK,
                        _elapsed_ms(started),
                        None,
                        f"would roll back ({len(steps)} statement(s))",
                    )
                _rollback(engine, row, steps, deadline, run, started, transactional=migration.options.transactional)
                return ShardStatus(shard.id, Outcome.ROLLED_BACK, _elapsed_ms(started))
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        log.debug("shard %s: rollback failed: %s", shard.id, exc, exc_info=True)
        status = failure_status(shard, started, exc, ErrorCode.ROLLBACK_FAILED)
        if status.error_code in (ErrorCode.MIGRATION_FAILED.value,):
            status = ShardStatus(
                status.shard_id,
                status.outcome,
                status.duration_ms,
                ErrorCode.ROLLBACK_FAILED.value,
                status.error_message,
            )
        return status


def _rollback(
    engine: ShardEngine,
    row: HistoryRecord,
    steps: list[Step],
    deadline: Deadline,
    run: RunInfo,
    started: float,
    *,
    transactional: bool = True,
) -> None:
    done = row.evolve(
        status=HistoryStatus.ROLLED_BACK,
        rolled_back_at=_now(),
        dag_id=run.dag_id or row.dag_id,
        run_id=run.run_id or row.run_id,
        error=None,
    )
    # A ``transactional: false`` migration's down script (``DROP INDEX CONCURRENTLY``) cannot run in a
    # transaction block either: it goes statement by statement like the up script did.
    if engine.transactional_ddl and transactional:
        engine.run_in_transaction(steps, done, deadline)
        return
    for index, step in enumerate(steps):
        try:
            engine.run_step(step, deadline)
        except BaseException as exc:
            message = exc.message if isinstance(exc, ShardMigrateError) else str(exc)
            # The row keeps status 'applied' (the schema may still hold most of the migration) and says
            # where the down script stopped.
            engine.save_history(
                row.evolve(error=redact(f"rollback stopped at statement {index + 1} of {len(steps)}: {message}"))
            )
            raise
    engine.save_history(done)


def baseline_shard(
    shard: Shard,
    migration: Migration,
    *,
    run: RunInfo = RunInfo(),
    engine_factory: EngineFactory = _default_factory,
) -> ShardStatus:
    """Record ``migration`` as ``baselined`` without running it (a shard cloned from a migrated snapshot)."""
    started = time.monotonic()
    try:
        deadline = Deadline(migration.options.per_shard_timeout)
        with engine_factory(shard) as engine, engine.migration_lock(deadline):
            engine.ensure_history_table()
            row = engine.read_history(migration.id)
            decision = decide_apply(row, migration.checksum)
            if decision.action is ApplyAction.SKIP:
                return ShardStatus(shard.id, Outcome.ALREADY_APPLIED, _elapsed_ms(started), None, decision.reason)
            if decision.action is ApplyAction.REFUSE or (
                row is not None and row.status is not HistoryStatus.ROLLED_BACK
            ):
                raise InvalidScriptError(
                    decision.reason
                    or f"history row is '{row.status.value if row else '?'}'; refusing to baseline over it",
                    shard_id=shard.id,
                )
            engine.save_history(
                HistoryRecord(
                    migration_id=migration.id,
                    checksum=migration.checksum,
                    status=HistoryStatus.BASELINED,
                    description=migration.description,
                    applied_at=_now(),
                    duration_ms=0,
                    dag_id=run.dag_id,
                    run_id=run.run_id,
                )
            )
            return ShardStatus(shard.id, Outcome.SUCCEEDED, _elapsed_ms(started), None, "baselined")
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        return failure_status(shard, started, exc, ErrorCode.MIGRATION_FAILED)
