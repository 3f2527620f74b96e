"""Per-migration options: defaults and field-by-field validation."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_shardmigrate.core.options import KNOWN_KEYS, Execution, MigrationOptions, Strategy, parse_options

SOURCE = "migrations/001/migration.yaml"


def test_defaults_match_design_2_1() -> None:
    options = MigrationOptions()
    assert options.strategy is Strategy.SEQUENTIAL
    assert options.max_parallelism == 4
    assert options.stop_on_first_failure is True
    assert options.per_shard_timeout == 300.0
    assert options.validate_before_apply is True
    assert options.transactional is True
    assert options.auto_rollback is False
    assert options.canary is None
    assert options.checksum is None
    assert options.description == ""
    assert options.canary_bake_time == 0.0


def test_strategy_values_are_the_design_names() -> None:
    assert [s.value for s in Strategy] == ["sequential", "parallel", "rolling", "canary_first"]


@pytest.mark.parametrize("raw", [None, {}])
def test_nothing_given_means_defaults(raw: dict[str, Any] | None) -> None:
    assert parse_options(raw, SOURCE) == (MigrationOptions(), [])


def test_every_option_parsed() -> None:
    raw = {
        "description": "  Add index  ",
        "strategy": " canary_first ",
        "max_parallelism": 16,
        "stop_on_first_failure": False,
        "per_shard_timeout": 30,
        "validate_before_apply": False,
        "transactional": False,
        "auto_rollback": True,
        "canary": " shard-3 ",
        "canary_validation": "SELECT count(*) > 0 FROM customers",
        "canary_bake_time": 0,
        "canary_approval": True,
        "canary_approval_timeout": 120,
        "checksum": "sha256:" + "a" * 64,
        "execution": " lanes ",
        "max_failed_shards": 3,
        "max_failure_ratio": 0.25,
        "depends_on": [" 001_a ", "002_b"],
    }
    assert set(raw) == KNOWN_KEYS
    options, problems = parse_options(raw, SOURCE)
    assert problems == []
    assert options == MigrationOptions(
        strategy=Strategy.CANARY_FIRST,
        max_parallelism=16,
        stop_on_first_failure=False,
        per_shard_timeout=30.0,
        validate_before_apply=False,
        transactional=False,
        auto_rollback=True,
        canary="shard-3",
        canary_validation="SELECT count(*) > 0 FROM customers",
        canary_bake_time=0.0,
        canary_approval=True,
        canary_approval_timeout=120.0,
        description="Add index",
        checksum="sha256:" + "a" * 64,
        execution=Execution.LANES,
        max_failed_shards=3,
        max_failure_ratio=0.25,
        depends_on=("001_a", "002_b"),
    )
    assert isinstance(options.per_shard_timeout, float)


@pytest.mark.parametrize("key", ["canary", "checksum", "canary_validation", "description"])
def test_null_text_options_keep_their_default(key: str) -> None:
    options, problems = parse_options({key: None}, SOURCE)
    assert problems == []
    assert options == MigrationOptions()


def test_not_a_mapping() -> None:
    options, problems = parse_options(["strategy", "parallel"], SOURCE)  # type: ignore[arg-type]
    assert options == MigrationOptions()
    assert len(problems) == 1
    assert problems[0].source == SOURCE and problems[0].field is None
    assert "mapping" in problems[0].message


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"strategy": "blue_green"}, "strategy"),
        ({"strategy": "Parallel"}, "strategy"),
        ({"strategy": None}, "strategy"),
        ({"max_parallelism": 0}, "max_parallelism"),
        ({"max_parallelism": -1}, "max_parallelism"),
        ({"max_parallelism": 1.5}, "max_parallelism"),
        ({"max_parallelism": "4"}, "max_parallelism"),
        ({"max_parallelism": True}, "max_parallelism"),
        ({"per_shard_timeout": 0}, "per_shard_timeout"),
        ({"per_shard_timeout": -10}, "per_shard_timeout"),
        ({"per_shard_timeout": "5m"}, "per_shard_timeout"),
        ({"per_shard_timeout": False}, "per_shard_timeout"),
        ({"per_shard_timeout": float("inf")}, "per_shard_timeout"),
        ({"canary_bake_time": -1}, "canary_bake_time"),
        ({"canary_bake_time": "1h"}, "canary_bake_time"),
        ({"stop_on_first_failure": "yes"}, "stop_on_first_failure"),
        ({"validate_before_apply": 1}, "validate_before_apply"),
        ({"transactional": None}, "transactional"),
        ({"auto_rollback": "false"}, "auto_rollback"),
        ({"canary": ""}, "canary"),
        ({"canary": "   "}, "canary"),
        ({"canary": 3}, "canary"),
        ({"checksum": ["sha256:x"]}, "checksum"),
        ({"canary_validation": 1}, "canary_validation"),
        ({"description": 42}, "description"),
        ({"strategy_name": "parallel"}, "strategy_name"),
        ({1: "x"}, "1"),
    ],
)
def test_each_bad_value_names_file_and_field(raw: dict[str, Any], field: str) -> None:
    options, problems = parse_options(raw, SOURCE)
    assert [(p.source, p.field) for p in problems] == [(SOURCE, field)]
    assert options == MigrationOptions()  # the bad field keeps its default
    assert str(problems[0]).startswith(f"{SOURCE}: field '{field}': ")


def test_good_fields_survive_next_to_bad_ones() -> None:
    options, problems = parse_options({"strategy": "rolling", "max_parallelism": 0, "auto_rollback": True}, SOURCE)
    assert [p.field for p in problems] == ["max_parallelism"]
    assert options.strategy is Strategy.ROLLING
    assert options.auto_rollback is True
    assert options.max_parallelism == 4


def test_all_problems_reported_at_once() -> None:
    _, problems = parse_options(
        {"strategy": "x", "max_parallelism": 0, "per_shard_timeout": 0, "bogus": 1, "other": 2}, SOURCE
    )
    assert [p.field for p in problems] == ["bogus", "other", "strategy", "max_parallelism", "per_shard_timeout"]


def test_unknown_key_lists_the_allowed_keys() -> None:
    _, problems = parse_options({"paralelism": 3}, SOURCE)
    for key in KNOWN_KEYS:
        assert key in problems[0].message


def test_max_parallelism_one_and_fractional_timeout_are_fine() -> None:
    options, problems = parse_options({"max_parallelism": 1, "per_shard_timeout": 0.25}, SOURCE)
    assert problems == []
    assert options.max_parallelism == 1
    assert options.per_shard_timeout == 0.25


# --- per_shard_timeout fits every engine's timeout setting (issue 9, bug 5) --------------------------------


def test_per_shard_timeout_above_what_postgresql_accepts_is_refused_naming_the_field() -> None:
    options, problems = parse_options({"per_shard_timeout": 2_147_484}, "m/migration.yaml")
    assert [(p.source, p.field) for p in problems] == [("m/migration.yaml", "per_shard_timeout")]
    assert "2,147,483" in problems[0].message and "statement_timeout" in problems[0].message
    assert options.per_shard_timeout == 300.0  # the default, never the bad value


def test_per_shard_timeout_at_the_bound_is_accepted() -> None:
    options, problems = parse_options({"per_shard_timeout": 2_147_483}, "m/migration.yaml")
    assert problems == [] and options.per_shard_timeout == 2_147_483.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), ([], ()), (["001_a"], ("001_a",))],
    ids=["null: every earlier migration", "empty: independent", "one"],
)
def test_depends_on(value: Any, expected: tuple[str, ...] | None) -> None:
    options, problems = parse_options({"depends_on": value}, SOURCE)
    assert problems == [] and options.depends_on == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("001_a", "must be a list of migration ids"),
        ([1], "must be a list of migration ids"),
        ([""], "must be a list of migration ids"),
        (["001_a", "001_a"], "lists '001_a' more than once"),
    ],
)
def test_bad_depends_on_names_the_field(value: Any, message: str) -> None:
    options, problems = parse_options({"depends_on": value}, SOURCE)
    assert options.depends_on is None
    (problem,) = problems
    assert problem.field == "depends_on" and message in problem.message and problem.source == SOURCE
