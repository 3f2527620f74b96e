"""Engines: one module per database. ``engine_for`` picks one from the Airflow connection's type."""

from __future__ import annotations

from importlib import import_module

from airflow_provider_shardmigrate.core.errors import InvalidTopologyError, MigrationFailedError
from airflow_provider_shardmigrate.core.topology import Shard
from airflow_provider_shardmigrate.engines.base import ShardEngine

#: connection type -> "module:Class", imported only when a shard of that type is used.
ENGINE_CLASSES: dict[str, str] = {
    "sqlite": "airflow_provider_shardmigrate.engines.sqlite:SqliteEngine",
    "postgres": "airflow_provider_shardmigrate.engines.postgres:PostgresEngine",
    "mysql": "airflow_provider_shardmigrate.engines.mysql:MySqlEngine",
}


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
    target = ENGINE_CLASSES.get(conn_type)
    if target is None:
        raise InvalidTopologyError(
            f"connection type '{conn_type}' is not supported; supported: {', '.join(sorted(ENGINE_CLASSES))}"
        )
    module, _, name = target.partition(":")
    cls: type[ShardEngine] = getattr(import_module(module), name)
    return cls


def engine_for(shard: Shard) -> ShardEngine:
    """A (not yet opened) engine for ``shard``, chosen from its Airflow connection's type."""
    conn_type = connection_type(shard.conn_id, shard.id)
    try:
        cls = engine_class(conn_type)
    except InvalidTopologyError as exc:
        raise InvalidTopologyError(f"connection '{shard.conn_id}': {exc.message}", shard_id=shard.id) from None
    return cls(shard.conn_id, shard.id)
