"""Reading what other tasks of the run left behind: per-shard statuses from XCom, and task states.

Airflow's task-state query (``ti.get_task_states``) answers with keys of its own making -- ``task_id``
for a plain task, ``f"{task_id}_{map_index}"`` for a mapped one. There is no public structured form, so
that format is read here and only here (tests/operators/test_context.py fails if Airflow changes it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from airflow_provider_shardmigrate.core.status import ShardStatus

#: A lane pushes the statuses of the shards it finished as lists under ``statuses:0``, ``statuses:1``, ... (at
#: most every ``operators.lanes.FLUSH_SECONDS``; at once when a shard ends that long after the previous push).
LANE_STATUSES_KEY_PREFIX = "statuses:"
#: A lane's coordination record (lane, failures, done), read by the other lanes.
LANE_STATE_KEY = "lane_state"


def lane_statuses_key(sequence: int) -> str:
    return f"{LANE_STATUSES_KEY_PREFIX}{sequence}"


def statuses_in(values: Iterable[Any]) -> list[ShardStatus]:
    """The per-shard statuses in XCom values: a per-shard task returns one, a lane or a rollback a list."""
    found: list[ShardStatus] = []
    for value in values:
        items = value if isinstance(value, list) else [value]
        found.extend(ShardStatus.from_xcom(item) for item in items if ShardStatus.is_xcom(item))
    return found


def pull_statuses(context: Any, task_ids: Sequence[str]) -> list[ShardStatus]:
    """Every per-shard status returned by ``task_ids`` in this run (all map indexes); absent ones are skipped."""
    if not task_ids:
        return []
    ti = context["ti"]
    values: Iterable[Any] = ti.xcom_pull(task_ids=list(task_ids), key="return_value") or []
    return statuses_in(values)


def gate_refused(context: Any, requires: Sequence[str]) -> bool:
    """Whether a gate task this one depends on (the preflight) failed -- whatever the trigger rule."""
    if not requires:
        return False
    ti = context["ti"]
    refused = ti.get_ti_count(
        dag_id=ti.dag_id, task_ids=list(requires), run_ids=[ti.run_id], states=["failed", "upstream_failed"]
    )
    return bool(refused)


def failed_count(context: Any, task_ids: Sequence[str]) -> int:
    """Task instances of ``task_ids`` in this run that failed (or are failing into a retry)."""
    if not task_ids:
        return 0
    ti = context["ti"]
    return int(
        ti.get_ti_count(
            dag_id=ti.dag_id, task_ids=list(task_ids), run_ids=[ti.run_id], states=["failed", "up_for_retry"]
        )
    )


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
