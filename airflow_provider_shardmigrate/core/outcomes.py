"""What outcomes mean, decided once: the report, the gates, auto-rollback, progress and the plugin ask here.

A shard's outcome travels one way: the per-shard function (engines/runner.py) says what happened to the
shard; the report task assembles every shard's status into the MigrationResult with
:func:`assemble_result`; the final gate, the canary gate, auto-rollback, progress and the UI only read
the answers this module gives. Nobody else compares outcome values.

Pure: statuses in, decisions out; no Airflow, no database.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from airflow_provider_shardmigrate.core.approval import ApprovalDecision
from airflow_provider_shardmigrate.core.errors import ErrorCode
from airflow_provider_shardmigrate.core.plans import RolloutPlan, WaveKind
from airflow_provider_shardmigrate.core.status import MigrationProgress, MigrationResult, Outcome, Refusal, ShardStatus

#: Outcomes that leave a shard at the migration (a dry run's would_apply: ready to get there).
AT_MIGRATION = frozenset({Outcome.SUCCEEDED, Outcome.ALREADY_APPLIED, Outcome.WOULD_APPLY})
#: Outcomes of a rollback that are not a failure: undone, nothing to undo, not chosen, or a dry run's answer.
ROLLBACK_OK = frozenset({Outcome.ROLLED_BACK, Outcome.NOT_APPLIED, Outcome.NOT_SELECTED, Outcome.WOULD_ROLL_BACK})
#: Outcomes of a catch-up shard that are not a failure: brought up to date, already there, a dry run's answer,
#: or left out of the ``shards`` selection.
CATCHUP_OK = AT_MIGRATION | {Outcome.NOT_SELECTED}
#: When one shard is reported twice (a lane's retry), the more telling report wins: what the shard is now.
_PRECEDENCE = (
    Outcome.SUCCEEDED,
    Outcome.ROLLED_BACK,
    Outcome.FAILED,
    Outcome.ALREADY_APPLIED,
    Outcome.WOULD_APPLY,
    Outcome.WOULD_ROLL_BACK,
    Outcome.NOT_APPLIED,
    Outcome.PENDING,
    Outcome.NOT_SELECTED,
)
#: Gate and log messages name at most this many shards of one kind; the report has them all.
NAMED_SHARDS = 50
LOST_TASK_MESSAGE = (
    "the task failed without reporting a result (worker lost or task killed); check its log and the shard's "
    "history row before retrying"
)


class RunKind(StrEnum):
    ROLLOUT = "rollout"
    ROLLBACK = "rollback"
    CATCHUP = "catchup"  # every pending migration, in order, on each selected shard (also: baselining)


def reached_migration(outcome: Outcome) -> bool:
    return outcome in AT_MIGRATION


def rollback_ok(outcome: Outcome) -> bool:
    return outcome in ROLLBACK_OK


def succeeded(kind: RunKind, outcome: Outcome) -> bool:
    """Whether ``outcome`` is a success for a run of ``kind``."""
    if kind is RunKind.CATCHUP:
        return outcome in CATCHUP_OK
    return reached_migration(outcome) if kind is RunKind.ROLLOUT else rollback_ok(outcome)


def more_telling(a: ShardStatus, b: ShardStatus) -> ShardStatus:
    """Of two reports of one shard, the one that says what the shard is now (see ``_PRECEDENCE``)."""
    return a if _PRECEDENCE.index(a.outcome) <= _PRECEDENCE.index(b.outcome) else b


def merge_rollback(applied: ShardStatus | None, rolled: ShardStatus) -> ShardStatus:
    """A shard's result after auto-rollback ran on it.

    A failed rollback leaves the shard holding the migration: its apply outcome stays, with the rollback's
    error code and message (the rollback did not succeed, the shard is not reverted). Otherwise the
    rollback's outcome replaces the apply outcome and the durations add up.
    """
    if applied is None:
        return rolled
    if rolled.outcome is Outcome.FAILED:
        message = f"rollback failed: {rolled.error_message}" if rolled.error_message else "rollback failed"
        code = rolled.error_code or ErrorCode.ROLLBACK_FAILED.value
        return ShardStatus(applied.shard_id, applied.outcome, applied.duration_ms, code, message)
    return ShardStatus(
        applied.shard_id,
        rolled.outcome,
        applied.duration_ms + rolled.duration_ms,
        rolled.error_code,
        rolled.error_message,
    )


def lost_status(shard_id: str, kind: RunKind) -> ShardStatus:
    """A shard whose task failed without a result: failed, not pending -- it may be half-way."""
    code = ErrorCode.ROLLBACK_FAILED if kind is RunKind.ROLLBACK else ErrorCode.MIGRATION_FAILED
    return ShardStatus(shard_id, Outcome.FAILED, 0, code.value, LOST_TASK_MESSAGE)


def all_reached(targets: Sequence[str], statuses: Iterable[ShardStatus]) -> bool:
    """Whether every target has reported an outcome at the migration (shards without a report have not)."""
    reached = {s.shard_id.casefold() for s in statuses if reached_migration(s.outcome)}
    return bool(targets) and all(t.casefold() in reached for t in targets)


def shards_to_roll_back(targets: Sequence[str], statuses: Iterable[ShardStatus]) -> list[str]:
    """The shards auto-rollback undoes: those *this run* applied, and only when the run did not fully succeed.

    Shards that were already at the migration before the run are left alone -- the run did not put it there.
    """
    statuses = list(statuses)
    if all_reached(targets, statuses):
        return []
    return [s.shard_id for s in statuses if s.outcome is Outcome.SUCCEEDED]


def stops_followers(status: ShardStatus) -> bool:
    """Whether a shard's outcome stops the shards chained after it (sequential links, rolling batches):
    it was itself stopped. (Failures count against the failure threshold instead: see :class:`HaltPolicy`.)"""
    return status.outcome is Outcome.PENDING


def catchup_stops(status: ShardStatus) -> bool:
    """Whether a shard's catch-up stops at this migration: it failed, and the later ones build on it."""
    return status.outcome is Outcome.FAILED


def catchup_outcome(*, applied: int, would_apply: int) -> Outcome:
    """A shard's catch-up outcome once no migration failed: this run applied some (``succeeded``), a dry run
    would apply some (``would_apply``), or the shard held every one (``already_applied``)."""
    if applied:
        return Outcome.SUCCEEDED
    return Outcome.WOULD_APPLY if would_apply else Outcome.ALREADY_APPLIED


def canary_cleared(status: ShardStatus | None) -> bool:
    """Whether the rest of the fleet may follow the canary."""
    return status is not None and reached_migration(status.outcome)


@dataclass(frozen=True)
class HaltPolicy:
    """When a rollout stops starting shards: once more than ``max_failed`` shards failed (None: never)."""

    max_failed: int | None = None

    @classmethod
    def from_options(cls, *, stop_on_first_failure: bool) -> HaltPolicy:
        return cls(0 if stop_on_first_failure else None)

    @classmethod
    def from_limits(
        cls,
        *,
        stop_on_first_failure: bool,
        max_failed_shards: int | None,
        max_failure_ratio: float | None,
        targets: int,
    ) -> HaltPolicy:
        """The tightest of the limits: stop_on_first_failure is ``max_failed_shards: 0``; a ratio r of
        ``targets`` shards allows ``floor(r * targets)`` failures."""
        limits = [0] if stop_on_first_failure else []
        if max_failed_shards is not None:
            limits.append(int(max_failed_shards))
        if max_failure_ratio is not None:
            limits.append(math.floor(float(max_failure_ratio) * targets + 1e-9))
        return cls(min(limits) if limits else None)

    def exceeded(self, failed: int) -> bool:
        return self.max_failed is not None and failed > self.max_failed

    def describe(self) -> str:
        if self.max_failed == 0:
            return "stop_on_first_failure (max_failed_shards 0)"
        return f"failure threshold of {self.max_failed} failed shard(s) exceeded"


def halted_reason(
    result_shards: Mapping[str, ShardStatus],
    *,
    policy: HaltPolicy,
    refused: Refusal | None = None,
    canary: str | None = None,
    gate: str | None = None,
    approval: ApprovalDecision | None = None,
) -> str | None:
    """Why shards were left ``pending``: the refusal, a gate (the canary gate's own reason), the canary
    approval's answer, the canary, or the failure policy; None when no shard was left pending."""
    pending = [sid for sid, s in result_shards.items() if s.outcome is Outcome.PENDING]
    if not pending:
        return None
    if refused is not None:
        return f"refused before any shard started: [{refusal_code(refused)}] {first_line(refused.reason)}"
    if gate:
        return gate
    if approval is not None and not approval.approved:
        return approval_reason(approval)
    if canary is not None:
        status = next((s for sid, s in result_shards.items() if sid.casefold() == canary.casefold()), None)
        if not canary_cleared(status):
            return f"canary {canary} did not reach the migration; the other shards were not started"
    failed = [sid for sid, s in result_shards.items() if s.outcome is Outcome.FAILED]
    if policy.exceeded(len(failed)):
        return f"{policy.describe()}: {len(failed)} shard(s) failed ({_names(failed)}); {len(pending)} not started"
    return f"{len(pending)} shard(s) not started"


def approval_reason(approval: ApprovalDecision) -> str:
    """A rejected (or unanswered) canary approval, with who and why: a timeout counts as a reject."""
    if approval.timed_out:
        reason = f"canary approval got no answer within {approval.timeout_s:g} s (a timeout counts as a reject)"
    else:
        reason = f"canary approval rejected by {approval.by or 'an unknown user'}"
    comment = first_line(approval.comment)
    return f"{reason}{f': {comment}' if comment else ''}; the other shards were not started"


def refusal_code(refused: Refusal) -> str:
    return refused.code or ErrorCode.MIGRATION_FAILED.value


def out_of_order(status: ShardStatus) -> bool:
    """Whether the shard refused the migration because one it needs first is not on it (nothing ran)."""
    return status.outcome is Outcome.FAILED and status.error_code == ErrorCode.OUT_OF_ORDER.value


def order_refusal(kind: RunKind, shards: Mapping[str, ShardStatus]) -> Refusal | None:
    """A rollout refused for its order: every shard that started refused it as out of order (the others were
    never started), so nothing was applied anywhere -- the run was refused, not "failed on every shard"."""
    if kind is not RunKind.ROLLOUT:
        return None
    refused = [status for status in shards.values() if out_of_order(status)]
    if not refused or any(not out_of_order(s) and s.outcome is not Outcome.PENDING for s in shards.values()):
        return None
    reasons = sorted({first_line(status.error_message) for status in refused})
    others = f" (and {len(reasons) - 1} other reason(s): see each shard)" if len(reasons) > 1 else ""
    started = f"{len(refused)} shard(s) refused it" + (
        f", {len(shards) - len(refused)} not started" if len(refused) < len(shards) else ""
    )
    return Refusal(ErrorCode.OUT_OF_ORDER.value, f"{started}, nothing was applied: {reasons[0]}{others}")


def assemble_result(
    *,
    kind: RunKind,
    migration_id: str,
    dag_run_id: str | None,
    strategy: str,
    targets: Sequence[str],
    reported: Iterable[ShardStatus],
    lost: Iterable[str] = (),
    rollbacks: Iterable[ShardStatus] = (),
    refused: Refusal | None = None,
    policy: HaltPolicy = HaltPolicy(),
    canary: str | None = None,
    gate: str | None = None,
    approval: ApprovalDecision | None = None,
    total_duration_ms: int = 0,
) -> MigrationResult:
    """Every target's final status, in ``targets`` order, and the run's verdict.

    - a shard reported twice keeps the more telling report (:func:`more_telling`);
    - a shard whose task failed without reporting (``lost``) is failed, not pending;
    - a target nobody reported is ``pending`` in a rollout (never started) and ``failed`` in a rollback
      (its task ended without saying whether it undid anything) -- unless the run was refused, when nothing
      started and every unreported target is ``pending``;
    - auto-rollback results merge into the shards they undid (:func:`merge_rollback`);
    - a rollout whose shards all refused the migration as out of order is refused (:func:`order_refusal`);
    - a run is a success when every target succeeded by the rules of its kind and it was not refused.
    """
    by_key: dict[str, ShardStatus] = {}
    for status in reported:
        key = status.shard_id.casefold()
        by_key[key] = more_telling(by_key[key], status) if key in by_key else status
    for shard_id in lost:
        by_key.setdefault(shard_id.casefold(), lost_status(shard_id, kind))
    for rolled in rollbacks:
        key = rolled.shard_id.casefold()
        by_key[key] = merge_rollback(by_key.get(key), rolled)
    unreported = RunKind.ROLLOUT if refused is not None else kind  # a refused run started nothing
    shards = {shard_id: by_key.get(shard_id.casefold()) or _unreported(shard_id, unreported) for shard_id in targets}
    counts = Counter(status.outcome.value for status in shards.values())
    counts["at_migration"] = sum(1 for status in shards.values() if reached_migration(status.outcome))
    ok = bool(shards) and refused is None and all(succeeded(kind, s.outcome) for s in shards.values())
    return MigrationResult(
        migration_id=migration_id,
        dag_run_id=dag_run_id,
        strategy=strategy,
        shards=shards,
        all_succeeded=ok,
        counts=dict(counts),
        total_duration_ms=total_duration_ms,
        halted_reason=halted_reason(
            shards, policy=policy, refused=refused, canary=canary, gate=gate, approval=approval
        ),
        refused=refused or order_refusal(kind, shards),
    )


def _unreported(shard_id: str, kind: RunKind) -> ShardStatus:
    if kind is RunKind.ROLLBACK:
        return ShardStatus(
            shard_id,
            Outcome.FAILED,
            0,
            ErrorCode.ROLLBACK_FAILED.value,
            "the rollback task of this shard finished without a result (see its task log)",
        )
    return ShardStatus(shard_id, Outcome.PENDING)


# -- messages ---------------------------------------------------------------------------------------------


def first_line(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return lines[0].strip() if lines else ""


def _names(shard_ids: Sequence[str], limit: int = NAMED_SHARDS) -> str:
    shown = ", ".join(shard_ids[:limit])
    return shown + (f" and {len(shard_ids) - limit} more" if len(shard_ids) > limit else "")


def summary_line(result: MigrationResult) -> str:
    """One line of counts, e.g. ``4 at the migration, 1 failed, 2 pending, 0 rolled back``."""
    parts = [f"{result.succeeded_count} at the migration", f"{result.failed_count} failed"]
    parts += [f"{result.pending_count} pending", f"{result.rolled_back_count} rolled back"]
    others = {
        outcome: result.count(outcome)
        for outcome in (Outcome.NOT_APPLIED, Outcome.NOT_SELECTED, Outcome.WOULD_ROLL_BACK)
        if result.count(outcome)
    }
    parts += [f"{n} {outcome.value}" for outcome, n in others.items()]
    return ", ".join(parts)


def gate_failure(result: MigrationResult) -> str | None:
    """The final gate's error for a run that did not succeed, else None.

    It names every failed shard (up to ``NAMED_SHARDS``) with its code and the first line of its error, so
    the reason shows in the run overview's failed-task panel without opening a log.
    """
    if result.all_succeeded:
        return None
    lines = [f"migration {result.migration_id}: {summary_line(result)}"]
    if result.refused is not None:
        lines.append(f"refused: [{refusal_code(result.refused)}] {first_line(result.refused.reason)}")
    elif result.halted_reason:
        lines.append(f"halted: {result.halted_reason}")
    failed = [(sid, s) for sid, s in result.shards.items() if s.outcome is Outcome.FAILED or _rollback_failed(s)]
    for shard_id, status in failed[:NAMED_SHARDS]:
        lines.append(f"- {shard_id}: {status.outcome.value} [{status.error_code}] {first_line(status.error_message)}")
    if len(failed) > NAMED_SHARDS:
        lines.append(f"- ... and {len(failed) - NAMED_SHARDS} more failed shard(s); the report lists them all")
    return "\n".join(lines)


def _rollback_failed(status: ShardStatus) -> bool:
    return status.error_code == ErrorCode.ROLLBACK_FAILED.value and status.outcome is not Outcome.FAILED


# -- progress ---------------------------------------------------------------------------------------------

RUNNING = "running"
WAITING = "waiting"


def compute_progress(
    *,
    migration_id: str,
    run_id: str | None,
    plan: RolloutPlan | None,
    outcomes: Mapping[str, Outcome],
    running: Iterable[str] = (),
    run_state: str | None = None,
    rolling_back: bool = False,
    refused: bool = False,
    awaiting_approval: bool = False,
) -> MigrationProgress:
    """A snapshot of a run: ``outcomes`` of shards that finished, ``running`` those executing now.

    Rolled-back shards are counted apart from shards at the migration; the phase says what the run is doing
    (``AwaitingApproval`` while a human has to answer the canary approval), and once it is over, how it ended
    (``Completed``, ``RolledBack``, ``Failed``, ``Refused``).
    ``plan`` is None before the run has published it (its first task): the phase is then ``Preparing``.
    """
    if plan is None:
        return MigrationProgress(
            migration_id, run_id, 0, 0, 0, 0, 0, 0, _final_phase(run_state, {}, refused) or "Preparing"
        )
    running_keys = {shard_id.casefold() for shard_id in running}
    done = {shard_id.casefold(): outcome for shard_id, outcome in outcomes.items()}
    per_shard: dict[str, str] = {}
    for shard in plan.targets:
        if shard.key in done:
            per_shard[shard.id] = done[shard.key].value
        else:
            per_shard[shard.id] = RUNNING if shard.key in running_keys else WAITING
    tally = Counter(per_shard.values())
    phase = _final_phase(run_state, tally, refused)
    if phase is None and awaiting_approval:
        phase = "AwaitingApproval"
    if phase is None:
        phase = "RollingBack" if rolling_back else _phase(plan, per_shard)
    return MigrationProgress(
        migration_id=migration_id,
        run_id=run_id,
        total_shards=len(per_shard),
        completed_shards=sum(tally[o.value] for o in AT_MIGRATION),
        failed_shards=tally[Outcome.FAILED.value],
        stopped_shards=tally[Outcome.PENDING.value],
        running_shards=tally[RUNNING],
        rolled_back_shards=tally[Outcome.ROLLED_BACK.value],
        current_phase=phase,
        per_shard=per_shard,
        run_finished=run_state in ("success", "failed"),
    )


def _final_phase(run_state: str | None, tally: Mapping[str, int], refused: bool) -> str | None:
    if run_state == "success":
        return "Completed"
    if run_state != "failed":
        return None
    if refused:
        return "Refused"
    return "RolledBack" if tally.get(Outcome.ROLLED_BACK.value) else "Failed"


def _phase(plan: RolloutPlan, per_shard: Mapping[str, str]) -> str:
    for wave in plan.waves:
        if any(per_shard[shard.id] in (WAITING, RUNNING) for shard in wave.shards):
            if wave.kind is WaveKind.CANARY:
                return "Canary"
            if wave.kind is WaveKind.BATCH:
                return f"RollingBatch{wave.index + 1}"
            if wave.kind is WaveKind.SHARD:
                return f"Sequential:{wave.shards[0].id}"
            return "Parallel"
    return "Finishing"
