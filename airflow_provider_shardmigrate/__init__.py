"""airflow-provider-shardmigrate: roll schema migrations out across a fleet of database shards.

The DAG builders are importable from here; they are loaded lazily so importing the package (for
example by ``airflow providers list``) does not import Airflow's authoring layer.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "build_drift_dag", "build_migration_dag", "build_rollback_dag", "load_migration_dags"]

_LAZY = {
    "build_migration_dag": "airflow_provider_shardmigrate.dags.migration",
    "build_rollback_dag": "airflow_provider_shardmigrate.dags.rollback",
    "load_migration_dags": "airflow_provider_shardmigrate.dags.loader",
    "build_drift_dag": "airflow_provider_shardmigrate.dags.drift",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'airflow_provider_shardmigrate' has no attribute {name!r}")
