"""The one table of Airflow connection types the provider knows: which engine runs a shard of that type,
which module introspects its schema, and which pip extra brings its provider and driver.

Everything that turns a connection into database talk -- apply, rollback, history reads, the CLI, drift
detection, the preflight gate -- looks the type up here, so a type is either supported everywhere or
nowhere. Adding an engine (SQL Server, MongoDB) means filling in its row.

Nothing here imports Airflow or a driver: modules are named, and imported only when a shard of that type
is used.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import import_module

from airflow_provider_shardmigrate.core.errors import InvalidTopologyError

_PACKAGE = "airflow_provider_shardmigrate.engines"
DISTRIBUTION = "airflow-provider-shardmigrate"


@dataclass(frozen=True)
class EngineFamily:
    """One kind of database, as far as the provider is concerned."""

    #: Human name, for messages ("PostgreSQL").
    name: str
    #: The pip extra that installs its Airflow provider and driver (``[postgres]``).
    extra: str
    #: ``"module:Class"`` of its ShardEngine; None while the engine is not implemented.
    engine: str | None
    #: Module with ``introspect(conn, depth)`` for drift detection; None when drift cannot read it.
    introspector: str | None
    #: Modules that must all import (the Airflow provider's hook).
    provider_modules: tuple[str, ...]
    #: Driver modules, at least one of which must import (the hook picks whichever is there).
    driver_modules: tuple[str, ...]

    @property
    def install_hint(self) -> str:
        return f"{self.name} shards need the [{self.extra}] extra: pip install '{DISTRIBUTION}[{self.extra}]'"

    def require_installed(self) -> None:
        """Raise InvalidTopologyError naming the extra when the provider or every driver is missing."""
        _check_installed(self)


SQLITE = EngineFamily(
    name="SQLite",
    extra="sqlite",
    engine=f"{_PACKAGE}.sqlite:SqliteEngine",
    introspector=f"{_PACKAGE}.introspect_sqlite",
    provider_modules=("airflow.providers.sqlite.hooks.sqlite",),
    driver_modules=("sqlite3",),
)
POSTGRES = EngineFamily(
    name="PostgreSQL",
    extra="postgres",
    engine=f"{_PACKAGE}.postgres:PostgresEngine",
    introspector=f"{_PACKAGE}.introspect_postgres",
    provider_modules=("airflow.providers.postgres.hooks.postgres",),
    driver_modules=("psycopg", "psycopg2"),
)
MYSQL = EngineFamily(
    name="MySQL/MariaDB",
    extra="mysql",
    engine=f"{_PACKAGE}.mysql:MySqlEngine",
    introspector=f"{_PACKAGE}.introspect_mysql",
    provider_modules=("airflow.providers.mysql.hooks.mysql",),
    driver_modules=("MySQLdb", "mysql.connector"),
)
MSSQL = EngineFamily(
    name="SQL Server",
    extra="mssql",
    engine=f"{_PACKAGE}.mssql:MsSqlEngine",
    introspector=f"{_PACKAGE}.introspect_mssql",
    provider_modules=("airflow.providers.microsoft.mssql.hooks.mssql",),
    driver_modules=("pymssql",),
)
MONGO = EngineFamily(
    name="MongoDB",
    extra="mongo",
    engine=f"{_PACKAGE}.mongo:MongoEngine",
    introspector=f"{_PACKAGE}.introspect_mongo",
    provider_modules=("airflow.providers.mongo.hooks.mongo",),
    driver_modules=("pymongo",),
)

#: Airflow connection type -> its family. ``postgresql`` is how some URIs and secrets backends spell it.
CONNECTION_TYPES: dict[str, EngineFamily] = {
    "sqlite": SQLITE,
    "postgres": POSTGRES,
    "postgresql": POSTGRES,
    "mysql": MYSQL,
    "mssql": MSSQL,
    "mongo": MONGO,
}


def implemented_types() -> tuple[str, ...]:
    """Connection types with an engine, sorted (for messages)."""
    return tuple(sorted(t for t, family in CONNECTION_TYPES.items() if family.engine))


def family_of(conn_type: str) -> EngineFamily:
    """The family of an implemented connection type, or InvalidTopologyError saying what is supported."""
    family = CONNECTION_TYPES.get(conn_type)
    supported = ", ".join(implemented_types())
    if family is None:
        raise InvalidTopologyError(f"connection type '{conn_type}' is not supported; supported: {supported}")
    if family.engine is None:
        raise InvalidTopologyError(
            f"{family.name} shards (connection type '{conn_type}') are not implemented yet; supported: {supported}"
        )
    return family


@cache
def _installed(family: EngineFamily) -> None:
    """Import what the family needs once per process; raises ImportError (not cached) when it cannot."""
    for module in family.provider_modules:
        import_module(module)
    problems: list[str] = []
    for module in family.driver_modules:
        try:
            import_module(module)
            return
        except ImportError as exc:
            problems.append(str(exc))
    raise ImportError("; ".join(problems) or "no driver")


def _check_installed(family: EngineFamily) -> None:
    try:
        _installed(family)
    except ImportError as exc:
        raise InvalidTopologyError(f"{family.install_hint} ({exc})") from None


def load_engine_class(family: EngineFamily) -> type:
    """The family's engine class, after checking its extra is installed."""
    if family.engine is None:  # family_of() refuses these first; kept for a direct caller
        raise InvalidTopologyError(f"{family.name} shards are not implemented yet")
    family.require_installed()
    module, _, name = family.engine.partition(":")
    cls: type = getattr(import_module(module), name)
    return cls
