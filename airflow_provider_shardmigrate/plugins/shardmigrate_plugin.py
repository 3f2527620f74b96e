"""``ShardMigratePlugin``, registered through the ``airflow.plugins`` entry point (a plugin listed only in
provider info is not loaded with Airflow's default lazy provider discovery)."""

from __future__ import annotations

from typing import Any

from airflow.plugins_manager import AirflowPlugin


class ShardMigratePlugin(AirflowPlugin):
    """Mounts the progress and health endpoints under ``/shardmigrate`` on the api-server."""

    name = "shardmigrate"

    def __init__(self) -> None:
        # Built on instantiation, not import: processes that only list plugins do not build the app.
        from airflow_provider_shardmigrate.plugins.api import create_app

        self.fastapi_apps: list[dict[str, Any]] = [
            {"app": create_app(), "url_prefix": "/shardmigrate", "name": "shardmigrate"}
        ]
