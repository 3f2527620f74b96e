"""A small Airflow REST v2 client (Bearer token) with pagination and run helpers."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx

TERMINAL_RUN_STATES = frozenset({"success", "failed"})


class ApiError(AssertionError):
    """The API answered something other than what the caller expected."""


def get_token(url: str, username: str, password: str) -> str:
    """A JWT for the REST API from ``POST /auth/token`` (SimpleAuthManager or FAB)."""
    response = httpx.post(f"{url}/auth/token", json={"username": username, "password": password}, timeout=30)
    if response.status_code not in (200, 201):
        raise ApiError(f"POST /auth/token answered {response.status_code}: {response.text[:300]}")
    return str(response.json()["access_token"])


class AirflowApi:
    """A small REST v2 client (Bearer token) with pagination and run helpers."""

    def __init__(self, url: str, token: str | None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.Client(base_url=url, headers=headers, timeout=30)

    def request(
        self, method: str, path: str, *, expect: int | tuple[int, ...] | None = None, **kwargs: Any
    ) -> httpx.Response:
        response = self.client.request(method, path, **kwargs)
        wanted = (expect,) if isinstance(expect, int) else expect
        if wanted is not None and response.status_code not in wanted:
            raise ApiError(f"{method} {path} -> {response.status_code} (expected {wanted}): {response.text[:1000]}")
        return response

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None}, expect=200).json()

    def paginate(
        self,
        path: str,
        key: str,
        *,
        page_size: int = 100,
        params: dict[str, Any] | None = None,
        pages: list[int] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Every item of a list endpoint, ``page_size`` at a time (the API caps ``limit`` at 100); ``pages``
        collects the size of each page fetched."""
        offset = 0
        while True:
            query = {k: v for k, v in (params or {}).items() if v is not None}
            data = self.get(path, limit=page_size, offset=offset, **query)
            items = data[key]
            if pages is not None:
                pages.append(len(items))
            yield from items
            offset += len(items)
            if not items or offset >= data["total_entries"]:
                return

    def dag_ids(self) -> set[str]:
        return {d["dag_id"] for d in self.paginate("/api/v2/dags", "dags")}

    def import_errors(self) -> list[dict[str, Any]]:
        return list(self.paginate("/api/v2/importErrors", "import_errors"))

    # -- runs -------------------------------------------------------------------------------------------
    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None, run_id: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"logical_date": None, "conf": conf or {}}
        if run_id:
            body["dag_run_id"] = run_id
        return dict(self.request("POST", f"/api/v2/dags/{dag_id}/dagRuns", json=body, expect=200).json())

    def run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return dict(self.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}"))

    def wait_run(
        self, dag_id: str, run_id: str, timeout: float = 180.0, *, alive: Callable[[], None] | None = None
    ) -> dict[str, Any]:
        """Poll the run until it is success/failed; fail with its task states after ``timeout``."""
        end = time.monotonic() + timeout
        while True:
            run = self.run(dag_id, run_id)
            if run["state"] in TERMINAL_RUN_STATES:
                return run
            if alive is not None:
                alive()
            if time.monotonic() > end:
                states = {(t["task_id"], t["map_index"]): t["state"] for t in self.task_instances(dag_id, run_id)}
                raise ApiError(f"run {dag_id}/{run_id} still {run['state']} after {timeout:g}s; tasks: {states}")
            time.sleep(0.5)

    def task_instances(
        self, dag_id: str, run_id: str, *, page_size: int = 100, pages: list[int] | None = None
    ) -> list[dict[str, Any]]:
        return list(
            self.paginate(
                f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances",
                "task_instances",
                page_size=page_size,
                pages=pages,
            )
        )

    def xcom(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1, key: str = "return_value") -> Any:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}"
        data = self.request("GET", path, params={"map_index": map_index}, expect=200).json()
        value = data["value"]
        return json.loads(value) if isinstance(value, str) and value[:1] in "{[" else value
