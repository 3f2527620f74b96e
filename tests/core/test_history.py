"""The apply decision from a shard's history row."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from airflow_provider_shardmigrate.core.history import (
    HISTORY_COLUMNS,
    ApplyAction,
    HistoryRecord,
    HistoryStatus,
    decide_apply,
)

OLD = "sha256:" + "a" * 64
NEW = "sha256:" + "b" * 64


def row(status: HistoryStatus, checksum: str = NEW, applied: int = 0, total: int = 0) -> HistoryRecord:
    return HistoryRecord("001_x", checksum, status, statements_applied=applied, statements_total=total)


def test_columns_are_the_design_columns() -> None:
    assert HISTORY_COLUMNS == (
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
    assert {s.value for s in HistoryStatus} == {"running", "applied", "failed", "rolled_back", "baselined"}


def test_as_row_follows_the_column_order() -> None:
    when = datetime(2026, 2, 16, tzinfo=UTC)
    record = HistoryRecord("001_x", NEW, HistoryStatus.APPLIED, "desc", 3, 3, when, None, 12, "dag", "run", None)
    assert record.as_row() == ("001_x", NEW, "desc", HistoryStatus.APPLIED, 3, 3, when, None, 12, "dag", "run", None)
    evolved = record.evolve(status=HistoryStatus.ROLLED_BACK, rolled_back_at=when)
    assert evolved.status is HistoryStatus.ROLLED_BACK
    assert evolved.applied_at == when  # timestamp kept
    assert record.status is HistoryStatus.APPLIED  # immutable


def test_no_row_applies_from_the_start() -> None:
    decision = decide_apply(None, NEW)
    assert (decision.action, decision.start_at) == (ApplyAction.APPLY, 0)


@pytest.mark.parametrize("status", [HistoryStatus.APPLIED, HistoryStatus.BASELINED])
def test_applied_or_baselined_with_same_checksum_is_skipped(status: HistoryStatus) -> None:
    decision = decide_apply(row(status, NEW, 5, 5), NEW)
    assert decision.action is ApplyAction.SKIP
    assert status.value in decision.reason


@pytest.mark.parametrize("status", [HistoryStatus.APPLIED, HistoryStatus.BASELINED])
def test_applied_or_baselined_with_other_checksum_is_refused_showing_both(status: HistoryStatus) -> None:
    decision = decide_apply(row(status, OLD, 5, 5), NEW)
    assert decision.action is ApplyAction.REFUSE
    assert OLD in decision.reason and NEW in decision.reason


@pytest.mark.parametrize("checksum", [OLD, NEW])
def test_rolled_back_is_applied_again_from_the_start(checksum: str) -> None:
    decision = decide_apply(row(HistoryStatus.ROLLED_BACK, checksum, 4, 4), NEW)
    assert (decision.action, decision.start_at) == (ApplyAction.APPLY, 0)


@pytest.mark.parametrize("status", [HistoryStatus.RUNNING, HistoryStatus.FAILED])
@pytest.mark.parametrize("checksum", [OLD, NEW])
def test_nothing_applied_yet_starts_over_whatever_the_checksum(status: HistoryStatus, checksum: str) -> None:
    decision = decide_apply(row(status, checksum, 0, 4), NEW)
    assert (decision.action, decision.start_at) == (ApplyAction.APPLY, 0)


@pytest.mark.parametrize("status", [HistoryStatus.RUNNING, HistoryStatus.FAILED])
def test_partial_with_same_checksum_resumes_after_the_last_statement(status: HistoryStatus) -> None:
    decision = decide_apply(row(status, NEW, 2, 5), NEW)
    assert decision.action is ApplyAction.APPLY
    assert decision.start_at == 2
    assert "2 of 5" in decision.reason


@pytest.mark.parametrize("status", [HistoryStatus.RUNNING, HistoryStatus.FAILED])
def test_partial_with_changed_checksum_is_refused(status: HistoryStatus) -> None:
    decision = decide_apply(row(status, OLD, 2, 5), NEW)
    assert decision.action is ApplyAction.REFUSE
    assert decision.start_at == 0
    assert OLD in decision.reason and NEW in decision.reason
    assert "2 of 5" in decision.reason


# --- counters out of range are an error, never a guess (issue 9, bug 8) ------------------------------------


@pytest.mark.parametrize("status", [HistoryStatus.RUNNING, HistoryStatus.FAILED])
@pytest.mark.parametrize(
    ("applied", "total", "statements", "says"),
    [
        (-1, 3, 3, "statements_applied=-1"),  # made statement 2 run twice (steps[-1])
        (4, 3, 3, "statements_applied=4"),  # would mark applied without running anything
        (1, -2, 3, "statements_total=-2"),
        (2, 5, 3, "statements_total=5"),  # the row counted another script than the one that hashes the same
        (0, -1, 3, "statements_total=-1"),
    ],
)
def test_out_of_range_counters_are_refused_naming_the_row(
    status: HistoryStatus, applied: int, total: int, statements: int, says: str
) -> None:
    decision = decide_apply(row(status, NEW, applied, total), NEW, statements=statements)
    assert decision.action is ApplyAction.REFUSE
    assert "history row '001_x'" in decision.reason and "shardmigrate_history" in decision.reason
    assert says in decision.reason


@pytest.mark.parametrize("status", [HistoryStatus.RUNNING, HistoryStatus.FAILED])
def test_counters_in_range_resume_or_finish(status: HistoryStatus) -> None:
    assert decide_apply(row(status, NEW, 3, 3), NEW, statements=3).start_at == 3  # all ran; only the row is left
    assert decide_apply(row(status, NEW, 1, 3), NEW, statements=3).start_at == 1
    assert decide_apply(row(status, OLD, 0, 7), NEW, statements=3).action is ApplyAction.APPLY  # nothing ran


def test_a_negative_counter_is_refused_even_without_the_script_count() -> None:
    decision = decide_apply(row(HistoryStatus.RUNNING, NEW, -1, 3), NEW)
    assert decision.action is ApplyAction.REFUSE and "statements_applied=-1" in decision.reason
