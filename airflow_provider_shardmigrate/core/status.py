"""The shapes of per-shard outcomes, the aggregated MigrationResult and live MigrationProgress.

These are what other tools read from XCom and the REST API (docs/contracts.md), so they serialise to plain
JSON and never carry SQL, schema dumps or credentials. What an outcome *means* -- which ones reached the
migration, how a rollback merges into a shard's result, what progress counts -- is decided in
core/outcomes.py, never here and never by a caller.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

MAX_ERROR_MESSAGE = 2000


class Outcome(StrEnum):
    """What happened to one shard in one run (rollout or rollback); each name has exactly one meaning."""

    SUCCEEDED = "succeeded"  # this run applied the migration
    ALREADY_APPLIED = "already_applied"  # the shard held the migration (applied or baselined) before the run
    WOULD_APPLY = "would_apply"  # dry run: the migration would be applied
    FAILED = "failed"  # this run tried and failed (apply, rollback, or the shard could not be reached)
    PENDING = "pending"  # targeted but never started: a failure, the threshold, a refusal or the canary stopped it
    ROLLED_BACK = "rolled_back"  # this run ran the down script (auto-rollback or the rollback DAG)
    NOT_APPLIED = "not_applied"  # rollback: the migration is not on this shard, nothing to undo
    NOT_SELECTED = "not_selected"  # rollback: the shard was left out of the ``shards`` selection
    WOULD_ROLL_BACK = "would_roll_back"  # rollback dry run: the down script would run


_SECRET_PATTERNS = (
    # ``scheme://user:secret@host``; an unencoded '@' inside the secret is part of it (up to the last '@'
    # before the host's '/'), so no tail of the password leaks. Bounded repeats keep it linear on huge input.
    re.compile(
        r"(?P<scheme>\b[a-z][a-z0-9+.\-]{0,40}://)(?P<user>[^:/@\s]{0,256}):"
        r"(?P<secret>(?:[^@\s]|@(?=[^\s/@]{0,1024}@)){0,1024})@",
        re.IGNORECASE,
    ),
    # ``password=x``, ``Password=x;`` and the ``'password': 'x'`` of a dict or JSON echoed in an error
    re.compile(
        r"(?P<key>\b(?:password|passwd|pwd)['\"]?\s*[=:]\s*)(?P<secret>'[^']{0,1024}'|\"[^\"]{0,1024}\"|[^\s;,&]{1,1024})",
        re.IGNORECASE,
    ),
)


def redact(text: str, secret: str | None = None) -> str:
    """Mask credentials a driver may echo back (URIs with passwords, ``password=...``), and ``secret``
    (the connection's own password) wherever it appears."""
    if secret:
        text = text.replace(secret, "***")
    if "@" in text:
        text = _SECRET_PATTERNS[0].sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    return _SECRET_PATTERNS[1].sub(lambda m: f"{m['key']}***", text)


def clip(text: str | None) -> str | None:
    if text is None:
        return None
    text = redact(text)
    return text if len(text) <= MAX_ERROR_MESSAGE else text[: MAX_ERROR_MESSAGE - 15] + " ...[truncated]"


@dataclass(frozen=True)
class ShardStatus:
    shard_id: str
    outcome: Outcome
    duration_ms: int = 0
    error_code: str | None = None
    error_message: str | None = None

    def to_xcom(self) -> dict[str, Any]:
        return {
            "shard_id": self.shard_id,
            "outcome": self.outcome.value,
            "duration_ms": int(self.duration_ms),
            "error_code": self.error_code,
            "error_message": clip(self.error_message),
        }

    @classmethod
    def from_xcom(cls, data: Mapping[str, Any]) -> ShardStatus:
        return cls(
            shard_id=str(data["shard_id"]),
            outcome=Outcome(data["outcome"]),
            duration_ms=int(data.get("duration_ms") or 0),
            error_code=data.get("error_code"),
            error_message=data.get("error_message"),
        )

    @staticmethod
    def is_xcom(value: Any) -> bool:
        """Whether an XCom value has the per-shard status shape (other tasks push other things)."""
        return isinstance(value, Mapping) and "shard_id" in value and "outcome" in value


@dataclass(frozen=True)
class Refusal:
    """Why a run was refused before any shard started (preflight drift, an edited script, out of order...)."""

    code: str
    reason: str

    def to_xcom(self) -> dict[str, str]:
        return {"code": self.code, "reason": clip(self.reason) or ""}

    @classmethod
    def from_xcom(cls, data: Mapping[str, Any] | None) -> Refusal | None:
        if not data:
            return None
        return cls(str(data.get("code", "")), str(data.get("reason", "")))


@dataclass(frozen=True)
class MigrationResult:
    """What a rollout (or a rollback) did to every targeted shard, as core/outcomes.py assembled it.

    ``shards`` is in rollout order. The counts and ``all_succeeded`` are decided at assembly and stored,
    so a reader of the XCom never re-derives them.
    """

    migration_id: str
    dag_run_id: str | None
    strategy: str
    shards: Mapping[str, ShardStatus]
    all_succeeded: bool
    counts: Mapping[str, int] = field(default_factory=dict)
    total_duration_ms: int = 0
    halted_reason: str | None = None
    refused: Refusal | None = None

    def count(self, *outcomes: Outcome) -> int:
        return sum(int(self.counts.get(outcome.value, 0)) for outcome in outcomes)

    @property
    def succeeded_count(self) -> int:
        """Shards at the migration: succeeded, already_applied (and would_apply in a dry run)."""
        return int(self.counts.get("at_migration", 0))

    @property
    def failed_count(self) -> int:
        return self.count(Outcome.FAILED)

    @property
    def pending_count(self) -> int:
        return self.count(Outcome.PENDING)

    @property
    def rolled_back_count(self) -> int:
        return self.count(Outcome.ROLLED_BACK)

    def to_xcom(self) -> dict[str, Any]:
        """The report's ``return_value``: the summary first, the per-shard map last."""
        return {
            "migration_id": self.migration_id,
            "dag_run_id": self.dag_run_id,
            "strategy": self.strategy,
            "all_succeeded": self.all_succeeded,
            "succeeded_count": self.succeeded_count,
            "failed_count": self.failed_count,
            "pending_count": self.pending_count,
            "rolled_back_count": self.rolled_back_count,
            "outcome_counts": {k: v for k, v in self.counts.items() if k != "at_migration" and v},
            "halted_reason": self.halted_reason,
            "refused": self.refused.to_xcom() if self.refused else None,
            "total_duration_ms": int(self.total_duration_ms),
            "shards": {shard_id: status.to_xcom() for shard_id, status in self.shards.items()},
        }

    @classmethod
    def from_xcom(cls, data: Mapping[str, Any]) -> MigrationResult:
        counts = dict(data.get("outcome_counts") or {})
        counts["at_migration"] = int(data.get("succeeded_count") or 0)
        return cls(
            migration_id=data["migration_id"],
            dag_run_id=data.get("dag_run_id"),
            strategy=data["strategy"],
            shards={k: ShardStatus.from_xcom(v) for k, v in data["shards"].items()},
            all_succeeded=bool(data["all_succeeded"]),
            counts=counts,
            total_duration_ms=int(data.get("total_duration_ms") or 0),
            halted_reason=data.get("halted_reason"),
            refused=Refusal.from_xcom(data.get("refused")),
        )


@dataclass(frozen=True)
class MigrationProgress:
    """A snapshot of a rollout while it runs, as core/outcomes.py computes it (readable mid-run)."""

    migration_id: str
    run_id: str | None
    total_shards: int
    completed_shards: int  # at the migration
    failed_shards: int
    stopped_shards: int  # pending: will not start in this run
    running_shards: int
    rolled_back_shards: int
    current_phase: str
    per_shard: Mapping[str, str] = field(default_factory=dict)
    run_finished: bool = False

    @property
    def remaining_shards(self) -> int:
        return (
            self.total_shards
            - self.completed_shards
            - self.failed_shards
            - self.stopped_shards
            - self.rolled_back_shards
        )

    @property
    def is_finished(self) -> bool:
        """The run is over -- not merely every shard done: auto-rollback and the report may still run."""
        return self.run_finished

    def to_dict(self) -> dict[str, Any]:
        return {
            "migration_id": self.migration_id,
            "run_id": self.run_id,
            "phase": self.current_phase,
            "total_shards": self.total_shards,
            "completed_shards": self.completed_shards,
            "rolled_back_shards": self.rolled_back_shards,
            "failed_shards": self.failed_shards,
            "stopped_shards": self.stopped_shards,
            "running_shards": self.running_shards,
            "remaining_shards": self.remaining_shards,
            "is_finished": self.is_finished,
            "shards": dict(self.per_shard),
        }
