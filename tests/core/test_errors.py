"""Error codes (docs/contracts.md) and the exceptions that carry them."""

from __future__ import annotations

import pytest

from airflow_provider_shardmigrate.core import errors
from airflow_provider_shardmigrate.core.errors import ErrorCode, Problem, ShardMigrateError, raise_if_problems

EXPECTED = {
    "shardmigrate.migration_failed",
    "shardmigrate.migration_timeout",
    "shardmigrate.rollback_failed",
    "shardmigrate.drift_detected",
    "shardmigrate.invalid_script",
    "shardmigrate.schema_comparison_failed",
    "shardmigrate.migration_not_found",
    "shardmigrate.invalid_topology",
    "shardmigrate.lock_timeout",
    "shardmigrate.invalid_params",
    "shardmigrate.out_of_order",
}


def test_codes_are_exactly_the_stable_design_codes() -> None:
    assert {code.value for code in ErrorCode} == EXPECTED
    assert ErrorCode.INVALID_SCRIPT == "shardmigrate.invalid_script"  # StrEnum compares as text


@pytest.mark.parametrize(
    ("cls", "code"),
    [
        (errors.MigrationFailedError, "shardmigrate.migration_failed"),
        (errors.MigrationTimeoutError, "shardmigrate.migration_timeout"),
        (errors.RollbackFailedError, "shardmigrate.rollback_failed"),
        (errors.DriftDetectedError, "shardmigrate.drift_detected"),
        (errors.InvalidScriptError, "shardmigrate.invalid_script"),
        (errors.SchemaComparisonFailedError, "shardmigrate.schema_comparison_failed"),
        (errors.MigrationNotFoundError, "shardmigrate.migration_not_found"),
        (errors.InvalidTopologyError, "shardmigrate.invalid_topology"),
        (errors.LockTimeoutError, "shardmigrate.lock_timeout"),
        (errors.OutOfOrderError, "shardmigrate.out_of_order"),
    ],
)
def test_each_exception_carries_its_code(cls: type[ShardMigrateError], code: str) -> None:
    error = cls("boom")
    assert isinstance(error, ShardMigrateError)
    assert error.code == code
    assert str(error) == f"[{code}] boom"
    assert error.message == "boom"


def test_every_code_has_an_exception() -> None:
    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, ShardMigrateError)]
    assert {c.code for c in classes if c is not ShardMigrateError} == set(ErrorCode)


def test_code_override_and_shard_id() -> None:
    error = errors.MigrationFailedError("too slow", code=ErrorCode.MIGRATION_TIMEOUT, shard_id="shard-3")
    assert error.code is ErrorCode.MIGRATION_TIMEOUT
    assert error.shard_id == "shard-3"
    assert str(error) == "[shardmigrate.migration_timeout] shard 'shard-3': too slow"
    assert errors.MigrationFailedError("x").code is ErrorCode.MIGRATION_FAILED  # class default untouched


def test_problem_rendering() -> None:
    assert str(Problem("bad", "f.yaml", "shards[2].id")) == "f.yaml: field 'shards[2].id': bad"
    assert str(Problem("bad", "f.yaml")) == "f.yaml: bad"
    assert str(Problem("bad", None, "x")) == "field 'x': bad"
    assert str(Problem("bad")) == "bad"


def test_raise_if_problems() -> None:
    raise_if_problems([], errors.InvalidScriptError, "nothing")  # no problem, no raise
    one = Problem("must be true or false", "t.yaml", "shards[0].active")
    with pytest.raises(errors.InvalidTopologyError) as info:
        raise_if_problems([one], errors.InvalidTopologyError, "topology 't.yaml' is invalid")
    assert info.value.problems == (one,)
    assert str(info.value) == f"[shardmigrate.invalid_topology] {one}"
    two = Problem("unknown key", "t.yaml", "x")
    with pytest.raises(errors.InvalidTopologyError) as info:
        raise_if_problems([one, two], errors.InvalidTopologyError, "topology 't.yaml' is invalid")
    assert info.value.problems == (one, two)
    assert str(info.value) == (
        f"[shardmigrate.invalid_topology] topology 't.yaml' is invalid (2 problems)\n  - {one}\n  - {two}"
    )
