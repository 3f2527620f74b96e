"""The per-shard history row and the decision what to do with a shard given its row.

The decision is pure so every engine, every strategy and the CLI take exactly the same branch for the
same history -- the engines only carry it out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

HISTORY_TABLE = "shardmigrate_history"

HISTORY_COLUMNS = (
    "migration_id",
    "checksum",
    "description",
    "status",
    "statements_applied",
    "statements_total",
    "applied_at",
    "rolled_back_at",
    "duration_ms",
    "dag_id",
    "run_id",
    "error",
)


class HistoryStatus(StrEnum):
    RUNNING = "running"
    APPLIED = "applied"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"
    BASELINED = "baselined"


#: Statuses of a row whose shard holds the migration (its schema has it).
HOLDS = frozenset({HistoryStatus.APPLIED, HistoryStatus.BASELINED})
#: What a missing row means where a status is shown (``shardmigrate status``, the order check).
NOT_APPLIED = "not_applied"


def holds(row: HistoryRecord | None) -> bool:
    """Whether a shard whose history row is ``row`` holds the migration."""
    return row is not None and row.status in HOLDS


def missing_requirements(rows: Mapping[str, HistoryRecord], required: Sequence[str]) -> list[tuple[str, str]]:
    """``(migration id, what its row says)`` of every required migration the shard does not hold, in order --
    the reason a migration is refused as out of order."""
    return [
        (mid, rows[mid].status.value if mid in rows else NOT_APPLIED) for mid in required if not holds(rows.get(mid))
    ]


@dataclass(frozen=True)
class HistoryRecord:
    migration_id: str
    checksum: str
    status: HistoryStatus
    description: str = ""
    statements_applied: int = 0
    statements_total: int = 0
    applied_at: datetime | None = None
    rolled_back_at: datetime | None = None
    duration_ms: int | None = None
    dag_id: str | None = None
    run_id: str | None = None
    error: str | None = None

    def evolve(self, **changes: object) -> HistoryRecord:
        return replace(self, **changes)  # type: ignore[arg-type]

    def as_row(self) -> tuple[object, ...]:
        return tuple(getattr(self, column) for column in HISTORY_COLUMNS)


class ApplyAction(StrEnum):
    APPLY = "apply"  # run the script from ``start_at``
    SKIP = "skip"  # already at the target: already_applied
    REFUSE = "refuse"  # history contradicts the script: failed, invalid_script


@dataclass(frozen=True)
class ApplyDecision:
    action: ApplyAction
    start_at: int = 0
    reason: str = ""


def _counter_problem(row: HistoryRecord, statements: int | None) -> str | None:
    """Why the row's counters cannot describe a partial apply of this script, or None when they can.

    A resume indexes the script's statements with ``statements_applied``: a negative count would run a
    statement twice (``steps[-1]``), a count above the total would mark the row applied without running
    anything, and a total that is not the script's statement count means the row counted other statements.
    """
    applied, total = row.statements_applied, row.statements_total
    if applied < 0 or total < 0 or applied > total:
        return f"statements_applied={applied} and statements_total={total} are out of range"
    if statements is not None and applied > 0 and total != statements:
        return f"statements_total={total}, but the script has {statements} statement(s)"
    return None


def decide_apply(row: HistoryRecord | None, checksum: str, *, statements: int | None = None) -> ApplyDecision:
    """What to do with a shard whose history row for this migration is ``row``.

    :param statements: How many statements the script has (checked against a partial row's counters).
    """
    if row is None or row.status is HistoryStatus.ROLLED_BACK:
        return ApplyDecision(ApplyAction.APPLY)
    if row.status in HOLDS:
        if row.checksum == checksum:
            return ApplyDecision(ApplyAction.SKIP, reason=f"{row.status.value} with the same checksum")
        return ApplyDecision(
            ApplyAction.REFUSE,
            reason=(
                f"migration was {row.status.value} on this shard with checksum {row.checksum}, but the scripts "
                f"now hash to {checksum}; a migration that ran must not change -- write a new migration"
            ),
        )
    # running or failed: a partial apply of a non-transactional migration (or a crash mid-way)
    problem = _counter_problem(row, statements)
    if problem is not None:
        return ApplyDecision(
            ApplyAction.REFUSE,
            reason=(
                f"history row '{row.migration_id}' in {HISTORY_TABLE} ({row.status.value}): {problem}; refusing to "
                "guess how far the shard got -- check the shard, then fix or delete the row by hand"
            ),
        )
    if row.statements_applied == 0:
        return ApplyDecision(ApplyAction.APPLY)
    if row.checksum != checksum:
        return ApplyDecision(
            ApplyAction.REFUSE,
            reason=(
                f"migration stopped after {row.statements_applied} of {row.statements_total} statements with "
                f"checksum {row.checksum}, and the scripts now hash to {checksum}; resuming a changed script is "
                "unsafe -- restore the script, or repair the shard by hand and baseline it"
            ),
        )
    return ApplyDecision(
        ApplyAction.APPLY,
        start_at=row.statements_applied,
        reason=f"resuming after statement {row.statements_applied} of {row.statements_total}",
    )
