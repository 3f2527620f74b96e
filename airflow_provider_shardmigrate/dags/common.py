"""What the migration and rollback DAGs share: ids, defaults and the Airflow limits checked at build time."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from airflow_provider_shardmigrate.core.errors import InvalidTopologyError
from airflow_provider_shardmigrate.dags.layout import DAG_PREFIX, ROLLBACK_SUFFIX, migration_dag_id, rollback_dag_id

__all__ = [
    "DAG_PREFIX",
    "ROLLBACK_SUFFIX",
    "attach_params",
    "check_mappable",
    "dag_defaults",
    "migration_dag_id",
    "rollback_dag_id",
]

START_DATE = datetime(2024, 1, 1, tzinfo=UTC)


def max_map_length() -> int:
    from airflow.sdk import conf

    return conf.getint("core", "max_map_length", fallback=1024)


def check_mappable(count: int, what: str) -> None:
    """Refuse at build time what Airflow would fail at run time (``[core] max_map_length``)."""
    limit = max_map_length()
    if count > limit:
        raise InvalidTopologyError(
            f"{what} maps {count} shards into one task, above Airflow's [core] max_map_length of {limit}; "
            "use the rolling strategy (batches of max_parallelism), or raise max_map_length knowingly"
        )


def dag_defaults(**overrides: Any) -> dict[str, Any]:
    return {
        "schedule": None,
        "start_date": START_DATE,
        "catchup": False,
        "max_active_runs": 1,
        **overrides,
    }


def attach_params(dag: Any, params: dict[str, Any]) -> None:
    """Give ``dag`` its Params *after* its tasks exist.

    Airflow deep-copies the DAG's params into every operator created inside it; with a thousand
    per-shard tasks that copy dominated parse time. At run time Airflow merges the DAG's params, the
    task's own and the run's conf (``process_params``), so tasks do not need the copy; the trigger
    form and REST validation read the DAG's params.
    """
    dag.params.update(params)
