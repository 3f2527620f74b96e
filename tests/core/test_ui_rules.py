"""Pure rules behind the UI items: the rollback selection, the canary approval options and the halting reason
of a rejected or unanswered approval."""

from __future__ import annotations

import pytest

from airflow_provider_shardmigrate.core.approval import ApprovalDecision
from airflow_provider_shardmigrate.core.errors import InvalidParamsError
from airflow_provider_shardmigrate.core.options import DEFAULT_APPROVAL_TIMEOUT, parse_options
from airflow_provider_shardmigrate.core.outcomes import HaltPolicy, RunKind, assemble_result, halted_reason
from airflow_provider_shardmigrate.core.selection import check_selection, selects
from airflow_provider_shardmigrate.core.status import Outcome, ShardStatus

IDS = ["Shard-A", "shard-b", "old-c"]


@pytest.mark.parametrize("selection", [[], None, ["  "]])
def test_an_empty_selection_is_refused(selection):
    with pytest.raises(InvalidParamsError, match="selects no shard, so nothing was rolled back"):
        check_selection(selection, IDS)


def test_selection_matches_case_insensitively_and_names_unknown_ids():
    assert check_selection(["SHARD-B", "shard-a"], IDS) == ["Shard-A", "shard-b"]  # topology spelling and order
    assert check_selection(["All"], IDS) == []
    with pytest.raises(InvalidParamsError, match=r"not in the topology: 'nope', 'zz'") as raised:
        check_selection(["zz", "shard-a", "nope"], IDS)
    assert raised.value.code.value == "shardmigrate.invalid_params"
    with pytest.raises(InvalidParamsError, match="must be a list"):
        check_selection("shard-a", IDS)


def test_all_covers_active_shards_only():
    assert selects(["ALL"], "shard-b", in_all=True)
    assert not selects(["all"], "old-c", in_all=False)
    assert selects(["all", "OLD-C"], "old-c", in_all=False)
    assert not selects(["shard-a"], "shard-b", in_all=True)


def test_canary_approval_options_are_validated_by_field():
    options, problems = parse_options(
        {"strategy": "canary_first", "canary_approval": True, "canary_approval_timeout": 600}, "m.yaml"
    )
    assert problems == [] and options.canary_approval and options.canary_approval_timeout == 600.0
    assert parse_options({}, "m.yaml")[0].canary_approval_timeout == DEFAULT_APPROVAL_TIMEOUT
    _, problems = parse_options({"strategy": "rolling", "canary_approval": True}, "m.yaml")
    assert [(p.field, p.message) for p in problems] == [
        ("canary_approval", "needs strategy canary_first (the approval follows the canary), not rolling")
    ]
    _, problems = parse_options(
        {"strategy": "canary_first", "canary_approval": "yes", "canary_approval_timeout": 0}, "m.yaml"
    )
    fields = {p.field: p.message for p in problems}
    assert fields["canary_approval"].startswith("must be true or false")
    assert fields["canary_approval_timeout"].startswith("must be a positive number of seconds")
    _, problems = parse_options({"canary_approval_timeout": 60}, "m.yaml")
    assert [p.field for p in problems] == ["canary_approval_timeout"]
    assert "m.yaml: field 'canary_approval_timeout': only applies with canary_approval: true" in str(problems[0])


def _shards() -> dict[str, ShardStatus]:
    return {"c": ShardStatus("c", Outcome.SUCCEEDED), "r": ShardStatus("r", Outcome.PENDING)}


def test_a_rejected_approval_is_the_halting_reason_with_approver_and_comment():
    rejected = ApprovalDecision(False, "bob", "error rate up\nsecond line")
    assert halted_reason(_shards(), policy=HaltPolicy(), canary="c", approval=rejected) == (
        "canary approval rejected by bob: error rate up; the other shards were not started"
    )
    silent = ApprovalDecision(False, None, "", timed_out=True, timeout_s=3600)
    assert halted_reason(_shards(), policy=HaltPolicy(), canary="c", approval=silent) == (
        "canary approval got no answer within 3600 s (a timeout counts as a reject); the other shards were not started"
    )
    approved = ApprovalDecision(True, "alice")
    assert halted_reason(_shards(), policy=HaltPolicy(), canary="c", approval=approved) == "1 shard(s) not started"


def test_assemble_result_carries_the_approval_into_the_report():
    result = assemble_result(
        kind=RunKind.ROLLOUT,
        migration_id="m",
        dag_run_id="r1",
        strategy="canary_first",
        targets=["c", "r"],
        reported=[ShardStatus("c", Outcome.SUCCEEDED)],
        canary="c",
        approval=ApprovalDecision(False, "bob", "no"),
    )
    assert not result.all_succeeded
    assert result.shards["r"].outcome is Outcome.PENDING
    assert result.to_xcom()["halted_reason"] == "canary approval rejected by bob: no; the other shards were not started"


def test_approval_decision_round_trip():
    decision = ApprovalDecision(False, "bob", "x" * 900, timed_out=False, timeout_s=5, responded_at="2026-01-01T00:00Z")
    again = ApprovalDecision.from_xcom(decision.to_xcom())
    assert again is not None and again.by == "bob" and len(again.comment) == 500 and again.timeout_s == 5
    assert ApprovalDecision.from_xcom({"chosen_options": ["Approve"]}) is None
