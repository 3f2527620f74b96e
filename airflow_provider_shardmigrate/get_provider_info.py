"""Provider metadata for Airflow's provider manager (entry point ``apache_airflow_provider``)."""

from __future__ import annotations

from typing import Any


def get_provider_info() -> dict[str, Any]:
    from airflow_provider_shardmigrate import __version__

    return {
        "package-name": "airflow-provider-shardmigrate",
        "name": "Shard Migrate",
        "description": "Roll schema migrations out across a fleet of database shards: sequential, parallel, "
        "rolling and canary-first rollouts, idempotent history, rollback and drift detection.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Shard Migrate",
                "tags": ["software"],
            }
        ],
        "operators": [
            {
                "integration-name": "Shard Migrate",
                "python-modules": [
                    "airflow_provider_shardmigrate.operators.shard",
                    "airflow_provider_shardmigrate.operators.canary",
                    "airflow_provider_shardmigrate.operators.report",
                    "airflow_provider_shardmigrate.operators.invalid",
                    "airflow_provider_shardmigrate.operators.preflight",
                ],
            }
        ],
        "sensors": [
            {
                "integration-name": "Shard Migrate",
                "python-modules": ["airflow_provider_shardmigrate.sensors.drift"],
            }
        ],
    }
