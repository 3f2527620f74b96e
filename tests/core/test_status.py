"""Shard statuses, MigrationResult and MigrationProgress (DESIGN 2.7, seed's progress tracking)."""

from __future__ import annotations

import json

import pytest

from airflow_provider_shardmigrate.core.options import MigrationOptions, Strategy
from airflow_provider_shardmigrate.core.plans import plan_rollout
from airflow_provider_shardmigrate.core.status import (
    AT_TARGET,
    MAX_ERROR_MESSAGE,
    MigrationProgress,
    MigrationResult,
    Outcome,
    ShardStatus,
    clip,
    redact,
)
from airflow_provider_shardmigrate.core.topology import Shard

SHARD_KEYS = {"shard_id", "outcome", "duration_ms", "error_code", "error_message"}
RESULT_KEYS = {
    "migration_id",
    "dag_run_id",
    "strategy",
    "all_succeeded",
    "succeeded_count",
    "failed_count",
    "pending_count",
    "rolled_back_count",
    "total_duration_ms",
    "shards",
}
ROLLBACK_SUCCESS = frozenset(set(Outcome) - {Outcome.FAILED})


def test_outcome_values_are_the_design_names() -> None:
    assert {o.value for o in Outcome} == {
        "succeeded",
        "already_applied",
        "failed",
        "pending",
        "rolled_back",
        "would_apply",
    }
    assert {Outcome.SUCCEEDED, Outcome.ALREADY_APPLIED, Outcome.WOULD_APPLY} == AT_TARGET


# --- ShardStatus ------------------------------------------------------------------------------------------


def test_shard_status_xcom_has_exactly_the_design_keys() -> None:
    status = ShardStatus("shard-1", Outcome.FAILED, 1234, "shardmigrate.migration_failed", "no such table: x")
    data = status.to_xcom()
    assert set(data) == SHARD_KEYS
    assert data == {
        "shard_id": "shard-1",
        "outcome": "failed",
        "duration_ms": 1234,
        "error_code": "shardmigrate.migration_failed",
        "error_message": "no such table: x",
    }
    assert json.loads(json.dumps(data)) == data  # plain JSON
    assert type(data["outcome"]) is str


@pytest.mark.parametrize("outcome", list(Outcome))
def test_shard_status_round_trip(outcome: Outcome) -> None:
    status = ShardStatus("Shard-A", outcome, 7, None, None)
    assert ShardStatus.from_xcom(json.loads(json.dumps(status.to_xcom()))) == status


def test_shard_status_from_minimal_xcom() -> None:
    status = ShardStatus.from_xcom({"shard_id": "a", "outcome": "pending"})
    assert status == ShardStatus("a", Outcome.PENDING, 0, None, None)
    assert ShardStatus.from_xcom({"shard_id": "a", "outcome": "pending", "duration_ms": None}).duration_ms == 0


def test_shard_status_rejects_unknown_outcome() -> None:
    with pytest.raises(ValueError):
        ShardStatus.from_xcom({"shard_id": "a", "outcome": "exploded"})


def test_duration_is_an_int_in_xcom() -> None:
    assert ShardStatus("a", Outcome.SUCCEEDED, 12.9).to_xcom()["duration_ms"] == 12  # type: ignore[arg-type]


def test_xcom_error_message_is_redacted_and_clipped() -> None:
    long = "postgresql://admin:s3cret@db:5432/x failed: " + "y" * 5000
    data = ShardStatus("a", Outcome.FAILED, 0, "shardmigrate.migration_failed", long).to_xcom()
    assert "s3cret" not in data["error_message"]
    assert len(data["error_message"]) == MAX_ERROR_MESSAGE
    assert data["error_message"].endswith("...[truncated]")


# --- redact / clip ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgresql://admin:s3cret@db:5432/app", "postgresql://admin:***@db:5432/app"),
        ("mongodb+srv://u:p%40ss@cluster0.x.net/db", "mongodb+srv://u:***@cluster0.x.net/db"),
        ("mysql://:only-pass@h/db", "mysql://:***@h/db"),
        ("postgres://u:p@ss@host/db", "postgres://u:***@host/db"),  # unencoded '@' in the password
        ("postgres://u:pa/ss@host/db", "postgres://u:***@host/db"),
        ("a://u:p@h,b://x:y@z/db", "a://u:***@h,b://x:***@z/db"),
        ("could not connect: password=hunter2 host=x", "could not connect: password=*** host=x"),
        ("PASSWORD = 'a b c' port=1", "PASSWORD = *** port=1"),
        ('pwd="x;y" user=u', "pwd=*** user=u"),
        ("Server=tcp:x;Password=abc;Database=y", "Server=tcp:x;Password=***;Database=y"),
        ("passwd: topsecret, next", "passwd: ***, next"),
        ("{'user': 'u', 'password': 'hunter2'}", "{'user': 'u', 'password': ***}"),
        ('{"password": "hunter2", "host": "h"}', '{"password": ***, "host": "h"}'),
        ("(using password: hunter2)", "(using password: ***"),  # only YES / NO are MySQL's words
    ],
)
def test_redact_masks_credentials(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "postgresql://admin@db:5432/app",  # no password
        "no such table: orders",
        "column password_hash does not exist",
        "https://example.com/docs?page=1",
        # MySQL/MariaDB's access-denied message says whether a password was sent, not the password
        "(1045, \"Access denied for user 'root'@'localhost' (using password: YES)\")",
        "Access denied for user 'app'@'10.0.0.1' (using password: NO)",
    ],
)
def test_redact_leaves_harmless_text_alone(text: str) -> None:
    assert redact(text) == text


def test_redact_masks_a_password_next_to_mysqls_phrase() -> None:
    text = "Access denied (using password: YES); connect args password=hunter2"
    assert redact(text) == "Access denied (using password: YES); connect args password=***"


def test_clip() -> None:
    assert clip(None) is None
    assert clip("short") == "short"
    exact = "x" * MAX_ERROR_MESSAGE
    assert clip(exact) == exact
    clipped = clip("x" * (MAX_ERROR_MESSAGE + 1))
    assert clipped is not None and len(clipped) == MAX_ERROR_MESSAGE
    assert clipped.endswith(" ...[truncated]")
    assert clip("password=abc") == "password=***"


# --- MigrationResult --------------------------------------------------------------------------------------


def build(targets: list[str], statuses: list[ShardStatus], **kwargs: object) -> MigrationResult:
    return MigrationResult.build(
        migration_id="001_x",
        dag_run_id="manual__1",
        strategy="rolling",
        targets=targets,
        statuses=statuses,
        **kwargs,  # type: ignore[arg-type]
    )


def test_shards_never_reported_are_pending_and_order_follows_targets() -> None:
    result = build(
        ["s-2", "s-0", "s-1", "s-3"],
        [
            ShardStatus("s-1", Outcome.FAILED, 5, "shardmigrate.migration_failed", "boom"),
            ShardStatus("s-2", Outcome.SUCCEEDED, 3),
        ],
    )
    assert list(result.shards) == ["s-2", "s-0", "s-1", "s-3"]
    assert result.shards["s-0"] == ShardStatus("s-0", Outcome.PENDING)
    assert result.shards["s-3"].outcome is Outcome.PENDING
    assert result.shards["s-1"].error_message == "boom"
    assert (result.succeeded_count, result.failed_count, result.pending_count, result.rolled_back_count) == (1, 1, 2, 0)
    assert result.all_succeeded is False


def test_statuses_match_targets_case_insensitively_and_extras_are_ignored() -> None:
    result = build(
        ["Shard-A", "shard-b"],
        [
            ShardStatus("shard-a", Outcome.SUCCEEDED),
            ShardStatus("SHARD-B", Outcome.ALREADY_APPLIED),
            ShardStatus("stranger", Outcome.FAILED),
        ],
    )
    assert list(result.shards) == ["Shard-A", "shard-b"]
    assert result.shards["Shard-A"].outcome is Outcome.SUCCEEDED
    assert result.failed_count == 0
    assert result.all_succeeded is True


@pytest.mark.parametrize(
    ("outcomes", "expected"),
    [
        ([Outcome.SUCCEEDED, Outcome.SUCCEEDED], True),
        ([Outcome.SUCCEEDED, Outcome.ALREADY_APPLIED], True),  # already_applied counts as success
        ([Outcome.ALREADY_APPLIED], True),
        ([Outcome.WOULD_APPLY, Outcome.ALREADY_APPLIED], True),  # a clean dry run
        ([Outcome.SUCCEEDED, Outcome.FAILED], False),
        ([Outcome.SUCCEEDED, Outcome.PENDING], False),
        ([Outcome.SUCCEEDED, Outcome.ROLLED_BACK], False),  # rolled back after a failure elsewhere
    ],
)
def test_all_succeeded_rules_for_a_rollout(outcomes: list[Outcome], expected: bool) -> None:
    targets = [f"s-{i}" for i in range(len(outcomes))]
    result = build(targets, [ShardStatus(t, o) for t, o in zip(targets, outcomes, strict=True)])
    assert result.all_succeeded is expected


@pytest.mark.parametrize(
    ("outcomes", "expected"),
    [
        ([Outcome.ROLLED_BACK, Outcome.ROLLED_BACK], True),
        ([Outcome.ROLLED_BACK, Outcome.ALREADY_APPLIED], True),  # nothing to undo there
        ([Outcome.ROLLED_BACK, Outcome.FAILED], False),
    ],
)
def test_all_succeeded_rules_for_a_rollback(outcomes: list[Outcome], expected: bool) -> None:
    targets = [f"s-{i}" for i in range(len(outcomes))]
    statuses = [ShardStatus(t, o) for t, o in zip(targets, outcomes, strict=True)]
    assert build(targets, statuses, success=ROLLBACK_SUCCESS).all_succeeded is expected
    assert build(targets, statuses).all_succeeded is False  # with rollout rules a rolled-back shard is not success


def test_no_targets_is_not_success() -> None:
    assert build([], []).all_succeeded is False


def test_counts() -> None:
    outcomes = [
        Outcome.SUCCEEDED,
        Outcome.ALREADY_APPLIED,
        Outcome.WOULD_APPLY,
        Outcome.FAILED,
        Outcome.FAILED,
        Outcome.ROLLED_BACK,
    ]
    targets = [f"s-{i}" for i in range(len(outcomes) + 3)]  # three never reported
    result = build(targets, [ShardStatus(t, o) for t, o in zip(targets, outcomes, strict=False)])
    assert result.succeeded_count == 3
    assert result.failed_count == 2
    assert result.rolled_back_count == 1
    assert result.pending_count == 3
    assert result.count(Outcome.FAILED, Outcome.PENDING) == 5


def test_result_xcom_exact_keys_and_round_trip() -> None:
    result = build(
        ["s-0", "s-1", "s-2"],
        [
            ShardStatus("s-0", Outcome.SUCCEEDED, 10),
            ShardStatus("s-1", Outcome.FAILED, 20, "shardmigrate.migration_timeout", "timed out"),
        ],
        total_duration_ms=99,
    )
    data = result.to_xcom()
    assert set(data) == RESULT_KEYS
    assert data["migration_id"] == "001_x"
    assert data["dag_run_id"] == "manual__1"
    assert data["strategy"] == "rolling"
    assert data["all_succeeded"] is False
    assert (data["succeeded_count"], data["failed_count"], data["pending_count"], data["rolled_back_count"]) == (
        1,
        1,
        1,
        0,
    )
    assert data["total_duration_ms"] == 99
    assert list(data["shards"]) == ["s-0", "s-1", "s-2"]
    assert all(set(shard) == SHARD_KEYS for shard in data["shards"].values())
    assert data["shards"]["s-2"]["outcome"] == "pending"
    assert data["shards"]["s-1"]["error_code"] == "shardmigrate.migration_timeout"
    wire = json.loads(json.dumps(data))
    assert wire == data
    assert MigrationResult.from_xcom(wire) == result
    assert MigrationResult.from_xcom(wire).to_xcom() == data


# --- MigrationProgress ------------------------------------------------------------------------------------


def fleet(n: int) -> list[Shard]:
    return [Shard(f"shard-{i}", f"c{i}") for i in range(n)]


def progress(
    strategy: Strategy, n: int, outcomes: dict[str, Outcome], running: tuple[str, ...] = (), **kwargs: object
) -> MigrationProgress:
    plan = plan_rollout(fleet(n), MigrationOptions(strategy=strategy, max_parallelism=2))
    return MigrationProgress.compute(
        migration_id="001_x",
        run_id="r1",
        plan=plan,
        outcomes=outcomes,
        running=running,
        **kwargs,  # type: ignore[arg-type]
    )


def test_progress_before_anything_ran() -> None:
    p = progress(Strategy.PARALLEL, 4, {})
    assert p.total_shards == 4
    assert (p.completed_shards, p.failed_shards, p.stopped_shards, p.running_shards) == (0, 0, 0, 0)
    assert p.remaining_shards == 4
    assert p.is_finished is False
    assert p.current_phase == "Parallel"
    assert dict(p.per_shard) == {f"shard-{i}": "waiting" for i in range(4)}


def test_progress_counts_and_per_shard_states() -> None:
    p = progress(
        Strategy.PARALLEL,
        6,
        {
            "SHARD-0": Outcome.SUCCEEDED,
            "shard-1": Outcome.ALREADY_APPLIED,
            "shard-2": Outcome.FAILED,
            "shard-3": Outcome.PENDING,
        },
        running=("Shard-4",),
    )
    assert p.per_shard == {
        "shard-0": "succeeded",
        "shard-1": "already_applied",
        "shard-2": "failed",
        "shard-3": "pending",
        "shard-4": "running",
        "shard-5": "waiting",
    }
    assert p.completed_shards == 2
    assert p.failed_shards == 1
    assert p.stopped_shards == 1
    assert p.running_shards == 1
    assert p.remaining_shards == 2
    assert p.is_finished is False


def test_rolled_back_and_would_apply_count_as_completed() -> None:
    p = progress(Strategy.PARALLEL, 2, {"shard-0": Outcome.ROLLED_BACK, "shard-1": Outcome.WOULD_APPLY})
    assert p.completed_shards == 2
    assert p.remaining_shards == 0
    # every shard is done, but the run (auto-rollback, report) is not: only the run's end finishes it
    assert p.is_finished is False


@pytest.mark.parametrize(
    ("strategy", "done", "phase"),
    [
        (Strategy.CANARY_FIRST, {}, "Canary"),
        (Strategy.CANARY_FIRST, {"shard-0": Outcome.SUCCEEDED}, "Parallel"),
        (Strategy.ROLLING, {}, "RollingBatch1"),
        (Strategy.ROLLING, {"shard-0": Outcome.SUCCEEDED}, "RollingBatch1"),
        (Strategy.ROLLING, {"shard-0": Outcome.SUCCEEDED, "shard-1": Outcome.FAILED}, "RollingBatch2"),
        (Strategy.ROLLING, {f"shard-{i}": Outcome.SUCCEEDED for i in range(4)}, "RollingBatch3"),
        (Strategy.SEQUENTIAL, {}, "Sequential:shard-0"),
        (Strategy.SEQUENTIAL, {"shard-0": Outcome.SUCCEEDED, "shard-1": Outcome.SUCCEEDED}, "Sequential:shard-2"),
        (Strategy.PARALLEL, {"shard-3": Outcome.SUCCEEDED}, "Parallel"),
    ],
)
def test_progress_phase(strategy: Strategy, done: dict[str, Outcome], phase: str) -> None:
    assert progress(strategy, 5, done).current_phase == phase


def test_phase_completed_when_the_run_finished() -> None:
    p = progress(Strategy.ROLLING, 3, {"shard-0": Outcome.FAILED}, run_finished=True)
    assert p.current_phase == "Completed"
    assert p.is_finished is True  # the run is over even though shards never ran
    assert p.remaining_shards == 2


def test_phase_while_rolling_back_and_finishing() -> None:
    done = {f"shard-{i}": Outcome.SUCCEEDED for i in range(3)}
    assert progress(Strategy.PARALLEL, 3, done, rolling_back=True).current_phase == "RollingBack"
    assert progress(Strategy.PARALLEL, 3, done).current_phase == "Finishing"  # shards done, report still to run


def test_progress_to_dict() -> None:
    p = progress(Strategy.CANARY_FIRST, 3, {"shard-0": Outcome.SUCCEEDED}, running=("shard-1",))
    data = p.to_dict()
    assert data == {
        "migration_id": "001_x",
        "run_id": "r1",
        "phase": "Parallel",
        "total_shards": 3,
        "completed_shards": 1,
        "failed_shards": 0,
        "stopped_shards": 0,
        "running_shards": 1,
        "remaining_shards": 2,
        "is_finished": False,
        "shards": {"shard-0": "succeeded", "shard-1": "running", "shard-2": "waiting"},
    }
    assert json.loads(json.dumps(data)) == data


def test_progress_ignores_shards_outside_the_plan() -> None:
    p = progress(Strategy.PARALLEL, 2, {"other": Outcome.FAILED}, running=("ghost",))
    assert p.total_shards == 2
    assert p.failed_shards == 0 and p.running_shards == 0
    assert set(p.per_shard) == {"shard-0", "shard-1"}


@pytest.mark.parametrize(
    "text", ["x://" * 2500 + "@", "x://u:" * 2000 + "@", "a.b-" * 5000 + "@", "u:p@" * 5000, "password='" * 5000]
)
def test_redact_stays_fast_on_pathological_input(text: str) -> None:
    import time

    started = time.perf_counter()
    assert "***" in redact(text) or "password" not in text
    assert time.perf_counter() - started < 1.0
