"""Reading what other tasks of the run left behind: per-shard statuses from XCom, and task states.

Airflow's task-state query (``ti.get_task_states``) answers with keys of its own making -- ``task_id``
for a plain task, ``f"{task_id}_{map_index}"`` for a mapped one. There is no public structured form, so
that format is read here and only here (tests/operators/test_context.py fails if Airflow changes it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from airflow_provider_shardmigrate.core.status import ShardStatus


def pull_statuses(context: Any, task_ids: Sequence[str]) -> list[ShardStatus]:
    """Every per-shard status pushed by ``task_ids`` in this run (all map indexes); absent ones are skipped."""
    if not task_ids:
        return []
    ti = context["ti"]
    values: Iterable[Any] = ti.xcom_pull(task_ids=list(task_ids), key="return_value") or []
    return [ShardStatus.from_xcom(value) for value in values if ShardStatus.is_xcom(value)]


def parse_task_state_keys(states: Mapping[str, Any], mapped: Mapping[str, bool]) -> dict[tuple[str, int], str]:
    """``{(task_id, map_index): state}`` from the keys ``get_task_states`` returns, for the tasks in ``mapped``
    (task id -> whether it is mapped; a plain task has map index -1)."""
    parsed: dict[tuple[str, int], str] = {}
    for key, state in states.items():
        if key in mapped and not mapped[key]:
            parsed[(key, -1)] = str(state)
            continue
        task_id, _, index = key.rpartition("_")
        if mapped.get(task_id) and index.isdigit():
            parsed[(task_id, int(index))] = str(state)
    return parsed


def task_states(context: Any, mapped: Mapping[str, bool]) -> dict[tuple[str, int], str]:
    """States of this run's instances of the tasks in ``mapped`` (task id -> mapped?), by (task id, map index)."""
    if not mapped:
        return {}
    ti = context["ti"]
    raw = ti.get_task_states(dag_id=ti.dag_id, task_ids=list(mapped), run_ids=[ti.run_id]).get(ti.run_id, {})
    return parse_task_state_keys(raw, mapped)
