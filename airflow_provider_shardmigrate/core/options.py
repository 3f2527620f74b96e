"""Per-migration options (``migration.yaml``, DESIGN 2.1) and their validation.

Options are validated field by field and every problem is reported at once, naming the file and field,
because a rollout across hundreds of shards must never start from a half-understood configuration.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any

from airflow_provider_shardmigrate.core.errors import Problem


class Strategy(StrEnum):
    SEQUENTIAL = "sequential"
    PARALLEL = "parallel"
    ROLLING = "rolling"
    CANARY_FIRST = "canary_first"


@dataclass(frozen=True)
class MigrationOptions:
    """How one migration rolls out. Defaults follow the seed (DESIGN 2.1)."""

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
    description: str = ""
    checksum: str | None = None  # when given, must equal the computed checksum


_BOOL_FIELDS = ("stop_on_first_failure", "validate_before_apply", "transactional", "auto_rollback")
_OPTIONAL_TEXT_FIELDS = ("canary", "canary_validation", "checksum")
KNOWN_KEYS = frozenset(f.name for f in fields(MigrationOptions))


def parse_options(raw: Mapping[str, Any] | None, source: str) -> tuple[MigrationOptions, list[Problem]]:
    """Turn the YAML mapping into options; returns defaults for fields with problems plus the problems."""
    problems: list[Problem] = []
    if raw is None:
        return MigrationOptions(), problems
    if not isinstance(raw, Mapping):
        return MigrationOptions(), [Problem("must be a mapping of option names to values", source)]

    values: dict[str, Any] = {}

    def bad(field: str, message: str) -> None:
        problems.append(Problem(message, source, field))

    for key in sorted(set(raw) - KNOWN_KEYS, key=str):
        bad(str(key), f"unknown key; allowed keys: {', '.join(sorted(KNOWN_KEYS))}")

    if "strategy" in raw:
        try:
            values["strategy"] = Strategy(str(raw["strategy"]).strip())
        except ValueError:
            allowed = ", ".join(s.value for s in Strategy)
            bad("strategy", f"unknown strategy {raw['strategy']!r}; use one of: {allowed}")

    if "max_parallelism" in raw:
        value = raw["max_parallelism"]
        if isinstance(value, bool) or not isinstance(value, int):
            bad("max_parallelism", f"must be an integer >= 1, got {value!r}")
        elif value < 1:
            bad("max_parallelism", f"must be >= 1, got {value}")
        else:
            values["max_parallelism"] = value

    for key in ("per_shard_timeout", "canary_bake_time"):
        if key in raw:
            value = raw[key]
            number_ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
            if not number_ok:
                bad(key, f"must be a number of seconds, got {value!r}")
            elif key == "per_shard_timeout" and value <= 0:
                bad(key, f"must be a positive number of seconds, got {value}")
            elif value < 0:
                bad(key, f"must not be negative, got {value}")
            else:
                values[key] = float(value)

    for key in _BOOL_FIELDS:
        if key in raw:
            if isinstance(raw[key], bool):
                values[key] = raw[key]
            else:
                bad(key, f"must be true or false, got {raw[key]!r}")

    for key in _OPTIONAL_TEXT_FIELDS:
        if key in raw and raw[key] is not None:
            if isinstance(raw[key], str) and raw[key].strip():
                values[key] = raw[key].strip()
            else:
                bad(key, f"must be a non-empty string, got {raw[key]!r}")

    if "description" in raw and raw["description"] is not None:
        if isinstance(raw["description"], str):
            values["description"] = raw["description"].strip()
        else:
            bad("description", f"must be a string, got {raw['description']!r}")

    return MigrationOptions(**values), problems
