"""What the fleet page shows, shaped from what the metadata database holds (pure: values in, values out).

- the **fleet status** the ``shardmigrate_status`` DAG publishes (``publish`` task, ``return_value``; shape in
  docs/contracts.md): a shards x migrations matrix, one character per migration in each shard's ``row``.
  The page gets a summary (counts per migration) and the matrix a page at a time, filtered -- never all of a
  10,000-shard fleet at once;
- the **drift health** the drift DAG publishes, with the drifted tables and the shards they drifted on;
- the **runs** of every migration DAG, with live progress for a running one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

STATUS_DAG_ID = "shardmigrate_status"
STATUS_TASK_ID = "publish"
#: A named fleet's DAGs carry ``__<fleet>`` (``load_migration_dags(..., fleet="eu")``).
FLEET_SEPARATOR = "__"
DRIFT_DAG_ID = "shardmigrate_drift"
DRIFT_TASK_ID = "publish"
#: The statuses a matrix cell can hold (the producer's ``legend``; this is the contract's default).
LEGEND = {
    "A": "applied",
    "B": "baselined",
    "F": "failed",
    "R": "running",
    "X": "rolled_back",
    "-": "not_applied",
    "?": "unreadable",
}
UNREADABLE = "?"
#: The letters of a shard that holds a migration (applied, baselined).
HOLDING = frozenset("AB")
MAX_PAGE = 200
DEFAULT_PAGE = 50
#: Drifted tables listed on the page, and shards named per table.
MAX_TABLES = 50
MAX_SHARDS_PER_TABLE = 20


def status_dag_id(fleet: str = "") -> str:
    """The status DAG of a fleet: ``shardmigrate_status``, or ``shardmigrate_status__<fleet>``."""
    return f"{STATUS_DAG_ID}{FLEET_SEPARATOR}{fleet}" if fleet else STATUS_DAG_ID


def fleet_names(dag_ids: Sequence[str]) -> list[str]:
    """The fleets that have a status DAG among ``dag_ids`` ("" is the unnamed one), unnamed first."""
    names = {
        dag_id.removeprefix(STATUS_DAG_ID).removeprefix(FLEET_SEPARATOR)
        for dag_id in dag_ids
        if dag_id == STATUS_DAG_ID or dag_id.startswith(STATUS_DAG_ID + FLEET_SEPARATOR)
    }
    return sorted(names, key=lambda name: (name != "", name))


class FleetStatusError(ValueError):
    """A published fleet status that does not have the contract's shape."""


@dataclass(frozen=True)
class FleetStatus:
    """A published fleet status, checked against docs/contracts.md (so the page never guesses)."""

    generated_at: str | None
    migrations: tuple[str, ...]
    shards: tuple[Mapping[str, Any], ...]
    legend: Mapping[str, str]
    counts: Mapping[str, Mapping[str, int]]
    complete: bool

    @classmethod
    def parse(cls, value: Any) -> FleetStatus:
        if not isinstance(value, Mapping):
            raise FleetStatusError(f"the fleet status must be a JSON object, got {type(value).__name__}")
        migrations = value.get("migrations")
        shards = value.get("shards")
        if not isinstance(migrations, list) or not isinstance(shards, list):
            raise FleetStatusError("the fleet status needs a 'migrations' list and a 'shards' list")
        for index, shard in enumerate(shards):
            if not isinstance(shard, Mapping) or not isinstance(shard.get("id"), str):
                raise FleetStatusError(f"shards[{index}] has no string 'id'")
            if not isinstance(shard.get("row"), str) or len(shard["row"]) != len(migrations):
                raise FleetStatusError(
                    f"shards[{index}] ('{shard['id']}'): 'row' must hold one character per migration "
                    f"({len(migrations)})"
                )
        return cls(
            generated_at=value.get("generated_at"),
            migrations=tuple(str(m) for m in migrations),
            shards=tuple(shards),
            legend=dict(value.get("legend") or LEGEND),
            counts={str(m): dict(c) for m, c in (value.get("counts") or {}).items()},
            complete=bool(value.get("complete")),
        )

    def summary(self) -> dict[str, Any]:
        """Everything but the rows: counts per migration, shard totals."""
        return {
            "generated_at": self.generated_at,
            "complete": self.complete,
            "migrations": list(self.migrations),
            "legend": dict(self.legend),
            "counts": {m: dict(self.counts.get(m) or self._count(i)) for i, m in enumerate(self.migrations)},
            "shards": {
                "total": len(self.shards),
                "active": sum(1 for s in self.shards if s.get("active", True)),
                "with_error": sum(1 for s in self.shards if s.get("error")),
                "unreadable": sum(1 for s in self.shards if UNREADABLE in s["row"]),
                "lacking": sum(1 for s in self.shards if s.get("active", True) and self._lacks(s["row"])),
            },
        }

    @staticmethod
    def _lacks(row: str) -> bool:
        """A readable shard that does not hold every migration."""
        return UNREADABLE not in row and not set(row) <= HOLDING

    def _count(self, index: int) -> dict[str, int]:
        counts: dict[str, int] = {}
        for shard in self.shards:
            name = self.legend.get(shard["row"][index], shard["row"][index])
            counts[name] = counts.get(name, 0) + 1
        return counts

    def rows(
        self,
        *,
        query: str = "",
        migration: str | None = None,
        status: str | None = None,
        active: bool | None = None,
        offset: int = 0,
        limit: int = DEFAULT_PAGE,
    ) -> dict[str, Any]:
        """One page of the matrix: shards whose id contains ``query`` (case-insensitive), whose cell for
        ``migration`` (any cell when None) holds ``status`` (a legend letter), and that are ``active``."""
        column = self._column(migration)
        wanted = query.strip().casefold()
        matching = [
            shard
            for shard in self.shards
            if (not wanted or wanted in shard["id"].casefold())
            and (active is None or bool(shard.get("active", True)) is active)
            and (not status or _has(shard["row"], status, column))
        ]
        limit = max(1, min(int(limit), MAX_PAGE))
        offset = max(0, int(offset))
        return {
            "total": len(self.shards),
            "matching": len(matching),
            "offset": offset,
            "limit": limit,
            "migrations": list(self.migrations),
            "legend": dict(self.legend),
            "rows": [_row(shard) for shard in matching[offset : offset + limit]],
        }

    def _column(self, migration: str | None) -> int | None:
        if not migration:
            return None
        try:
            return self.migrations.index(migration)
        except ValueError:
            raise FleetStatusError(f"no migration '{migration}' in the fleet status") from None


def _has(row: str, status: str, column: int | None) -> bool:
    return row[column] in status if column is not None else any(cell in status for cell in row)


def _row(shard: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": shard["id"],
        "active": bool(shard.get("active", True)),
        "engine": shard.get("engine"),
        "row": shard["row"],
        "error": shard.get("error"),
    }


def drift_summary(value: Any) -> dict[str, Any]:
    """The drift DAG's published ``{"report", "health"}``, with the drifted tables and their shards."""
    if not isinstance(value, Mapping):
        return {"status": "unknown", "description": "the drift DAG published no report"}
    health = dict(value.get("health") or {})
    report = value.get("report") or {}
    tables: dict[str, list[str]] = {}
    for shard, diffs in (report.get("diffs") or {}).items():
        for diff in diffs:
            tables.setdefault(str(diff.get("table")), []).append(shard)
    listed = sorted(tables.items())[:MAX_TABLES]
    return {
        "status": health.get("status", "unknown"),
        "description": health.get("description", ""),
        "baseline": report.get("baseline"),
        "depth": report.get("depth"),
        "generated_at": report.get("generated_at"),
        "drifted_shards": list(report.get("drifted_shards") or []),
        "critical_drift": dict(health.get("critical_drift") or {}),
        "unreadable": {
            shard: (error or {}).get("message", "") for shard, error in (report.get("errors") or {}).items()
        },
        "tables": [
            {"table": table, "shards": shards[:MAX_SHARDS_PER_TABLE], "shard_count": len(shards)}
            for table, shards in listed
        ],
        "more_tables": max(0, len(tables) - MAX_TABLES),
    }


def progress_bar(progress: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The segments of a run's progress bar, in the order they are drawn (zero-width ones left out)."""
    total = int(progress.get("total_shards") or 0)
    parts = [
        ("at_migration", int(progress.get("completed_shards") or 0)),
        ("rolled_back", int(progress.get("rolled_back_shards") or 0)),
        ("failed", int(progress.get("failed_shards") or 0)),
        ("pending", int(progress.get("stopped_shards") or 0)),
        ("running", int(progress.get("running_shards") or 0)),
    ]
    waiting = total - sum(n for _, n in parts)
    parts.append(("waiting", max(0, waiting)))
    return [
        {"kind": kind, "count": n, "percent": round(100.0 * n / total, 2) if total else 0.0} for kind, n in parts if n
    ]


def run_url(base: str, dag_id: str, run_id: str | None = None) -> str:
    """A page of the Airflow UI: the DAG, or one of its runs."""
    from urllib.parse import quote

    path = f"{base}/dags/{quote(dag_id, safe='')}"
    return f"{path}/runs/{quote(run_id, safe='')}" if run_id else path


def required_action_url(base: str, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> str:
    """The UI's page where a human answers a HITL task (the approval)."""
    return f"{run_url(base, dag_id, run_id)}/tasks/{task_id}/required_actions?map_index={map_index}"


def ordered_migrations(dag_ids: Sequence[str], prefix: str, suffix: str) -> list[str]:
    """Migration ids of the rollout DAGs among ``dag_ids`` (rollback DAGs belong to their rollout), sorted."""
    return sorted({dag_id.removeprefix(prefix) for dag_id in dag_ids if not dag_id.endswith(suffix)})
