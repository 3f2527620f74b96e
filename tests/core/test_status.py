"""Shard statuses and their XCom shape, and the redaction of what they carry (docs/contracts.md)."""

from __future__ import annotations

import json

import pytest

from airflow_provider_shardmigrate.core.status import (
    MAX_ERROR_MESSAGE,
    Outcome,
    ShardStatus,
    clip,
    redact,
)

SHARD_KEYS = {"shard_id", "outcome", "duration_ms", "error_code", "error_message"}


def test_outcome_values_are_the_documented_names() -> None:
    assert {o.value for o in Outcome} == {
        "succeeded",
        "already_applied",
        "failed",
        "pending",
        "rolled_back",
        "would_apply",
        "not_applied",
        "not_selected",
        "would_roll_back",
    }


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
    ],
)
def test_redact_leaves_harmless_text_alone(text: str) -> None:
    assert redact(text) == text


def test_clip() -> None:
    assert clip(None) is None
    assert clip("short") == "short"
    exact = "x" * MAX_ERROR_MESSAGE
    assert clip(exact) == exact
    clipped = clip("x" * (MAX_ERROR_MESSAGE + 1))
    assert clipped is not None and len(clipped) == MAX_ERROR_MESSAGE
    assert clipped.endswith(" ...[truncated]")
    assert clip("password=abc") == "password=***"


@pytest.mark.parametrize(
    "text", ["x://" * 2500 + "@", "x://u:" * 2000 + "@", "a.b-" * 5000 + "@", "u:p@" * 5000, "password='" * 5000]
)
def test_redact_stays_fast_on_pathological_input(text: str) -> None:
    import time

    started = time.perf_counter()
    assert "***" in redact(text) or "password" not in text
    assert time.perf_counter() - started < 1.0
