"""Fleet health from a drift report.

- ``healthy``: every shard was compared and none drifted.
- ``degraded``: drift, but only in tables nobody declared critical -- worth a look, not a page.
- ``unhealthy``: drift touches a critical table, or detection failed or timed out on any shard
  (a fleet we could not look at is not known to be fine).

Critical table names are matched case-insensitively (people type them in YAML and CLI flags), and an
unqualified name also matches the table in any schema (``orders`` matches ``billing.orders``).
Pure: no database, no Airflow.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from airflow_provider_shardmigrate.core.drift import DriftReport


class HealthStatus(StrEnum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"

    @property
    def exit_code(self) -> int:
        """The CLI's exit code: 0 healthy, 1 degraded, 2 unhealthy."""
        return {"healthy": 0, "degraded": 1, "unhealthy": 2}[self.value]

    def fails(self, fail_on: str) -> bool:
        """Whether this status fails a drift run whose ``drift.fail_on`` is ``fail_on`` (``degraded``: any drift;
        ``unhealthy``: only an unhealthy fleet). A healthy fleet never fails."""
        return self is not HealthStatus.HEALTHY and self.exit_code >= HealthStatus(fail_on).exit_code


@dataclass(frozen=True)
class FleetHealth:
    status: HealthStatus
    description: str
    drifted_shards: tuple[str, ...] = ()
    #: Critical tables (as the report spells them) that drifted, each with the shards it drifted on.
    critical_drift: Mapping[str, tuple[str, ...]] | None = None
    failed_shards: tuple[str, ...] = ()
    critical_tables: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status.value,
            "description": self.description,
            "drifted_shards": list(self.drifted_shards),
            "critical_drift": {table: list(shards) for table, shards in (self.critical_drift or {}).items()},
            "failed_shards": list(self.failed_shards),
            "critical_tables": list(self.critical_tables),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FleetHealth:
        return cls(
            status=HealthStatus(data["status"]),
            description=str(data.get("description", "")),
            drifted_shards=tuple(data.get("drifted_shards", ())),
            critical_drift={t: tuple(s) for t, s in (data.get("critical_drift") or {}).items()},
            failed_shards=tuple(data.get("failed_shards", ())),
            critical_tables=tuple(data.get("critical_tables", ())),
        )


def is_critical(table: str, critical: Iterable[str]) -> bool:
    folded = table.casefold()
    last = folded.rsplit(".", 1)[-1]
    for name in critical:
        wanted = name.strip().casefold()
        if wanted == folded or ("." not in wanted and wanted == last):
            return True
    return False


def _listing(names: Iterable[str], limit: int = 10) -> str:
    items = list(names)
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def assess_health(report: DriftReport, critical_tables: Iterable[str] = ()) -> FleetHealth:
    """Health of the fleet described by ``report``, given the critical tables."""
    critical = tuple(t.strip() for t in critical_tables if t and t.strip())
    drifted = report.drifted_shards
    failed = tuple(report.errors)
    critical_drift = {
        table: shards for table, shards in report.drifted_tables().items() if is_critical(table, critical)
    }
    problems: list[str] = []
    if failed:
        reasons = "; ".join(f"{shard}: {error.message}" for shard, error in list(report.errors.items())[:5])
        problems.append(f"detection failed on {len(failed)} shard(s) ({reasons})")
    if critical_drift:
        parts = "; ".join(f"{table} on {_listing(shards)}" for table, shards in critical_drift.items())
        problems.append(f"critical table(s) drifted: {parts}")
    if problems:
        status = HealthStatus.UNHEALTHY
        if drifted:
            problems.append(f"drifted shard(s): {_listing(drifted)}")
        description = "unhealthy: " + "; ".join(problems)
    elif drifted:
        status = HealthStatus.DEGRADED
        outside = f"outside the critical tables ({_listing(critical)})" if critical else "(no critical tables declared)"
        tables = _listing(report.drifted_tables())
        description = (
            f"degraded: {len(drifted)} shard(s) drifted from baseline {report.baseline} ({_listing(drifted)}) "
            f"in table(s) {tables}, {outside}"
        )
    else:
        status = HealthStatus.HEALTHY
        description = (
            f"healthy: {len(report.shards_compared)} shard(s) match baseline {report.baseline} "
            f"at depth {report.depth.value}"
        )
    return FleetHealth(status, description, drifted, critical_drift, failed, critical)
