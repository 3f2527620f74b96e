"""Per-migration options (``migration.yaml``, docs/contracts.md) and their validation.

Options are validated field by field and every problem is reported at once, naming the file and field,
because a rollout across hundreds of shards must never start from a half-understood configuration.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any

from airflow_provider_shardmigrate.core.errors import Problem

#: Seconds a canary approval waits for an answer before it counts as a reject (one day).
DEFAULT_APPROVAL_TIMEOUT = 86400.0


class Strategy(StrEnum):
    SEQUENTIAL = "sequential"
    PARALLEL = "parallel"
    ROLLING = "rolling"
    CANARY_FIRST = "canary_first"


class Execution(StrEnum):
    """How shards become task instances: one per shard, or a few lanes that each work through many."""

    PER_SHARD = "per_shard"
    LANES = "lanes"
    AUTO = "auto"  # per_shard up to AUTO_LANES_ABOVE targeted shards, lanes beyond


#: ``execution: auto`` picks lanes when a rollout targets more shards than this.
AUTO_LANES_ABOVE = 256


@dataclass(frozen=True)
class MigrationOptions:
    """How one migration rolls out (defaults: docs/contracts.md)."""

    strategy: Strategy = Strategy.SEQUENTIAL
    max_parallelism: int = 4
    stop_on_first_failure: bool = True
    per_shard_timeout: float = 300.0
    validate_before_apply: bool = True
    transactional: bool = True
    auto_rollback: bool = False
    canary: str | None = None
    canary_validation: str | None = None  # SQL run on the canary after apply; first column must be truthy
    canary_bake_time: float = 0.0  # seconds the canary gate waits before the rest of the fleet starts
    canary_approval: bool = False  # a human approves the canary (Airflow HITL) before the rest of the fleet starts
    canary_approval_timeout: float = DEFAULT_APPROVAL_TIMEOUT  # seconds without an answer count as a reject
    description: str = ""
    checksum: str | None = None  # when given, must equal the computed checksum
    execution: Execution = Execution.AUTO
    max_failed_shards: int | None = None  # halt once more shards than this failed (0 = stop on first failure)
    max_failure_ratio: float | None = None  # halt once failed / targeted passes this (0 < r <= 1)
    #: Migrations that must be on a shard first; None: every earlier migration of the folder, (): none.
    depends_on: tuple[str, ...] | None = None


_BOOL_FIELDS = ("stop_on_first_failure", "validate_before_apply", "transactional", "auto_rollback", "canary_approval")
_OPTIONAL_TEXT_FIELDS = ("canary", "canary_validation", "checksum")
KNOWN_KEYS = frozenset(f.name for f in fields(MigrationOptions))


#: PostgreSQL's ``statement_timeout``/``lock_timeout`` take milliseconds as a 32-bit integer (at most
#: 2,147,483,647 ms): a longer per-shard budget could not be enforced there, so it is refused at load.
MAX_PER_SHARD_TIMEOUT = 2_147_483


class _Bad(ValueError):
    """A value that cannot be used; the message says why."""


def _strategy(value: Any) -> Strategy:
    try:
        return Strategy(str(value).strip())
    except ValueError:
        allowed = ", ".join(s.value for s in Strategy)
        raise _Bad(f"unknown strategy {value!r}; use one of: {allowed}") from None


def _max_parallelism(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Bad(f"must be an integer >= 1, got {value!r}")
    if value < 1:
        raise _Bad(f"must be >= 1, got {value}")
    return value


def _seconds(value: Any, *, positive: bool) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise _Bad(f"must be a number of seconds, got {value!r}")
    if positive and value <= 0:
        raise _Bad(f"must be a positive number of seconds, got {value}")
    if value < 0:
        raise _Bad(f"must not be negative, got {value}")
    return float(value)


def _execution(value: Any) -> Execution:
    try:
        return Execution(str(value).strip())
    except ValueError:
        allowed = ", ".join(e.value for e in Execution)
        raise _Bad(f"unknown execution {value!r}; use one of: {allowed}") from None


def _max_failed(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _Bad(f"must be an integer >= 0 (0 stops at the first failure), got {value!r}")
    return value


def _ratio(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _Bad(f"must be a number with 0 < ratio <= 1, got {value!r}")
    if not 0 < value <= 1:
        raise _Bad(f"must be a ratio with 0 < ratio <= 1 (of the targeted shards), got {value}")
    return float(value)


def _depends_on(value: Any) -> tuple[str, ...]:
    """A list of migration ids (whether they exist and come earlier is checked with the whole folder)."""
    if not isinstance(value, list) or not all(isinstance(item, str) and item.strip() for item in value):
        raise _Bad(f"must be a list of migration ids (folder names), [] for none, got {value!r}")
    ids = [item.strip() for item in value]
    repeated = sorted({item for item in ids if ids.count(item) > 1})
    if repeated:
        raise _Bad(f"lists {', '.join(repr(item) for item in repeated)} more than once")
    return tuple(ids)


def _timeout(seconds: float) -> float:
    if seconds > MAX_PER_SHARD_TIMEOUT:
        raise _Bad(
            f"must be at most {MAX_PER_SHARD_TIMEOUT:,} seconds (about 24.8 days, PostgreSQL's largest "
            f"statement_timeout), got {seconds:g}"
        )
    return seconds


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Bad(f"must be true or false, got {value!r}")
    return value


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Bad(f"must be a non-empty string, got {value!r}")
    return value.strip()


def _description(value: Any) -> str:
    if not isinstance(value, str):
        raise _Bad(f"must be a string, got {value!r}")
    return value.strip()


#: Field -> converter, in the order problems are reported. Text fields set to null keep their default.
_CONVERTERS: tuple[tuple[str, Callable[[Any], Any]], ...] = (
    ("strategy", _strategy),
    ("max_parallelism", _max_parallelism),
    ("per_shard_timeout", lambda v: _timeout(_seconds(v, positive=True))),
    ("canary_bake_time", lambda v: _seconds(v, positive=False)),
    ("canary_approval_timeout", lambda v: _seconds(v, positive=True)),
    *((key, _bool) for key in _BOOL_FIELDS),
    *((key, _text) for key in _OPTIONAL_TEXT_FIELDS),
    ("description", _description),
    ("execution", _execution),
    ("max_failed_shards", _max_failed),
    ("max_failure_ratio", _ratio),
    ("depends_on", _depends_on),
)
_NULL_MEANS_DEFAULT = frozenset(
    (*_OPTIONAL_TEXT_FIELDS, "description", "max_failed_shards", "max_failure_ratio", "depends_on")
)


def parse_options(raw: Mapping[str, Any] | None, source: str) -> tuple[MigrationOptions, list[Problem]]:
    """Turn the YAML mapping into options; returns defaults for fields with problems plus the problems."""
    if raw is None:
        return MigrationOptions(), []
    if not isinstance(raw, Mapping):
        return MigrationOptions(), [Problem("must be a mapping of option names to values", source)]
    problems = [
        Problem(f"unknown key; allowed keys: {', '.join(sorted(KNOWN_KEYS))}", source, str(key))
        for key in sorted(set(raw) - KNOWN_KEYS, key=str)
    ]
    values: dict[str, Any] = {}
    for key, convert in _CONVERTERS:
        if key not in raw or (raw[key] is None and key in _NULL_MEANS_DEFAULT):
            continue
        try:
            values[key] = convert(raw[key])
        except _Bad as exc:
            problems.append(Problem(str(exc), source, key))
    problems += _approval_problems(raw, values, source)
    return MigrationOptions(**values), problems


def _approval_problems(raw: Mapping[str, Any], values: Mapping[str, Any], source: str) -> list[Problem]:
    """A canary approval needs a canary; its timeout means nothing without it."""
    problems = []
    strategy = values.get("strategy", Strategy.SEQUENTIAL)
    if values.get("canary_approval") and strategy is not Strategy.CANARY_FIRST:
        problems.append(
            Problem(
                f"needs strategy canary_first (the approval follows the canary), not {strategy.value}",
                source,
                "canary_approval",
            )
        )
    if "canary_approval_timeout" in raw and not raw.get("canary_approval"):
        problems.append(Problem("only applies with canary_approval: true", source, "canary_approval_timeout"))
    return problems
