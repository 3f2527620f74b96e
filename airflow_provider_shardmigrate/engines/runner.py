"""The per-shard protocol, written once for every engine, strategy, the CLI and batches.

lock -> history check (the migration's row, and those of the migrations it needs first) -> apply (one
transaction where the engine allows it, statement by statement with a ``running`` row where it does not)
-> history row -> unlock. Every failure becomes a ShardStatus with an error code, so a caller can always
report the shard truthfully -- except what is not an ``Exception``: Airflow's ``AirflowTaskTimeout``
(``execution_timeout``), ``AirflowTaskTerminated``, ``KeyboardInterrupt``, ``SystemExit``. Those propagate
(Airflow fails, retries and logs the task as it should), after the lock is released and the history row
says how far the shard got.

Catch-up and baselining (several migrations on one shard, in order) are loops over the same per-shard
functions: ``catch_up_shard`` and ``baseline_up_to``.

Scripts are split before the lock is taken (and once per process per script, see core/sqltext.py):
splitting a large script must not hold a shard's lock.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import FrameType, TracebackType
from typing import Any

from airflow_provider_shardmigrate.core.catchup import CatchupStatus, CatchupStep, still_to_do
from airflow_provider_shardmigrate.core.deadline import Deadline
from airflow_provider_shardmigrate.core.errors import (
    ErrorCode,
    InvalidScriptError,
    MigrationTimeoutError,
    OutOfOrderError,
    RollbackFailedError,
    ShardMigrateError,
)
from airflow_provider_shardmigrate.core.history import (
    ApplyAction,
    HistoryRecord,
    HistoryStatus,
    decide_apply,
    missing_requirements,
)
from airflow_provider_shardmigrate.core.outcomes import catchup_outcome, catchup_stops
from airflow_provider_shardmigrate.core.scripts import Migration, script_file_name
from airflow_provider_shardmigrate.core.sqltext import preview
from airflow_provider_shardmigrate.core.status import Outcome, ShardStatus, redact
from airflow_provider_shardmigrate.core.topology import Shard
from airflow_provider_shardmigrate.engines.base import ShardEngine, Step
from airflow_provider_shardmigrate.engines.stop import StopWatcher

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
        own = script_file_name(direction, engine.variant)  # MongoDB shards run nothing else
        fix = own if own.endswith(".json") else f"{script_file_name(direction, None)} or {own}"
        raise InvalidScriptError(
            f"migration '{migration.id}' has no {direction} script for {engine.variant} shards (add {fix})",
            shard_id=engine.shard_id,
        )
    return found[1]


def _steps(migration: Migration, direction: str, engine: ShardEngine) -> list[Step]:
    """The statements of the script this engine runs, split before any lock is taken."""
    steps = engine.split(_script(migration, direction, engine))
    if not steps:
        raise InvalidScriptError(
            f"the {engine.variant} {direction} script of migration '{migration.id}' holds no statement",
            shard_id=engine.shard_id,
        )
    return steps


_RELAYED_SIGNALS = tuple(getattr(signal, name) for name in ("SIGALRM", "SIGTERM", "SIGINT") if hasattr(signal, name))


class _Interrupts:
    """Remember what a signal handler raised while a shard is worked on, and re-raise it.

    Airflow's ``execution_timeout`` raises ``AirflowTaskTimeout`` from a SIGALRM handler, which Python
    runs wherever the main thread is -- also inside a database driver's callback (SQLite's progress
    handler), where the driver swallows it and reports an "interrupted" statement instead. The engine's
    error would then be reported as ours; this relay re-raises the real cause once the engine unwound.
    Handlers are wrapped only in the main thread (the only one Python runs them in) and restored on exit.
    """

    def __init__(self) -> None:
        self.pending: BaseException | None = None
        self._saved: dict[int, Any] = {}

    def _wrap(self, handler: Callable[[int, FrameType | None], Any]) -> Callable[[int, FrameType | None], Any]:
        def relay(signum: int, frame: FrameType | None) -> Any:
            try:
                return handler(signum, frame)
            except BaseException as exc:
                self.pending = exc
                raise

        return relay

    def __enter__(self) -> _Interrupts:
        if threading.current_thread() is threading.main_thread():
            for signum in _RELAYED_SIGNALS:
                handler = signal.getsignal(signum)
                if callable(handler):
                    self._saved[signum] = handler
                    signal.signal(signum, self._wrap(handler))
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for signum, handler in self._saved.items():
            signal.signal(signum, handler)
        pending = self.pending
        # Re-raised also when the work went on (a driver swallowed it and did not stop): Airflow asked to stop.
        if pending is not None and exc is not pending and (exc is None or isinstance(exc, Exception)):
            raise pending from exc

    def cause(self, exc: BaseException) -> BaseException:
        """What really stopped the work: a swallowed signal exception, else ``exc``."""
        return self.pending if self.pending is not None else exc


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ShardMigrateError):
        return exc.message
    return str(exc) if isinstance(exc, Exception) else f"{type(exc).__name__}: {exc}"


def _save_failure(engine: ShardEngine, record: HistoryRecord) -> None:
    """Record a failure; a row that cannot be written (connection gone) must not hide the failure itself --
    the row then still says ``running`` at the last completed statement, which is true."""
    try:
        engine.save_history(record)
    except Exception as exc:
        log.error("shard %s: could not record the failure in the history row: %s", engine.shard_id, exc)


def failure_status(shard: Shard, started: float, exc: BaseException, default: ErrorCode) -> ShardStatus:
    if isinstance(exc, ShardMigrateError):
        code, message = exc.code, exc.message
    else:
        code, message = default, f"{type(exc).__name__}: {exc}"
    return ShardStatus(shard.id, Outcome.FAILED, _elapsed_ms(started), code.value, redact(message))


def _elapsed_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


#: The order check names at most this many missing migrations (a count says how many more).
NAMED_MIGRATIONS = 20


def check_order(shard: Shard, migration: Migration, rows: Mapping[str, HistoryRecord], requires: Sequence[str]) -> None:
    """Raise :class:`OutOfOrderError` naming every required migration the shard does not hold."""
    missing = missing_requirements(rows, requires)
    if not missing:
        return
    named = ", ".join(f"{mid} ({state})" for mid, state in missing[:NAMED_MIGRATIONS])
    more = f" and {len(missing) - NAMED_MIGRATIONS} more" if len(missing) > NAMED_MIGRATIONS else ""
    raise OutOfOrderError(
        f"migration '{migration.id}' is out of order on this shard: it needs {named}{more} applied (or baselined) "
        "first; nothing was run -- apply those first (the shardmigrate_catchup DAG applies every pending migration "
        "in order)",
        shard_id=shard.id,
    )


def apply_to_shard(
    shard: Shard,
    migration: Migration,
    *,
    dry_run: bool = False,
    run: RunInfo = RunInfo(),
    requires: Sequence[str] = (),
    engine_factory: EngineFactory = _default_factory,
) -> ShardStatus:
    """Apply ``migration`` to ``shard`` and say what happened; never raises for a shard-level failure.

    :param requires: Migrations the shard must hold (``applied``/``baselined``) before this one runs; checked
        under the shard's lock, in the same query as the migration's own row. A shard lacking one is ``failed``
        with ``shardmigrate.out_of_order`` and nothing runs (a dry run reports it the same way).
    """
    started = time.monotonic()
    try:
        with _Interrupts() as interrupts:
            engine = engine_factory(shard)
            with StopWatcher(engine):
                return _apply_to_shard(shard, migration, dry_run, run, engine, started, interrupts, tuple(requires))
    except Exception as exc:
        # Not logged above debug: the caller reports the status (a task logs it once, the CLI prints it).
        log.debug("shard %s: %s", shard.id, exc, exc_info=True)
        return failure_status(shard, started, exc, ErrorCode.MIGRATION_FAILED)


def _apply_to_shard(
    shard: Shard,
    migration: Migration,
    dry_run: bool,
    run: RunInfo,
    engine: ShardEngine,
    started: float,
    interrupts: _Interrupts,
    requires: tuple[str, ...],
) -> ShardStatus:
    steps = _steps(migration, "up", engine)
    deadline = Deadline(migration.options.per_shard_timeout)
    with engine.connected(deadline), engine.migration_lock(deadline):
        if not dry_run:
            engine.ensure_history_table()
        rows = engine.read_history_rows([migration.id, *requires])
        decision = decide_apply(rows.get(migration.id), migration.checksum, statements=len(steps))
        if decision.action is ApplyAction.SKIP:
            return ShardStatus(shard.id, Outcome.ALREADY_APPLIED, _elapsed_ms(started), None, decision.reason)
        if decision.action is ApplyAction.REFUSE:
            raise InvalidScriptError(decision.reason, shard_id=shard.id)
        check_order(shard, migration, rows, requires)
        if dry_run:
            todo = len(steps) - decision.start_at
            note = f"would run {todo} statement(s)" + (f"; {decision.reason}" if decision.start_at else "")
            return ShardStatus(shard.id, Outcome.WOULD_APPLY, _elapsed_ms(started), None, note)
        _apply(engine, migration, steps, decision.start_at, deadline, run, started, interrupts)
        return ShardStatus(shard.id, Outcome.SUCCEEDED, _elapsed_ms(started))


def _apply(
    engine: ShardEngine,
    migration: Migration,
    steps: list[Step],
    start_at: int,
    deadline: Deadline,
    run: RunInfo,
    started: float,
    interrupts: _Interrupts,
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
        except BaseException as exc:  # recorded, then re-raised whatever it is
            message = _describe(interrupts.cause(exc))
            _save_failure(
                engine,
                record.evolve(
                    status=HistoryStatus.FAILED,
                    duration_ms=_elapsed_ms(started),
                    error=redact(
                        f"statement {index + 1} of {len(steps)} failed: {message} -- {preview(str(steps[index]))}"
                    ),
                ),
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
        with _Interrupts() as interrupts:
            engine = engine_factory(shard)
            with StopWatcher(engine):
                return _rollback_shard(shard, migration, dry_run, run, engine, started, interrupts)
    except Exception as exc:
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


def _rollback_shard(
    shard: Shard,
    migration: Migration,
    dry_run: bool,
    run: RunInfo,
    engine: ShardEngine,
    started: float,
    interrupts: _Interrupts,
) -> ShardStatus:
    steps = _steps(migration, "down", engine)
    deadline = Deadline(migration.options.per_shard_timeout)
    with engine.connected(deadline), engine.migration_lock(deadline):
        row = engine.read_history(migration.id)
        if row is None or (row.status in (HistoryStatus.RUNNING, HistoryStatus.FAILED) and row.statements_applied == 0):
            note = "nothing to roll back: not applied here"
            return ShardStatus(shard.id, Outcome.NOT_APPLIED, _elapsed_ms(started), None, note)
        if row.status is HistoryStatus.ROLLED_BACK:
            when = row.rolled_back_at.isoformat() if row.rolled_back_at else "earlier"
            note = f"nothing to roll back: already rolled back ({when})"
            return ShardStatus(shard.id, Outcome.NOT_APPLIED, _elapsed_ms(started), None, note)
        if row.status in (HistoryStatus.RUNNING, HistoryStatus.FAILED):
            raise RollbackFailedError(
                f"migration is partially applied ({row.statements_applied} of {row.statements_total} "
                "statements); the down script assumes a complete apply -- resume the migration first, or "
                "repair the shard by hand",
                shard_id=shard.id,
            )
        if dry_run:
            note = f"would roll back ({len(steps)} statement(s))"
            return ShardStatus(shard.id, Outcome.WOULD_ROLL_BACK, _elapsed_ms(started), None, note)
        transactional = migration.options.transactional
        _rollback(engine, row, steps, deadline, run, interrupts, transactional=transactional)
        return ShardStatus(shard.id, Outcome.ROLLED_BACK, _elapsed_ms(started))


def _rollback(
    engine: ShardEngine,
    row: HistoryRecord,
    steps: list[Step],
    deadline: Deadline,
    run: RunInfo,
    interrupts: _Interrupts,
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
        except BaseException as exc:  # recorded, then re-raised whatever it is
            message = _describe(interrupts.cause(exc))
            # The row keeps status 'applied' (the schema may still hold most of the migration) and says
            # where the down script stopped.
            _save_failure(
                engine,
                row.evolve(error=redact(f"rollback stopped at statement {index + 1} of {len(steps)}: {message}")),
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
        with engine_factory(shard).connected(deadline) as engine, engine.migration_lock(deadline):
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
    except Exception as exc:  # what is not an Exception (a timeout, a kill) propagates
        return failure_status(shard, started, exc, ErrorCode.MIGRATION_FAILED)


# -- several migrations on one shard: catch-up and baselining ------------------------------------------------

#: Seconds the first history read of a catch-up may take (connecting included).
READ_TIMEOUT = 60.0

#: ``(migration, required ids) -> status``: one migration of a catch-up, through the per-shard protocol.
StepAction = Callable[[Migration, tuple[str, ...]], ShardStatus]


def catch_up_shard(
    shard: Shard,
    steps: Sequence[CatchupStep],
    *,
    dry_run: bool = False,
    run: RunInfo = RunInfo(),
    read_timeout: float = READ_TIMEOUT,
    engine_factory: EngineFactory = _default_factory,
) -> CatchupStatus:
    """Apply every migration of ``steps`` the shard does not hold, in order, each through :func:`apply_to_shard`
    (its lock, its order check, its history row); stop at the first failure, leaving the rest not applied.

    A dry run asks each pending migration what it would do, counting the ones before it as done (they would
    be applied first); nothing is written. Never raises for a shard-level failure.
    """

    def apply(migration: Migration, requires: tuple[str, ...]) -> ShardStatus:
        return apply_to_shard(
            shard, migration, dry_run=dry_run, run=run, requires=requires, engine_factory=engine_factory
        )

    return _advance(shard, steps, apply, dry_run=dry_run, read_timeout=read_timeout, engine_factory=engine_factory)


def baseline_up_to(
    shard: Shard,
    steps: Sequence[CatchupStep],
    *,
    run: RunInfo = RunInfo(),
    read_timeout: float = READ_TIMEOUT,
    engine_factory: EngineFactory = _default_factory,
) -> CatchupStatus:
    """Record every migration of ``steps`` the shard does not hold as ``baselined`` (:func:`baseline_shard`),
    in order, without running any; stop at the first that cannot be (a ``failed`` or ``running`` row)."""

    def baseline(migration: Migration, _requires: tuple[str, ...]) -> ShardStatus:
        return baseline_shard(shard, migration, run=run, engine_factory=engine_factory)

    return _advance(shard, steps, baseline, dry_run=False, read_timeout=read_timeout, engine_factory=engine_factory)


def _read_rows(
    shard: Shard, ids: Sequence[str], timeout: float, engine_factory: EngineFactory
) -> dict[str, HistoryRecord]:
    with engine_factory(shard).connected(Deadline(timeout), read_only=True) as engine:
        return engine.read_history_rows(ids)


@dataclass
class _Advance:
    """What a catch-up did to one shard so far."""

    shard: Shard
    started: float
    applied: list[str]
    would_apply: list[str]

    def note(self, step_id: str, outcome: Outcome) -> None:
        """Record a migration that did not fail: applied by this run, a dry run's would-apply, or already there."""
        {Outcome.SUCCEEDED: self.applied, Outcome.WOULD_APPLY: self.would_apply}.get(outcome, []).append(step_id)

    def stopped(self, step_id: str, status: ShardStatus, rest: Sequence[CatchupStep]) -> CatchupStatus:
        return CatchupStatus(
            self.shard.id,
            Outcome.FAILED,
            _elapsed_ms(self.started),
            status.error_code or ErrorCode.MIGRATION_FAILED.value,
            f"{step_id}: {status.error_message or 'failed'}",
            applied=tuple(self.applied),
            would_apply=tuple(self.would_apply),
            failed_migration=step_id,
            pending=tuple(step.id for step in rest),
        )

    def finished(self, total: int) -> CatchupStatus:
        outcome = catchup_outcome(applied=len(self.applied), would_apply=len(self.would_apply))
        if self.applied:
            note = f"{len(self.applied)} migration(s) recorded: {', '.join(self.applied)}"
        elif self.would_apply:
            note = f"would apply {', '.join(self.would_apply)}"
        else:
            note = f"up to date: holds all {total} migration(s)"
        return CatchupStatus(
            self.shard.id,
            outcome,
            _elapsed_ms(self.started),
            None,
            note,
            applied=tuple(self.applied),
            would_apply=tuple(self.would_apply),
        )


def _step_status(shard: Shard, step: CatchupStep, action: StepAction, skip: Sequence[str]) -> ShardStatus:
    """One step through ``action``; ``skip``: required ids a dry run counts as done (it would apply them first)."""
    if step.migration is None:
        message = step.error or "the migration folder cannot be loaded"
        return ShardStatus(shard.id, Outcome.FAILED, 0, ErrorCode.INVALID_SCRIPT.value, message)
    return action(step.migration, tuple(mid for mid in step.requires if mid not in skip))


def _advance(
    shard: Shard,
    steps: Sequence[CatchupStep],
    action: StepAction,
    *,
    dry_run: bool,
    read_timeout: float,
    engine_factory: EngineFactory,
) -> CatchupStatus:
    """The steps the shard lacks (one history read), one after another, until the first failure."""
    progress = _Advance(shard, time.monotonic(), [], [])
    try:
        rows = _read_rows(shard, [step.id for step in steps], read_timeout, engine_factory)
    except Exception as exc:  # unreachable, no connection...: the shard fails, the others go on
        failed = failure_status(shard, progress.started, exc, ErrorCode.MIGRATION_FAILED)
        return CatchupStatus(
            shard.id,
            Outcome.FAILED,
            failed.duration_ms,
            failed.error_code,
            f"reading the history: {failed.error_message}",
            pending=tuple(step.id for step in steps),
        )
    todo = still_to_do(steps, rows)
    for index, step in enumerate(todo):
        status = _step_status(shard, step, action, progress.would_apply if dry_run else ())
        if catchup_stops(status):
            return progress.stopped(step.id, status, todo[index + 1 :])
        progress.note(step.id, status.outcome)
    return progress.finished(len(steps))
