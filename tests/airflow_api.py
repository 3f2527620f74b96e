"""Airflow's own REST API (and the plugins it mounts), served in-process on the test session's metadata DB.

``airflow_api()`` builds the api-server's FastAPI app (``airflow.api_fastapi.app.create_app``, the same app the
``airflow api-server`` command serves, with every plugin's FastAPI app mounted) and a client that calls it with
a JWT the auth manager signed for a named user -- what the UI holds after its login. Tests drive Airflow through
it the way the UI does: a human-in-the-loop answer is ``PATCH .../hitlDetails``, a page of the plugin is a GET.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def airflow_api(user: str | None = "alice", role: str = "admin") -> Iterator[Any]:
    """A ``TestClient`` for the api-server app, logged in as ``user`` (None: no credentials at all)."""
    from airflow.api_fastapi.app import create_app, get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from fastapi.testclient import TestClient

    app = create_app("core")
    with TestClient(app) as client:
        if user is not None:
            token = get_auth_manager().generate_jwt(SimpleAuthManagerUser(username=user, role=role))
            client.headers["Authorization"] = f"Bearer {token}"
        yield client


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 120.0, interval: float = 0.2) -> Any:
    """Poll ``probe`` until it returns something truthy (a state, never a time, decides the test)."""
    end = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


def task_instance(dag_id: str, task_id: str, map_index: int = -1) -> Any:
    """The newest run's instance of ``task_id`` (detached), or None."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        ti = (
            session.query(TaskInstance)
            .filter(TaskInstance.dag_id == dag_id, TaskInstance.task_id == task_id, TaskInstance.map_index == map_index)
            .order_by(TaskInstance.id.desc())
            .first()
        )
        if ti is not None:
            session.expunge(ti)
        return ti
