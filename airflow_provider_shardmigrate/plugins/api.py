"""The plugin's FastAPI app, served by the api-server under ``/shardmigrate``: rollout progress, fleet health,
the fleet page and its data, and the API reference. Airflow does not authenticate plugin apps, so every
route -- the page, its files and the API reference included -- requires a logged-in user (a Bearer token or
the UI session cookie), and each answer only shows DAGs the user may read (the rules of the REST API).
Everything is read from Airflow's metadata database; no route opens a shard connection.

    GET /shardmigrate/progress/{dag_id}                 progress of the latest run of a migration DAG
    GET /shardmigrate/progress/{dag_id}/{run_id}        one run
    GET /shardmigrate/health[?dag_id=shardmigrate_drift] health from the newest drift report
    GET /shardmigrate/fleet                             the fleet page (an external view of the Airflow UI)
    GET /shardmigrate/fleet/summary                     fleet status summary, drift, latest runs, live progress
    GET /shardmigrate/fleet/matrix                      one page of the shards x migrations matrix, filtered
    GET /shardmigrate/docs, /redoc, /openapi.json       the API reference (plain HTML, no CDN) and its schema
"""

# No `from __future__ import annotations` here: FastAPI must see the dependency types (SessionDep) of the
# route functions, which are imported inside create_app.
from typing import TYPE_CHECKING, Any

from airflow_provider_shardmigrate.plugins.fleet import DRIFT_DAG_ID, DRIFT_TASK_ID, STATUS_TASK_ID

#: The task type of the first task of every shardmigrate rollout / rollback DAG.
PREFLIGHT_TASK_TYPE = "MigrationPreflightOperator"
URL_PREFIX = "/shardmigrate"

if TYPE_CHECKING:
    from fastapi import FastAPI


def ui_base() -> str:
    """The Airflow UI's base path (``[api] base_url`` may put it below a prefix), for links out of the page."""
    from urllib.parse import urlparse

    from airflow.configuration import conf

    return urlparse(conf.get("api", "base_url", fallback="") or "").path.rstrip("/")


def _status_part(session: Any, dag_id: str, readable: bool) -> dict[str, Any]:
    from airflow_provider_shardmigrate.plugins.fleet import FleetStatusError
    from airflow_provider_shardmigrate.plugins.metadata import fleet_status

    if not readable:
        return {"published": False, "dag_id": dag_id, "message": f"You may not read the DAG '{dag_id}'."}
    try:
        found = fleet_status(session, dag_id, STATUS_TASK_ID)
    except FleetStatusError as exc:
        return {"published": False, "dag_id": dag_id, "message": f"The published fleet status is not readable: {exc}"}
    if found is None:
        return {
            "published": False,
            "dag_id": dag_id,
            "message": f"No fleet status has been published yet: the DAG '{dag_id}' (task '{STATUS_TASK_ID}') "
            "has not produced one. Unpause or trigger it to see which migration is on which shard.",
        }
    status, run_id, published_at = found
    return {"published": True, "dag_id": dag_id, "run_id": run_id, "published_at": published_at, **status.summary()}


def _drift_part(session: Any, dag_id: str, readable: bool) -> dict[str, Any]:
    from airflow_provider_shardmigrate.plugins.fleet import drift_summary
    from airflow_provider_shardmigrate.plugins.metadata import latest_publish

    if not readable:
        return {"published": False, "dag_id": dag_id, "message": f"You may not read the DAG '{dag_id}'."}
    found = latest_publish(session, dag_id, DRIFT_TASK_ID)
    if found is None:
        return {
            "published": False,
            "dag_id": dag_id,
            "message": f"No drift report has been published yet: the DAG '{dag_id}' has not run.",
        }
    value, run_id, published_at = found
    return {"published": True, "dag_id": dag_id, "run_id": run_id, "published_at": published_at, **drift_summary(value)}


def _matrix_page(session: Any, dag_id: str, filters: dict[str, Any], *, offset: int, limit: int) -> dict[str, Any]:
    from fastapi import HTTPException

    from airflow_provider_shardmigrate.plugins.fleet import FleetStatusError
    from airflow_provider_shardmigrate.plugins.metadata import fleet_status

    try:
        found = fleet_status(session, dag_id, STATUS_TASK_ID)
    except FleetStatusError as exc:
        raise HTTPException(500, f"the published fleet status is not readable: {exc}") from None
    if found is None:
        raise HTTPException(404, f"no fleet status has been published yet by '{dag_id}'")
    status, run_id, published_at = found
    try:
        page = status.rows(offset=offset, limit=limit, **filters)
    except FleetStatusError as exc:
        raise HTTPException(400, str(exc)) from None
    return {"dag_id": dag_id, "run_id": run_id, "published_at": published_at, **page}


def create_app() -> Any:
    from airflow.api_fastapi.core_api.security import get_user
    from fastapi import Depends, FastAPI

    # FastAPI's own docs pages would load without a login and pull their scripts from a CDN: off, and served
    # by _add_docs_routes behind the login, as plain HTML.
    app = FastAPI(
        title="shardmigrate",
        dependencies=[Depends(get_user)],
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    _add_progress_routes(app)
    _add_fleet_routes(app)
    _add_docs_routes(app)
    return app


def _add_progress_routes(app: "FastAPI") -> None:
    from airflow.api_fastapi.common.db.common import SessionDep
    from airflow.api_fastapi.core_api.security import requires_access_dag
    from airflow.models.dagbag import DBDagBag
    from airflow.models.dagrun import DagRun
    from fastapi import Depends, HTTPException

    from airflow_provider_shardmigrate.dags.layout import PREFLIGHT_TASK_ID, migration_id_of
    from airflow_provider_shardmigrate.plugins.metadata import latest_publish
    from airflow_provider_shardmigrate.progress import read_progress

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
        """Progress of the latest run of a rollout or rollback DAG."""
        dag_run = session.query(DagRun).filter(DagRun.dag_id == dag_id).order_by(DagRun.run_after.desc()).first()
        if dag_run is None:
            raise HTTPException(404, f"no run of '{dag_id}'")
        return progress_of(session, dag_run)

    @app.get("/progress/{dag_id}/{run_id}", dependencies=[Depends(requires_access_dag("GET"))])
    def run_progress(dag_id: str, run_id: str, session: SessionDep) -> dict[str, Any]:
        """Progress of one run of a rollout or rollback DAG."""
        dag_run = session.query(DagRun).filter(DagRun.dag_id == dag_id, DagRun.run_id == run_id).one_or_none()
        if dag_run is None:
            raise HTTPException(404, f"no run '{run_id}' of '{dag_id}'")
        return progress_of(session, dag_run)

    @app.get("/health", dependencies=[Depends(requires_access_dag("GET"))])
    def health(session: SessionDep, dag_id: str = DRIFT_DAG_ID) -> dict[str, Any]:
        """The newest drift report the drift DAG published, with the fleet's health."""
        found = latest_publish(session, dag_id, DRIFT_TASK_ID)
        if found is None:
            raise HTTPException(404, f"no drift report yet: '{dag_id}' has not published one")
        value, run_id, published_at = found
        return {"dag_id": dag_id, "run_id": run_id, "published_at": published_at, **value}


def _add_fleet_routes(app: "FastAPI") -> None:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails
    from airflow.api_fastapi.common.db.common import SessionDep
    from airflow.api_fastapi.core_api.security import GetUserDep
    from fastapi import HTTPException, Query, Response

    from airflow_provider_shardmigrate.plugins.fleet import DEFAULT_PAGE, MAX_PAGE
    from airflow_provider_shardmigrate.plugins.metadata import migration_runs
    from airflow_provider_shardmigrate.plugins.pages import ASSETS, asset

    def can_read(user: Any, dag_id: str) -> bool:
        return bool(get_auth_manager().is_authorized_dag(method="GET", details=DagDetails(id=dag_id), user=user))

    @app.get("/fleet", include_in_schema=False)
    def fleet_page() -> Response:
        return Response(asset("fleet.html"), media_type=ASSETS["fleet.html"], headers={"Cache-Control": "no-store"})

    @app.get("/static/{name}", include_in_schema=False)
    def static_file(name: str) -> Response:
        content = asset(name)
        if content is None:
            raise HTTPException(404, f"no file '{name}'")
        return Response(content, media_type=ASSETS[name], headers={"X-Content-Type-Options": "nosniff"})

    @app.get("/fleet/summary")
    def fleet_summary(
        user: GetUserDep,
        session: SessionDep,
        fleet: str = "",
        drift_dag_id: str = DRIFT_DAG_ID,
    ) -> dict[str, Any]:
        """The fleet page's summary: the fleet status (counts per migration, no rows) of ``fleet`` (a named
        fleet's ``shardmigrate_status__<fleet>``), the fleets there are, drift health with the drifted tables,
        and every migration DAG's latest run with live progress while it runs."""
        from airflow_provider_shardmigrate.plugins.fleet import fleet_names, status_dag_id

        manager = get_auth_manager()
        readable = manager.get_authorized_dag_ids(user=user, method="GET", session=session)
        status_dag = status_dag_id(fleet)
        return {
            "fleet": fleet,
            "fleets": fleet_names(sorted(readable)),
            "status": _status_part(session, status_dag, can_read(user, status_dag)),
            "drift": _drift_part(session, drift_dag_id, can_read(user, drift_dag_id)),
            "migrations": migration_runs(session, ui_base(), readable),
        }

    @app.get("/fleet/matrix")
    def fleet_matrix(
        user: GetUserDep,
        session: SessionDep,
        offset: int = Query(0, ge=0),
        limit: int = Query(DEFAULT_PAGE, ge=1, le=MAX_PAGE),
        q: str = "",
        migration: str | None = None,
        status: str | None = Query(None, description="legend letter(s): a shard matches if a cell holds one"),
        active: bool | None = None,
        fleet: str = "",
    ) -> dict[str, Any]:
        """One page of the shards x migrations matrix of ``fleet``'s newest fleet status, filtered by shard id
        (substring, any case), by a migration's status, and by active/inactive."""
        from airflow_provider_shardmigrate.plugins.fleet import status_dag_id

        dag_id = status_dag_id(fleet)
        if not can_read(user, dag_id):
            raise HTTPException(403, f"you may not read the DAG '{dag_id}'")
        filters = {"query": q, "migration": migration, "status": status, "active": active}
        return _matrix_page(session, dag_id, filters, offset=offset, limit=limit)


def _add_docs_routes(app: "FastAPI") -> None:
    from fastapi.responses import HTMLResponse, JSONResponse

    from airflow_provider_shardmigrate.plugins.pages import api_reference

    @app.get("/openapi.json", include_in_schema=False)
    def openapi_schema() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False)
    @app.get("/redoc", include_in_schema=False)
    def api_docs() -> HTMLResponse:
        return HTMLResponse(api_reference(app.openapi()))
