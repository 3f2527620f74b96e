"""The shard topology file: which shards exist, in which order, and how drift is watched.

The order of ``shards`` is the rollout order of every strategy. Shard ids are compared case-insensitively
(``Shard-1`` and ``shard-1`` are the same shard) because they end up in task ids, history and reports
that humans read and type.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from airflow_provider_shardmigrate.core.errors import InvalidTopologyError, Problem, raise_if_problems

#: Matched with ``fullmatch``: a ``$`` would let a trailing newline through into task ids and lookups.
SHARD_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
CONN_ID_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,250}")


class DriftDepth(StrEnum):
    TABLES_ONLY = "tables_only"
    TABLES_AND_COLUMNS = "tables_and_columns"
    FULL = "full"


class DriftFailOn(StrEnum):
    """The least healthy fleet status that fails the drift run once drift outlasts the grace period."""

    DEGRADED = "degraded"  # any drift (the default)
    UNHEALTHY = "unhealthy"  # only drift in a critical table, or a shard that could not be read


@dataclass(frozen=True)
class Shard:
    id: str
    conn_id: str
    active: bool = True

    @property
    def key(self) -> str:
        return self.id.casefold()


@dataclass(frozen=True)
class DriftSettings:
    schedule: str | None = "@hourly"
    baseline: str | None = None
    depth: DriftDepth = DriftDepth.TABLES_AND_COLUMNS
    critical_tables: tuple[str, ...] = ()
    grace_period: float = 1800.0
    fail_on: DriftFailOn = DriftFailOn.DEGRADED


@dataclass(frozen=True)
class StatusSettings:
    """The fleet-status DAG (``shardmigrate_status``): when it publishes the shard x migration matrix."""

    schedule: str | None = "@hourly"


@dataclass(frozen=True)
class Topology:
    shards: tuple[Shard, ...]
    drift: DriftSettings = field(default_factory=DriftSettings)
    source: str = "<topology>"
    #: Follow symbolic links that lead out of the migrations folder (refused by default: a link can make
    #: a DAG run a file nobody reviewed with the migrations).
    allow_symlinks: bool = False
    status: StatusSettings = field(default_factory=StatusSettings)

    @property
    def active_shards(self) -> tuple[Shard, ...]:
        return tuple(shard for shard in self.shards if shard.active)

    def find(self, shard_id: str) -> Shard | None:
        key = shard_id.casefold()
        return next((shard for shard in self.shards if shard.key == key), None)

    def get(self, shard_id: str) -> Shard:
        shard = self.find(shard_id)
        if shard is None:
            raise InvalidTopologyError(f"{self.source}: no shard '{shard_id}' in the topology")
        return shard


_SHARD_KEYS = {"id", "conn_id", "active"}
_DRIFT_KEYS = {"schedule", "baseline", "depth", "critical_tables", "grace_period", "fail_on"}
_STATUS_KEYS = {"schedule"}
_TOP_KEYS = {"shards", "drift", "allow_symlinks", "status"}


def _parse_shards(raw: Any, source: str, problems: list[Problem]) -> list[Shard]:
    if not isinstance(raw, list):
        problems.append(Problem("must be a list of shards (each with id and conn_id)", source, "shards"))
        return []
    shards: list[Shard] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(raw):
        where = f"shards[{index}]"
        if not isinstance(item, Mapping):
            problems.append(Problem("must be a mapping with id and conn_id", source, where))
            continue
        for key in sorted(set(item) - _SHARD_KEYS, key=str):
            problems.append(
                Problem(f"unknown key; allowed: {', '.join(sorted(_SHARD_KEYS))}", source, f"{where}.{key}")
            )
        shard_id, conn_id, active = item.get("id"), item.get("conn_id"), item.get("active", True)
        ok = True
        if not isinstance(shard_id, str) or not SHARD_ID_PATTERN.fullmatch(shard_id):
            problems.append(
                Problem(
                    f"shard id {shard_id!r} must be 1-100 letters, digits, '_', '.', '-' (starting with a letter or "
                    "digit)",
                    source,
                    f"{where}.id",
                )
            )
            ok = False
        elif shard_id.casefold() in seen:
            problems.append(
                Problem(
                    f"duplicate shard id '{shard_id}' (ids are case-insensitive; first seen at "
                    f"shards[{seen[shard_id.casefold()]}])",
                    source,
                    f"{where}.id",
                )
            )
            ok = False
        else:
            seen[shard_id.casefold()] = index
        if not isinstance(conn_id, str) or not CONN_ID_PATTERN.fullmatch(conn_id):
            problems.append(Problem(f"conn_id {conn_id!r} must name an Airflow connection", source, f"{where}.conn_id"))
            ok = False
        if not isinstance(active, bool):
            problems.append(Problem(f"must be true or false, got {active!r}", source, f"{where}.active"))
            ok = False
        if ok and isinstance(shard_id, str) and isinstance(conn_id, str):
            shards.append(Shard(id=shard_id, conn_id=conn_id, active=active))
    return shards


class _Bad(ValueError):
    """A drift setting that cannot be used; the message says why."""


def _schedule(value: Any) -> str | None:
    if value is None or (isinstance(value, str) and value.strip()):
        return value
    raise _Bad(f"must be a cron expression, a preset like '@hourly', or null, got {value!r}")


def _depth(value: Any) -> DriftDepth:
    try:
        return DriftDepth(value)
    except ValueError:
        allowed = ", ".join(d.value for d in DriftDepth)
        raise _Bad(f"unknown depth {value!r}; use one of: {allowed}") from None


def _critical_tables(value: Any) -> tuple[str, ...]:
    if isinstance(value, list) and all(isinstance(t, str) and t.strip() for t in value):
        return tuple(t.strip() for t in value)
    raise _Bad("must be a list of table names")


def _grace_period(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0:
        return float(value)
    raise _Bad(f"must be a finite number of seconds >= 0, got {value!r}")


def _fail_on(value: Any) -> DriftFailOn:
    try:
        return DriftFailOn(value)
    except ValueError:
        allowed = ", ".join(f.value for f in DriftFailOn)
        raise _Bad(f"unknown fail_on {value!r}; use one of: {allowed}") from None


def _baseline(value: Any, shards: list[Shard]) -> str:
    """The baseline shard's id as the topology spells it; inactive shards are allowed."""
    known = {shard.key: shard for shard in shards}
    if not isinstance(value, str) or value.casefold() not in known:
        raise _Bad(f"baseline {value!r} is not a shard of this topology")
    return known[value.casefold()].id


def _parse_drift(raw: Any, shards: list[Shard], source: str, problems: list[Problem]) -> DriftSettings:
    if raw is None:
        return DriftSettings()
    if not isinstance(raw, Mapping):
        problems.append(Problem("must be a mapping", source, "drift"))
        return DriftSettings()
    for key in sorted(set(raw) - _DRIFT_KEYS, key=str):
        problems.append(Problem(f"unknown key; allowed: {', '.join(sorted(_DRIFT_KEYS))}", source, f"drift.{key}"))
    converters: tuple[tuple[str, Callable[[Any], Any]], ...] = (
        ("schedule", _schedule),
        ("baseline", lambda value: _baseline(value, shards)),
        ("depth", _depth),
        ("critical_tables", _critical_tables),
        ("grace_period", _grace_period),
        ("fail_on", _fail_on),
    )
    values: dict[str, Any] = {}
    for key, convert in converters:
        if key not in raw or (key == "baseline" and raw[key] is None):
            continue
        try:
            values[key] = convert(raw[key])
        except _Bad as exc:
            problems.append(Problem(str(exc), source, f"drift.{key}"))
    return DriftSettings(**values)


def _parse_status(raw: Any, source: str, problems: list[Problem]) -> StatusSettings:
    if raw is None:
        return StatusSettings()
    if not isinstance(raw, Mapping):
        problems.append(Problem("must be a mapping", source, "status"))
        return StatusSettings()
    for key in sorted(set(raw) - _STATUS_KEYS, key=str):
        problems.append(Problem(f"unknown key; allowed: {', '.join(sorted(_STATUS_KEYS))}", source, f"status.{key}"))
    if "schedule" not in raw:
        return StatusSettings()
    try:
        return StatusSettings(schedule=_schedule(raw["schedule"]))
    except _Bad as exc:
        problems.append(Problem(str(exc), source, "status.schedule"))
        return StatusSettings()


def parse_topology(data: Any, source: str = "<topology>") -> Topology:
    """Validate a parsed topology document; raises :class:`InvalidTopologyError` listing every problem."""
    problems: list[Problem] = []
    if not isinstance(data, Mapping):
        raise InvalidTopologyError(f"{source}: must be a mapping with a 'shards' list")
    for key in sorted(set(data) - _TOP_KEYS, key=str):
        problems.append(Problem(f"unknown key; allowed: {', '.join(sorted(_TOP_KEYS))}", source, str(key)))
    if "shards" not in data:
        problems.append(Problem("missing; list every shard with its id and conn_id", source, "shards"))
    shards = _parse_shards(data.get("shards", []), source, problems) if "shards" in data else []
    drift = _parse_drift(data.get("drift"), shards, source, problems)
    status = _parse_status(data.get("status"), source, problems)
    allow_symlinks = data.get("allow_symlinks", False)
    if not isinstance(allow_symlinks, bool):
        problems.append(Problem(f"must be true or false, got {allow_symlinks!r}", source, "allow_symlinks"))
    raise_if_problems(problems, InvalidTopologyError, f"topology '{source}' is invalid")
    return Topology(
        shards=tuple(shards), drift=drift, source=source, allow_symlinks=allow_symlinks is True, status=status
    )


def load_topology(path: str | Path) -> Topology:
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidTopologyError(f"topology file '{file}' does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidTopologyError(f"topology file '{file}' cannot be read: {exc}") from None
    try:
        data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # libyaml when present
    except yaml.YAMLError as exc:
        raise InvalidTopologyError(f"{file}: not valid YAML: {exc}") from None
    return parse_topology(data, str(file))
