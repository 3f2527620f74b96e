"""The plugin's FastAPI app: progress of a rollout while it runs, and fleet health from the latest drift
report. Airflow does not authenticate plugin apps, so every route requires a logged-in user and read
access to the DAG it reads (the same rules as the REST API).

    GET /shardmigrate/progress/{dag_id}                 the latest run of a migration DAG
    GET /shardmigrate/progress/{dag_id}/{run_id}        one run
    GET /shardmigrate/health[?dag_id=shardmigrate_drift] health from the newest drift report
"""

# No `from __future__ import annotations` here: FastAPI must see the dependency types (SessionDep) of the
# route functions, which are imported inside create_app.
from typing import Any

DRIFT_DAG_ID = "shardmigrate_drift"
PUBLISH_TASK_ID = "publish"
#: The task type of the first task of every shardmigrate rollout / rollback DAG.
PREFLIGHT_TASK_TYPE = "MigrationPreflightOperator"


def create_app() -> Any:
    from airflow.api_fastapi.common.db.common import SessionDep
    from airflow.api_fastapi.core_api.security import get_user, requires_access_dag
    from airflow.models.dagbag import DBDagBag
    from airflow.models.dagrun import DagRun
    from airflow.models.xcom import XComModel
    from fastapi import Depends, FastAPI, HTTPException

    from airflow_provider_shardmigrate.dags.layout import PREFLIGHT_TASK_ID, migration_id_of
    from airflow_provider_shardmigrate.progress import read_progress

    app = FastAPI(title="shardmigrate", dependencies=[Depends(get_user)])
    dag_bag = DBDagBag()

    def progress_of(session: Any, dag_run: Any) -> dict[str, Any]:
        dag = dag_bag.get_dag_for_run(dag_run, session=session)
        preflight = dag.task_dict.get(PREFLIGHT_TASK_ID) if dag is not None else None
        if getattr(preflight, "task_type", None) != PREFLIGHT_TASK_TYPE:
            raise HTTPException(404, f"'{dag_run.dag_id}' is not a shardmigrate rollout DAG")
        progress = read_progress(
            session, dag_id=dag_run.dag_id, run_id=dag_run.run_id, migration_id=migration_id_of(dag_run.dag_id)
        )
        return {**progress.to_dict(), "dag_id": dag_run.dag_id, "run_state": str(dag_run.state)}

    @app.get("/progress/{dag_id}", dependencies=[Depends(requires_access_dag("GET"))])
    def latest_progress(dag_id: str, session: SessionDep) -> dict[str, Any]:
        dag_run = session.query(DagRun).filter(DagRun.dag_id == dag_id).order_by(DagRun.run_after.desc()).first()
        if dag_run is None:
            raise HTTPException(404, f"no run of '{dag_id}'")
        return progress_of(session, dag_run)

    @app.get("/progress/{dag_id}/{run_id}", dependencies=[Depends(requires_access_dag("GET"))])
    def run_progress(dag_id: str, run_id: str, session: SessionDep) -> dict[str, Any]:
        dag_run = session.query(DagRun).filter(DagRun.dag_id == dag_id, DagRun.run_id == run_id).one_or_none()
        if dag_run is None:
            raise HTTPException(404, f"no run '{run_id}' of '{dag_id}'")
        return progress_of(session, dag_run)

    @app.get("/health", dependencies=[Depends(requires_access_dag("GET"))])
    def health(session: SessionDep, dag_id: str = DRIFT_DAG_ID) -> dict[str, Any]:
        row = (
            session.query(XComModel)
            .filter(
                XComModel.dag_id == dag_id,
                XComModel.task_id == PUBLISH_TASK_ID,
                XComModel.key == "return_value",
            )
            .order_by(XComModel.timestamp.desc())
            .first()
        )
        if row is None:
            raise HTTPException(404, f"no drift report yet: '{dag_id}' has not published one")
        value = XComModel.deserialize_value(row)
        return {"dag_id": dag_id, "run_id": row.run_id, "published_at": row.timestamp.isoformat(), **value}

    return app
