"""Small helpers shared by the operators: reading per-shard results back from XCom."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from airflow_provider_shardmigrate.core.status import ShardStatus


def pull_statuses(context: Any, task_ids: Sequence[str]) -> list[ShardStatus]:
    """Every per-shard status pushed by ``task_ids`` in this run (all map indexes); absent ones are skipped."""
    ti = context["ti"]
    values: Iterable[Any] = ti.xcom_pull(task_ids=list(task_ids), key="return_value") or []
    statuses = []
    for value in values:
        if isinstance(value, dict) and "shard_id" in value and "outcome" in value:
            statuses.append(ShardStatus.from_xcom(value))
    return statuses


def run_info(context: Any) -> tuple[str, str]:
    ti = context["ti"]
    return ti.dag_id, ti.run_id
