"""The one place outcomes get their meaning: results, rollback merging, halting, the gate, progress."""

from __future__ import annotations

import json

import pytest

from airflow_provider_shardmigrate.core.options import MigrationOptions, Strategy
from airflow_provider_shardmigrate.core.outcomes import (
    AT_MIGRATION,
    HaltPolicy,
    RunKind,
    assemble_result,
    canary_cleared,
    compute_progress,
    gate_failure,
    merge_rollback,
    more_telling,
    shards_to_roll_back,
    stops_followers,
)
from airflow_provider_shardmigrate.core.plans import RolloutPlan, plan_rollout
from airflow_provider_shardmigrate.core.status import MigrationResult, Outcome, Refusal, ShardStatus
from airflow_provider_shardmigrate.core.topology import Shard

SHARD_KEYS = {"shard_id", "outcome", "duration_ms", "error_code", "error_message"}
RESULT_KEYS = [
    "migration_id",
    "dag_run_id",
    "strategy",
    "all_succeeded",
    "succeeded_count",
    "failed_count",
    "pending_count",
    "rolled_back_count",
    "outcome_counts",
    "halted_reason",
    "refused",
    "total_duration_ms",
    "shards",
]
FAILED = "shardmigrate.migration_failed"


def build(targets: list[str], statuses: list[ShardStatus], **kwargs: object) -> MigrationResult:
    options: dict[str, object] = {"kind": RunKind.ROLLOUT, **kwargs}
    return assemble_result(
        migration_id="001_x",
        dag_run_id="manual__1",
        strategy="rolling",
        targets=targets,
        reported=statuses,
        **options,  # type: ignore[arg-type]
    )


def statuses(targets: list[str], outcomes: list[Outcome]) -> list[ShardStatus]:
    return [ShardStatus(t, o) for t, o in zip(targets, outcomes, strict=True)]


# --- assembling a result ------------------------------------------------------------------------------------


def test_shards_never_reported_are_pending_and_order_follows_targets() -> None:
    result = build(
        ["s-2", "s-0", "s-1", "s-3"],
        [ShardStatus("s-1", Outcome.FAILED, 5, FAILED, "boom"), ShardStatus("s-2", Outcome.SUCCEEDED, 3)],
    )
    assert list(result.shards) == ["s-2", "s-0", "s-1", "s-3"]
    assert result.shards["s-0"] == ShardStatus("s-0", Outcome.PENDING)
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
    assert result.failed_count == 0 and result.all_succeeded is True


@pytest.mark.parametrize(
    ("outcomes", "expected"),
    [
        ([Outcome.SUCCEEDED, Outcome.SUCCEEDED], True),
        ([Outcome.SUCCEEDED, Outcome.ALREADY_APPLIED], True),
        ([Outcome.WOULD_APPLY, Outcome.ALREADY_APPLIED], True),  # a clean dry run
        ([Outcome.SUCCEEDED, Outcome.FAILED], False),
        ([Outcome.SUCCEEDED, Outcome.PENDING], False),
        ([Outcome.SUCCEEDED, Outcome.ROLLED_BACK], False),  # rolled back after a failure elsewhere
    ],
)
def test_rollout_success(outcomes: list[Outcome], expected: bool) -> None:
    targets = [f"s-{i}" for i in range(len(outcomes))]
    assert build(targets, statuses(targets, outcomes)).all_succeeded is expected


@pytest.mark.parametrize(
    ("outcomes", "expected"),
    [
        ([Outcome.ROLLED_BACK, Outcome.ROLLED_BACK], True),
        ([Outcome.ROLLED_BACK, Outcome.NOT_APPLIED, Outcome.NOT_SELECTED], True),
        ([Outcome.WOULD_ROLL_BACK, Outcome.NOT_APPLIED], True),
        ([Outcome.ROLLED_BACK, Outcome.FAILED], False),
        ([Outcome.ROLLED_BACK, Outcome.PENDING], False),  # a shard that never ran did not roll back
    ],
)
def test_rollback_success(outcomes: list[Outcome], expected: bool) -> None:
    targets = [f"s-{i}" for i in range(len(outcomes))]
    assert build(targets, statuses(targets, outcomes), kind=RunKind.ROLLBACK).all_succeeded is expected
    assert build(targets, statuses(targets, outcomes)).all_succeeded is False  # never a rollout success


def test_unreported_rollback_shard_is_failed_unless_the_run_was_refused() -> None:
    result = build(["a", "b"], [ShardStatus("a", Outcome.ROLLED_BACK)], kind=RunKind.ROLLBACK)
    assert result.shards["b"].outcome is Outcome.FAILED
    assert result.shards["b"].error_code == "shardmigrate.rollback_failed"
    refused = build(["a", "b"], [], kind=RunKind.ROLLBACK, refused=Refusal("shardmigrate.invalid_params", "dryrun"))
    assert {s.outcome for s in refused.shards.values()} == {Outcome.PENDING}
    assert refused.all_succeeded is False


def test_no_targets_is_not_success() -> None:
    assert build([], []).all_succeeded is False


def test_a_lost_task_is_failed_not_pending() -> None:
    result = build(["a", "b", "c"], [ShardStatus("a", Outcome.SUCCEEDED)], lost=["b"])
    assert result.shards["b"].outcome is Outcome.FAILED and result.shards["b"].error_code == FAILED
    assert "without reporting" in (result.shards["b"].error_message or "")
    assert result.shards["c"].outcome is Outcome.PENDING
    # a shard that did report is never overridden by a lost task
    assert build(["a"], [ShardStatus("a", Outcome.SUCCEEDED)], lost=["a"]).shards["a"].outcome is Outcome.SUCCEEDED


def test_a_refused_run_says_so_and_is_not_a_success() -> None:
    refusal = Refusal("shardmigrate.drift_detected", "table 'customers': s1 differs from s0\nmore")
    result = build(["s0", "s1"], [], refused=refusal)
    assert result.all_succeeded is False and result.refused == refusal
    assert result.halted_reason == (
        "refused before any shard started: [shardmigrate.drift_detected] table 'customers': s1 differs from s0"
    )


def test_counts_and_xcom_shape() -> None:
    outcomes = [Outcome.SUCCEEDED, Outcome.ALREADY_APPLIED, Outcome.FAILED, Outcome.ROLLED_BACK]
    targets = [f"s-{i}" for i in range(6)]
    result = build(targets, statuses(targets[:4], outcomes), total_duration_ms=99)
    data = result.to_xcom()
    assert list(data) == RESULT_KEYS  # the summary first, the per-shard map last
    assert (data["succeeded_count"], data["failed_count"], data["pending_count"], data["rolled_back_count"]) == (
        2,
        1,
        2,
        1,
    )
    assert data["outcome_counts"] == {"succeeded": 1, "already_applied": 1, "failed": 1, "rolled_back": 1, "pending": 2}
    assert all(set(shard) == SHARD_KEYS for shard in data["shards"].values())
    wire = json.loads(json.dumps(data))
    assert MigrationResult.from_xcom(wire) == result
    assert MigrationResult.from_xcom(wire).to_xcom() == data


def test_duplicate_reports_keep_what_the_shard_is_now() -> None:
    result = build(["a"], [ShardStatus("a", Outcome.FAILED, 1, FAILED, "x"), ShardStatus("a", Outcome.SUCCEEDED)])
    assert result.shards["a"].outcome is Outcome.SUCCEEDED
    later = ShardStatus("a", Outcome.ALREADY_APPLIED)
    assert more_telling(later, ShardStatus("a", Outcome.SUCCEEDED)).outcome is Outcome.SUCCEEDED


# --- rollback -----------------------------------------------------------------------------------------------


def test_merge_rollback() -> None:
    applied = ShardStatus("a", Outcome.SUCCEEDED, 10)
    assert merge_rollback(applied, ShardStatus("a", Outcome.ROLLED_BACK, 5)) == ShardStatus(
        "a", Outcome.ROLLED_BACK, 15
    )
    failed = merge_rollback(applied, ShardStatus("a", Outcome.FAILED, 5, "shardmigrate.rollback_failed", "boom"))
    assert failed.outcome is Outcome.SUCCEEDED  # the shard still holds the migration
    assert failed.error_code == "shardmigrate.rollback_failed" and failed.error_message == "rollback failed: boom"
    assert merge_rollback(None, ShardStatus("a", Outcome.ROLLED_BACK)).outcome is Outcome.ROLLED_BACK


def test_auto_rollback_result_merges_into_the_report() -> None:
    result = build(
        ["a", "b", "c"],
        [ShardStatus("a", Outcome.SUCCEEDED, 1), ShardStatus("b", Outcome.FAILED, 1, FAILED, "x")],
        rollbacks=[ShardStatus("a", Outcome.ROLLED_BACK, 2)],
    )
    assert result.shards["a"] == ShardStatus("a", Outcome.ROLLED_BACK, 3)
    assert (result.rolled_back_count, result.succeeded_count) == (1, 0)


def test_which_shards_auto_rollback_undoes() -> None:
    targets = ["a", "b", "c", "d"]
    mixed = [
        ShardStatus("a", Outcome.SUCCEEDED),
        ShardStatus("b", Outcome.ALREADY_APPLIED),  # applied by an earlier run: left alone
        ShardStatus("c", Outcome.FAILED),
    ]
    assert shards_to_roll_back(targets, mixed) == ["a"]
    everything = statuses(targets, [Outcome.SUCCEEDED, Outcome.ALREADY_APPLIED, Outcome.SUCCEEDED, Outcome.SUCCEEDED])
    assert shards_to_roll_back(targets, everything) == []  # the run succeeded: nothing to undo
    assert shards_to_roll_back(targets, everything[:3]) == ["a", "c"]  # d never reported: not a success


# --- halting, gates ---------------------------------------------------------------------------------------------


def test_halted_reason_names_the_policy_and_the_failed_shards() -> None:
    result = build(
        ["a", "b", "c"],
        [ShardStatus("a", Outcome.FAILED, 0, FAILED, "x")],
        policy=HaltPolicy.from_options(stop_on_first_failure=True),
    )
    assert result.halted_reason == ("stop_on_first_failure (max_failed_shards 0): 1 shard(s) failed (a); 2 not started")
    assert build(["a"], [ShardStatus("a", Outcome.SUCCEEDED)]).halted_reason is None
    canary = build(["c", "x"], [ShardStatus("c", Outcome.FAILED)], canary="c")
    assert canary.halted_reason == "canary c did not reach the migration; the other shards were not started"
    gate = build(["c", "x"], [ShardStatus("c", Outcome.SUCCEEDED)], canary="c", gate="canary gate: [code] why")
    assert gate.halted_reason == "canary gate: [code] why"


def test_halt_policy() -> None:
    assert HaltPolicy(0).exceeded(1) and not HaltPolicy(0).exceeded(0)
    assert HaltPolicy(2).exceeded(3) and not HaltPolicy(2).exceeded(2)
    assert not HaltPolicy(None).exceeded(10_000)


@pytest.mark.parametrize(
    ("stop", "max_failed", "ratio", "targets", "expected"),
    [
        (True, None, None, 10, 0),  # stop_on_first_failure is max_failed_shards: 0
        (False, None, None, 10, None),
        (False, 3, None, 10, 3),
        (False, None, 0.25, 10, 2),  # a 3rd failure passes 25 % of 10
        (False, None, 0.3, 10, 3),  # 0.3 * 10 is 3 despite floating point
        (False, None, 1.0, 10, 10),  # never exceeded
        (False, 5, 0.1, 10, 1),  # the tightest wins
        (True, 5, 0.5, 10, 0),
    ],
)
def test_halt_policy_from_limits(stop, max_failed, ratio, targets, expected) -> None:
    policy = HaltPolicy.from_limits(
        stop_on_first_failure=stop, max_failed_shards=max_failed, max_failure_ratio=ratio, targets=targets
    )
    assert policy.max_failed == expected


def test_gate_failure_names_every_failed_shard_with_code_and_first_line() -> None:
    result = build(
        ["a", "b", "c"],
        [
            ShardStatus("a", Outcome.SUCCEEDED),
            ShardStatus("b", Outcome.FAILED, 0, FAILED, "UNIQUE constraint failed: customers.email\ndetail"),
            ShardStatus("c", Outcome.FAILED, 0, "shardmigrate.migration_timeout", "per_shard_timeout of 5s exceeded"),
        ],
    )
    message = gate_failure(result)
    assert message is not None
    assert "1 at the migration, 2 failed" in message
    assert "- b: failed [shardmigrate.migration_failed] UNIQUE constraint failed: customers.email" in message
    assert "detail" not in message
    assert "- c: failed [shardmigrate.migration_timeout] per_shard_timeout of 5s exceeded" in message
    assert gate_failure(build(["a"], [ShardStatus("a", Outcome.SUCCEEDED)])) is None


def test_gate_failure_names_a_failed_rollback_and_bounds_its_length() -> None:
    rolled = [ShardStatus("a", Outcome.FAILED, 0, "shardmigrate.rollback_failed", "down failed")]
    result = build(
        ["a", "b"], [ShardStatus("a", Outcome.SUCCEEDED), ShardStatus("b", Outcome.FAILED)], rollbacks=rolled
    )
    assert "- a: succeeded [shardmigrate.rollback_failed] rollback failed: down failed" in str(gate_failure(result))
    many = [f"s{i}" for i in range(120)]
    message = gate_failure(build(many, [ShardStatus(s, Outcome.FAILED, 0, FAILED, "x") for s in many]))
    assert message is not None and "and 70 more failed shard(s)" in message and message.count("\n- ") == 51


def test_followers_and_the_canary() -> None:
    assert stops_followers(ShardStatus("a", Outcome.PENDING))
    assert not stops_followers(ShardStatus("a", Outcome.FAILED))  # a failure counts against the threshold
    assert not stops_followers(ShardStatus("a", Outcome.ALREADY_APPLIED))
    assert all(canary_cleared(ShardStatus("c", o)) for o in AT_MIGRATION)
    assert not canary_cleared(ShardStatus("c", Outcome.FAILED)) and not canary_cleared(None)


# --- progress -----------------------------------------------------------------------------------------------


def fleet(n: int) -> list[Shard]:
    return [Shard(f"shard-{i}", f"c{i}") for i in range(n)]


def progress(strategy: Strategy, n: int, outcomes: dict[str, Outcome], running: tuple[str, ...] = (), **kw: object):
    plan = plan_rollout(fleet(n), MigrationOptions(strategy=strategy, max_parallelism=2))
    return compute_progress(migration_id="001_x", run_id="r1", plan=plan, outcomes=outcomes, running=running, **kw)  # type: ignore[arg-type]


def test_progress_before_the_plan_is_published() -> None:
    p = compute_progress(migration_id="m", run_id="r", plan=None, outcomes={})
    assert (p.total_shards, p.current_phase, p.is_finished) == (0, "Preparing", False)


def test_progress_counts_and_per_shard_states() -> None:
    p = progress(
        Strategy.PARALLEL,
        7,
        {
            "SHARD-0": Outcome.SUCCEEDED,
            "shard-1": Outcome.ALREADY_APPLIED,
            "shard-2": Outcome.FAILED,
            "shard-3": Outcome.PENDING,
            "shard-6": Outcome.ROLLED_BACK,
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
        "shard-6": "rolled_back",
    }
    assert (p.completed_shards, p.failed_shards, p.stopped_shards, p.running_shards) == (2, 1, 1, 1)
    assert p.rolled_back_shards == 1  # apart from the shards at the migration
    assert p.remaining_shards == 2 and p.is_finished is False


@pytest.mark.parametrize(
    ("strategy", "done", "phase"),
    [
        (Strategy.CANARY_FIRST, {}, "Canary"),
        (Strategy.CANARY_FIRST, {"shard-0": Outcome.SUCCEEDED}, "Parallel"),
        (Strategy.ROLLING, {}, "RollingBatch1"),
        (Strategy.ROLLING, {"shard-0": Outcome.SUCCEEDED, "shard-1": Outcome.FAILED}, "RollingBatch2"),
        (Strategy.SEQUENTIAL, {"shard-0": Outcome.SUCCEEDED, "shard-1": Outcome.SUCCEEDED}, "Sequential:shard-2"),
        (Strategy.PARALLEL, {f"shard-{i}": Outcome.SUCCEEDED for i in range(5)}, "Finishing"),
    ],
)
def test_progress_phase(strategy: Strategy, done: dict[str, Outcome], phase: str) -> None:
    assert progress(strategy, 5, done).current_phase == phase


@pytest.mark.parametrize(
    ("run_state", "done", "refused", "phase"),
    [
        ("success", {"shard-0": Outcome.SUCCEEDED}, False, "Completed"),
        ("failed", {"shard-0": Outcome.ROLLED_BACK, "shard-1": Outcome.FAILED}, False, "RolledBack"),
        ("failed", {"shard-1": Outcome.FAILED}, False, "Failed"),
        ("failed", {}, True, "Refused"),
    ],
)
def test_final_phase_says_how_the_run_ended(run_state, done, refused, phase) -> None:
    p = progress(Strategy.PARALLEL, 2, done, run_state=run_state, refused=refused)
    assert p.current_phase == phase and p.is_finished is True


def test_rolling_back_phase_and_dict() -> None:
    done = {f"shard-{i}": Outcome.SUCCEEDED for i in range(3)}
    assert progress(Strategy.PARALLEL, 3, done, rolling_back=True).current_phase == "RollingBack"
    data = progress(Strategy.CANARY_FIRST, 3, {"shard-0": Outcome.SUCCEEDED}, running=("shard-1",)).to_dict()
    assert data["rolled_back_shards"] == 0 and data["remaining_shards"] == 2
    assert data["shards"] == {"shard-0": "succeeded", "shard-1": "running", "shard-2": "waiting"}
    assert json.loads(json.dumps(data)) == data


def test_plan_round_trips_through_its_published_form() -> None:
    plan = plan_rollout(fleet(5), MigrationOptions(strategy=Strategy.ROLLING, max_parallelism=2))
    again = RolloutPlan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert again.to_dict() == plan.to_dict()
    assert [w.concurrency for w in again.waves] == [2, 2, 1]


# -- migration order ---------------------------------------------------------------------------------------

OUT_OF_ORDER = "shardmigrate.out_of_order"


def refused_for_order(shard_id: str, missing: str = "001_a (not_applied)") -> ShardStatus:
    return ShardStatus(shard_id, Outcome.FAILED, 3, OUT_OF_ORDER, f"migration '002_b' is out of order: needs {missing}")


def test_a_rollout_every_started_shard_refused_for_its_order_is_refused_with_that_code() -> None:
    result = assemble_result(
        kind=RunKind.ROLLOUT,
        migration_id="002_b",
        dag_run_id="r",
        strategy="sequential",
        targets=["s0", "s1", "s2"],
        reported=[refused_for_order("s0")],  # stop_on_first_failure left s1, s2 pending
        policy=HaltPolicy(0),
    )
    assert result.refused is not None and result.refused.code == OUT_OF_ORDER
    assert "001_a" in result.refused.reason and "1 shard(s) refused it, 2 not started" in result.refused.reason
    assert not result.all_succeeded and result.failed_count == 1 and result.pending_count == 2
    assert result.halted_reason is not None and result.halted_reason.startswith("stop_on_first_failure")
    failure = gate_failure(result)
    assert failure is not None and f"refused: [{OUT_OF_ORDER}]" in failure
    assert json.loads(json.dumps(result.to_xcom()))["refused"]["code"] == OUT_OF_ORDER


def test_different_missing_migrations_are_still_one_refusal() -> None:
    result = assemble_result(
        kind=RunKind.ROLLOUT,
        migration_id="002_b",
        dag_run_id="r",
        strategy="parallel",
        targets=["s0", "s1"],
        reported=[refused_for_order("s0"), refused_for_order("s1", "001_a (rolled_back)")],
    )
    assert result.refused is not None and "2 shard(s) refused it, nothing was applied" in result.refused.reason
    assert "1 other reason(s)" in result.refused.reason


@pytest.mark.parametrize(
    "other",
    [
        ShardStatus("s1", Outcome.SUCCEEDED),
        ShardStatus("s1", Outcome.ALREADY_APPLIED),
        ShardStatus("s1", Outcome.FAILED, 1, "shardmigrate.migration_failed", "boom"),
    ],
    ids=["applied", "already", "failed otherwise"],
)
def test_no_refusal_when_any_shard_did_something_else(other: ShardStatus) -> None:
    result = assemble_result(
        kind=RunKind.ROLLOUT,
        migration_id="002_b",
        dag_run_id="r",
        strategy="parallel",
        targets=["s0", "s1"],
        reported=[refused_for_order("s0"), other],
    )
    assert result.refused is None


def test_catchup_runs_succeed_with_unselected_shards_and_fail_with_a_failed_one() -> None:
    ok = assemble_result(
        kind=RunKind.CATCHUP,
        migration_id="004_d",
        dag_run_id="r",
        strategy="catchup",
        targets=["s0", "s1", "s2", "s3"],
        reported=[
            ShardStatus("s0", Outcome.SUCCEEDED),
            ShardStatus("s1", Outcome.ALREADY_APPLIED),
            ShardStatus("s2", Outcome.NOT_SELECTED),
            ShardStatus("s3", Outcome.WOULD_APPLY),
        ],
    )
    assert ok.all_succeeded and gate_failure(ok) is None
    failed = assemble_result(
        kind=RunKind.CATCHUP,
        migration_id="004_d",
        dag_run_id="r",
        strategy="catchup",
        targets=["s0", "s1"],
        reported=[ShardStatus("s0", Outcome.SUCCEEDED), refused_for_order("s1")],
    )
    assert not failed.all_succeeded and failed.refused is None  # only a rollout is refused for its order
    missing = assemble_result(
        kind=RunKind.CATCHUP, migration_id="x", dag_run_id="r", strategy="catchup", targets=["s0"], reported=[]
    )
    assert missing.shards["s0"].outcome is Outcome.PENDING and not missing.all_succeeded


def test_awaiting_approval_phase_until_the_run_is_over() -> None:
    canary_done = {"shard-0": Outcome.SUCCEEDED}
    waiting = progress(Strategy.CANARY_FIRST, 4, canary_done, awaiting_approval=True)
    assert (waiting.current_phase, waiting.completed_shards) == ("AwaitingApproval", 1)
    assert progress(Strategy.CANARY_FIRST, 4, canary_done).current_phase == "Parallel"
    over = progress(Strategy.CANARY_FIRST, 4, canary_done, awaiting_approval=True, run_state="failed")
    assert over.current_phase == "Failed"
