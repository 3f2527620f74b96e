"""Per-shard outcomes, the aggregated MigrationResult and live MigrationProgress (DESIGN 2.7).

These are the shapes other tools read from XCom and the REST API, so they serialise to plain JSON and
never carry SQL, schema dumps or credentials.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from airflow_provider_shardmigrate.core.plans import RolloutPlan, WaveKind

MAX_ERROR_MESSAGE = 2000


class Outcome(StrEnum):
    SUCCEEDED = "succeeded"
    ALREADY_APPLIED = "already_applied"
    FAILED = "failed"
    PENDING = "pending"
    ROLLED_BACK = "rolled_back"
    WOULD_APPLY = "would_apply"


#: Outcomes that leave a shard at the target version (or, in a dry run, ready to get there).
AT_TARGET = frozenset({Outcome.SUCCEEDED, Outcome.ALREADY_APPLIED, Outcome.WOULD_APPLY})

_SECRET_PATTERNS = (
    # ``scheme://user:secret@host``; an unencoded '@' inside the secret is part of it (up to the last '@'
    # before the host's '/'), so no tail of the password leaks. Bounded repeats keep it linear on huge input.
    re.compile(
        r"(?P<scheme>\b[a-z][a-z0-9+.\-]{0,40}://)(?P<user>[^:/@\s]{0,256}):"
        r"(?P<secret>(?:[^@\s]|@(?=[^\s/@]{0,1024}@)){0,1024})@",
        re.IGNORECASE,
    ),
    # ``password=x``, ``Password=x;`` and the ``'password': 'x'`` of a dict or JSON echoed in an error --
    # but not MySQL's "(using password: YES|NO)", which says whether a password was sent, not which.
    re.compile(
        r"(?P<key>\b(?:password|passwd|pwd)['\"]?\s*[=:]\s*)"
        r"(?P<secret>'[^']{0,1024}'|\"[^\"]{0,1024}\"|[^\s;,&]{1,1024})",
        re.IGNORECASE,
    ),
)


def _mask_keyed(match: re.Match[str]) -> str:
    """``password=***`` -- except MySQL's "(using password: YES)" / "NO)", which is no secret."""
    before = match.string[max(0, match.start() - 6) : match.start()]
    if before.lower() == "using " and match["secret"].upper().startswith(("YES)", "NO)")):
        return match.group(0)
    return f"{match['key']}***"


def redact(text: str, secret: str | None = None) -> str:
    """Mask credentials a driver may echo back (URIs with passwords, ``password=...``), and ``secret``
    (the connection's own password) wherever it appears."""
    if secret:
        text = text.replace(secret, "***")
    if "@" in text:
        text = _SECRET_PATTERNS[0].sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    return _SECRET_PATTERNS[1].sub(_mask_keyed, text)


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


@dataclass(frozen=True)
class MigrationResult:
    """What a rollout (or a rollback) did to every targeted shard; shards that never ran are ``pending``."""

    migration_id: str
    dag_run_id: str | None
    strategy: str
    shards: Mapping[str, ShardStatus]
    total_duration_ms: int = 0
    all_succeeded: bool = False

    @classmethod
    def build(
        cls,
        *,
        migration_id: str,
        dag_run_id: str | None,
        strategy: str,
        targets: Sequence[str],
        statuses: Iterable[ShardStatus],
        total_duration_ms: int = 0,
        success: frozenset[Outcome] = AT_TARGET,
    ) -> MigrationResult:
        """Order by ``targets`` and fill shards without a status as pending.

        ``success`` says which outcomes count as success: reaching the target version for a rollout,
        anything but ``failed`` for a rollback (a shard with nothing to undo is fine).
        """
        by_key = {status.shard_id.casefold(): status for status in statuses}
        shards = {
            shard_id: by_key.get(shard_id.casefold(), ShardStatus(shard_id, Outcome.PENDING)) for shard_id in targets
        }
        ok = bool(shards) and all(status.outcome in success for status in shards.values())
        return cls(migration_id, dag_run_id, strategy, shards, total_duration_ms, ok)

    def count(self, *outcomes: Outcome) -> int:
        return sum(1 for status in self.shards.values() if status.outcome in outcomes)

    @property
    def succeeded_count(self) -> int:
        return self.count(*AT_TARGET)

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
        return {
            "migration_id": self.migration_id,
            "dag_run_id": self.dag_run_id,
            "strategy": self.strategy,
            "all_succeeded": self.all_succeeded,
            "succeeded_count": self.succeeded_count,
            "failed_count": self.failed_count,
            "pending_count": self.pending_count,
            "rolled_back_count": self.rolled_back_count,
            "total_duration_ms": int(self.total_duration_ms),
            "shards": {shard_id: status.to_xcom() for shard_id, status in self.shards.items()},
        }

    @classmethod
    def from_xcom(cls, data: Mapping[str, Any]) -> MigrationResult:
        return cls(
            migration_id=data["migration_id"],
            dag_run_id=data.get("dag_run_id"),
            strategy=data["strategy"],
            shards={k: ShardStatus.from_xcom(v) for k, v in data["shards"].items()},
            total_duration_ms=int(data.get("total_duration_ms") or 0),
            all_succeeded=bool(data["all_succeeded"]),
        )


@dataclass(frozen=True)
class MigrationProgress:
    """A snapshot of a rollout while it runs (the seed's MigrationProgress, made readable mid-run)."""

    migration_id: str
    run_id: str | None
    total_shards: int
    completed_shards: int
    failed_shards: int
    stopped_shards: int
    running_shards: int
    current_phase: str
    per_shard: Mapping[str, str] = field(default_factory=dict)
    run_finished: bool = False

    @property
    def remaining_shards(self) -> int:
        return self.total_shards - self.completed_shards - self.failed_shards - self.stopped_shards

    @property
    def is_finished(self) -> bool:
        """The run is over -- not merely every shard done: auto-rollback and the report may still run."""
        return self.run_finished

    @classmethod
    def compute(
        cls,
        *,
        migration_id: str,
        run_id: str | None,
        plan: RolloutPlan,
        outcomes: Mapping[str, Outcome],
        running: Iterable[str] = (),
        run_finished: bool = False,
        rolling_back: bool = False,
    ) -> MigrationProgress:
        """``outcomes`` holds shards that finished; ``running`` those executing now."""
        running_keys = {shard_id.casefold() for shard_id in running}
        done = {shard_id.casefold(): outcome for shard_id, outcome in outcomes.items()}
        per_shard: dict[str, str] = {}
        for shard in plan.targets:
            if shard.key in done:
                per_shard[shard.id] = done[shard.key].value
            else:
                per_shard[shard.id] = "running" if shard.key in running_keys else "waiting"
        values = list(per_shard.values())
        completed = sum(1 for v in values if v in {o.value for o in AT_TARGET | {Outcome.ROLLED_BACK}})
        phase = "Completed" if run_finished else ("RollingBack" if rolling_back else _phase(plan, per_shard))
        return cls(
            migration_id=migration_id,
            run_id=run_id,
            total_shards=len(per_shard),
            completed_shards=completed,
            failed_shards=values.count(Outcome.FAILED.value),
            stopped_shards=values.count(Outcome.PENDING.value),
            running_shards=values.count("running"),
            current_phase=phase,
            per_shard=per_shard,
            run_finished=run_finished,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "migration_id": self.migration_id,
            "run_id": self.run_id,
            "phase": self.current_phase,
            "total_shards": self.total_shards,
            "completed_shards": self.completed_shards,
            "failed_shards": self.failed_shards,
            "stopped_shards": self.stopped_shards,
            "running_shards": self.running_shards,
            "remaining_shards": self.remaining_shards,
            "is_finished": self.is_finished,
            "shards": dict(self.per_shard),
        }


def _phase(plan: RolloutPlan, per_shard: Mapping[str, str]) -> str:
    for wave in plan.waves:
        if any(per_shard[shard.id] in ("waiting", "running") for shard in wave.shards):
            if wave.kind is WaveKind.CANARY:
                return "Canary"
            if wave.kind is WaveKind.BATCH:
                return f"RollingBatch{wave.index + 1}"
            if wave.kind is WaveKind.SHARD:
                return f"Sequential:{wave.shards[0].id}"
            return "Parallel"
    return "Finishing"
