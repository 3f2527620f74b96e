"""Publishing a fleet status the way the ``shardmigrate_status`` DAG does: the ``return_value`` XCom of its
``publish`` task, from a real (tiny) DAG run.

The page's tests publish matrices of their choosing (10,000 shards, unreadable ones) in the documented shape
(docs/contracts.md, "Fleet status") with this stand-in DAG, without reading any shard; the real producer,
``shardmigrate_status``, is tested in tests/dags/test_fleet_dags.py and feeds the e2e UI tests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from tests.dags.conftest import RunOutcome, run_dag

LEGEND = {
    "A": "applied",
    "B": "baselined",
    "F": "failed",
    "R": "running",
    "X": "rolled_back",
    "-": "not_applied",
    "?": "unreadable",
}
#: History table status -> matrix letter.
LETTER = {"applied": "A", "baselined": "B", "failed": "F", "running": "R", "rolled_back": "X"}


def fleet_status(
    migrations: Sequence[str],
    rows: Mapping[str, str],
    *,
    inactive: Sequence[str] = (),
    engine: str = "sqlite",
    errors: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A fleet status in the contract's shape; ``rows``: shard id -> one letter per migration."""
    errors = errors or {}
    counts: dict[str, dict[str, int]] = {}
    for index, migration in enumerate(migrations):
        per: dict[str, int] = {}
        for row in rows.values():
            name = LEGEND[row[index]]
            per[name] = per.get(name, 0) + 1
        counts[migration] = per
    return {
        "generated_at": datetime.now(UTC).isoformat(),
        "migrations": list(migrations),
        "shards": [
            {
                "id": shard_id,
                "active": shard_id not in inactive,
                "engine": None if "?" in row else engine,
                "row": row,
                "error": errors.get(shard_id),
            }
            for shard_id, row in rows.items()
        ],
        "legend": LEGEND,
        "counts": counts,
        # the contract: every active shard holds (applied or baselined) every migration
        "complete": all(set(row) <= {"A", "B"} for shard_id, row in rows.items() if shard_id not in inactive),
    }


def publish(value: dict[str, Any], dag_id: str = "shardmigrate_status") -> RunOutcome:
    """Run a one-task DAG ``dag_id`` whose ``publish`` task returns ``value``."""
    from airflow.sdk import DAG, task

    with DAG(dag_id, schedule=None, start_date=datetime(2024, 1, 1, tzinfo=UTC), catchup=False) as dag:

        @task(task_id="publish")
        def publish_status() -> dict[str, Any]:
            return value

        publish_status()
    run = run_dag(dag)
    assert run.state == "success", run.tasks
    return run


def row_from_history(history: Mapping[str, Mapping[str, Any]], migrations: Sequence[str]) -> str:
    """One shard's matrix row from its history table rows."""
    return "".join(LETTER.get(str((history.get(m) or {}).get("status")), "-") for m in migrations)
