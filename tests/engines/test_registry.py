"""The one table of connection types (engines/registry.py): what is supported, what is not yet, and the
messages that say so. Pure: no database."""

from __future__ import annotations

import pytest

from airflow_provider_shardmigrate.core.errors import InvalidTopologyError
from airflow_provider_shardmigrate.core.scripts import MONGO_VARIANT, SQL_VARIANTS
from airflow_provider_shardmigrate.engines import CONNECTION_TYPES, engine_class, implemented_types
from airflow_provider_shardmigrate.engines.mongo import MongoEngine
from airflow_provider_shardmigrate.engines.mssql import MsSqlEngine
from airflow_provider_shardmigrate.engines.mysql import MySqlEngine
from airflow_provider_shardmigrate.engines.postgres import PostgresEngine
from airflow_provider_shardmigrate.engines.sqlite import SqliteEngine


def test_every_connection_type_has_one_engine_introspector_and_extra() -> None:
    assert implemented_types() == ("mongo", "mssql", "mysql", "postgres", "postgresql", "sqlite")
    assert {t: engine_class(t) for t in implemented_types()} == {
        "mongo": MongoEngine,
        "mssql": MsSqlEngine,
        "mysql": MySqlEngine,
        "postgres": PostgresEngine,
        "postgresql": PostgresEngine,
        "sqlite": SqliteEngine,
    }
    for conn_type in implemented_types():
        family = CONNECTION_TYPES[conn_type]
        assert family.introspector and family.extra in {"sqlite", "postgres", "mysql", "mssql", "mongo"}
        assert engine_class(conn_type).variant in (*SQL_VARIANTS, MONGO_VARIANT)
    assert {CONNECTION_TYPES[t].extra for t in ("mssql", "mongo")} == {"mssql", "mongo"}


def test_install_hint_names_the_extra() -> None:
    assert CONNECTION_TYPES["postgres"].install_hint == (
        "PostgreSQL shards need the [postgres] extra: pip install 'airflow-provider-shardmigrate[postgres]'"
    )


@pytest.mark.parametrize(
    ("conn_type", "expected"),
    [
        (
            "http",
            "connection type 'http' is not supported; supported: mongo, mssql, mysql, postgres, postgresql, sqlite",
        ),
    ],
)
def test_unsupported_types_are_refused_clearly(conn_type: str, expected: str) -> None:
    with pytest.raises(InvalidTopologyError) as caught:
        engine_class(conn_type)
    assert expected in caught.value.message and caught.value.code == "shardmigrate.invalid_topology"
