"""Running real DAGs with ``dag.test()`` against the session's Airflow metadata DB."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

BUNDLE = "shardmigrate-tests"


@dataclass
class RunOutcome:
    state: str
    run_id: str
    #: (task_id, map_index) -> state
    tasks: dict[tuple[str, int], str]
    #: shard_id -> per-shard XCom of the apply/rollback tasks
    shards: dict[str, dict[str, Any]]
    #: rendered map index (Grid label) -> state, for mapped shard tasks
    labels: dict[str, str]
    #: (task_id, map_index) -> (start, end)
    times: dict[tuple[str, int], tuple[Any, Any]]
    report: dict[str, Any] | None
    xcoms: dict[tuple[str, int], Any] = field(default_factory=dict)
    #: (task_id, map_index) -> rendered map index (Grid label), for mapped task instances
    labels_by_task: dict[tuple[str, int], str] = field(default_factory=dict)

    def outcomes(self) -> dict[str, str]:
        assert self.report is not None, f"no report (tasks: {self.tasks})"
        return {shard: status["outcome"] for shard, status in self.report["shards"].items()}


def register(dag: Any) -> None:
    """Serialize ``dag`` into the metadata DB under a test bundle so ``dag.test()`` accepts it."""
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db
    from airflow.models.dagbundle import DagBundleModel
    from airflow.utils.session import create_session

    with create_session() as session:
        if session.get(DagBundleModel, BUNDLE) is None:
            session.add(DagBundleModel(name=BUNDLE))
    bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])  # an empty folder: nothing to parse
    bag.bag_dag(dag)
    sync_bag_to_db(bag, BUNDLE, None)


def run_dag(dag: Any, conf: dict[str, Any] | None = None) -> RunOutcome:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    register(dag)
    dr = dag.test(run_conf=conf or {})
    with create_session() as session:
        tis = dr.get_task_instances(session=session)
        rows = session.query(XComModel).filter(XComModel.dag_id == dag.dag_id, XComModel.run_id == dr.run_id).all()
        xcoms = {(x.task_id, x.map_index): XComModel.deserialize_value(x) for x in rows if x.key == "return_value"}
        tasks = {(ti.task_id, ti.map_index): str(ti.state) for ti in tis}
        labels = {ti.rendered_map_index: str(ti.state) for ti in tis if ti.rendered_map_index}
        labels_by_task = {(ti.task_id, ti.map_index): ti.rendered_map_index for ti in tis if ti.rendered_map_index}
        times = {(ti.task_id, ti.map_index): (ti.start_date, ti.end_date) for ti in tis}
    shards = {
        value["shard_id"]: value
        for (task_id, _), value in xcoms.items()
        if task_id.startswith("shards.") and isinstance(value, dict) and "shard_id" in value
    }
    return RunOutcome(
        state=str(dr.state),
        run_id=dr.run_id,
        tasks=tasks,
        shards=shards,
        labels=labels,
        times=times,
        report=xcoms.get(("report", -1)),
        xcoms=xcoms,
        labels_by_task=labels_by_task,
    )


@pytest.fixture
def dag_runner(airflow_db: Any) -> Callable[..., RunOutcome]:
    return run_dag
