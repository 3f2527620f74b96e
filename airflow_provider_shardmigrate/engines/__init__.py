"""Engines: one module per database. ``engine_for`` picks one from the Airflow connection's type, through
the one table of connection types in engines/registry.py."""

from __future__ import annotations

from airflow_provider_shardmigrate.core.errors import InvalidTopologyError, MigrationFailedError
from airflow_provider_shardmigrate.core.topology import Shard
from airflow_provider_shardmigrate.engines.base import ShardEngine
from airflow_provider_shardmigrate.engines.registry import (
    CONNECTION_TYPES,
    EngineFamily,
    family_of,
    implemented_types,
    load_engine_class,
)

__all__ = [
    "CONNECTION_TYPES",
    "EngineFamily",
    "ShardEngine",
    "connection_type",
    "engine_class",
    "engine_for",
    "implemented_types",
]


def connection_type(conn_id: str, shard_id: str | None = None) -> str:
    from airflow.sdk import BaseHook

    try:
        connection = BaseHook.get_connection(conn_id)
    except Exception as exc:  # Airflow raises AirflowNotFoundException (core) or its SDK twin
        if (
            "isn't defined" in str(exc)
            or "not found" in str(exc).lower()
            or type(exc).__name__.endswith("NotFoundException")
        ):
            raise InvalidTopologyError(
                f"Airflow connection '{conn_id}' is not defined (define it in the UI, as AIRFLOW_CONN_"
                f"{conn_id.upper()}, or in a secrets backend)",
                shard_id=shard_id,
            ) from None
        raise MigrationFailedError(f"cannot read Airflow connection '{conn_id}': {exc}", shard_id=shard_id) from exc
    return str(connection.conn_type or "")


def engine_class(conn_type: str) -> type[ShardEngine]:
    """The engine class serving ``conn_type``; InvalidTopologyError when unknown or its extra is missing."""
    cls: type[ShardEngine] = load_engine_class(family_of(conn_type))
    return cls


def engine_for(shard: Shard, *, conn_type: str | None = None) -> ShardEngine:
    """A (not yet opened) engine for ``shard``, chosen from its Airflow connection's type (looked up unless
    the caller already knows it)."""
    conn_type = conn_type if conn_type is not None else connection_type(shard.conn_id, shard.id)
    try:
        cls = engine_class(conn_type)
    except InvalidTopologyError as exc:
        raise InvalidTopologyError(f"connection '{shard.conn_id}': {exc.message}", shard_id=shard.id) from None
    return cls(shard.conn_id, shard.id)
