"""``ShardMigratePlugin``, registered through the ``airflow.plugins`` entry point (a plugin listed only in
provider info is not loaded with Airflow's default lazy provider discovery).

Every Airflow process that loads plugins -- each task process on a worker too -- instantiates the plugin, but
only the api-server mounts FastAPI apps (it reads ``fastapi_apps`` when it builds its own app; so do
``airflow plugins`` and ``GET /api/v2/plugins``). So the app is built when ``fastapi_apps`` is first read,
not when the plugin is created: a task process never imports FastAPI, the execution API or the plugin's
routes for nothing, and its log stays free of their import-time warnings.
"""

from __future__ import annotations

from typing import Any

from airflow.plugins_manager import AirflowPlugin

from airflow_provider_shardmigrate.dags.layout import FLEET_VIEW_ROUTE


def _ui_path(path: str) -> str:
    from airflow_provider_shardmigrate.plugins.api import URL_PREFIX, ui_base

    return f"{ui_base()}{URL_PREFIX}/{path}"


class ShardMigratePlugin(AirflowPlugin):
    """Mounts the provider's endpoints under ``/shardmigrate`` and adds the fleet page to the UI's
    navigation (Browse), rendered inside the Airflow UI behind its login."""

    name = "shardmigrate"

    def __init__(self) -> None:
        self._fastapi_apps: list[dict[str, Any]] | None = None
        self.external_views: list[dict[str, Any]] = [
            {
                "name": "Shard fleet",
                "href": _ui_path("fleet"),
                "icon": _ui_path("static/icon.svg"),
                "destination": "nav",
                "category": "browse",
                "url_route": FLEET_VIEW_ROUTE,
            }
        ]

    @property  # type: ignore[override]
    def fastapi_apps(self) -> list[dict[str, Any]]:
        """The app, built on first use (the api-server), never in a process that does not serve it."""
        if self._fastapi_apps is None:
            from airflow_provider_shardmigrate.plugins.api import URL_PREFIX, create_app

            self._fastapi_apps = [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "shardmigrate"}]
        return self._fastapi_apps

    @fastapi_apps.setter
    def fastapi_apps(self, value: list[dict[str, Any]]) -> None:
        self._fastapi_apps = list(value)
