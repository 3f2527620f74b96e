"""Fleets for the drift tests: real SQLite files, PostgreSQL and MariaDB databases.

The shard databases come from the session's servers (tests/server_fixtures.py: a server that cannot be
reached FAILS the test, naming it). Fleets here are module-scoped -- the engine x depth x drift-case
matrix reads the same ten shards of each engine many times -- with their ``AIRFLOW_CONN_*`` variables
set for the module and removed, with the databases, when it ends.

``CASES`` is the drift catalogue: a baseline DDL with one knob per kind of difference, each case turning
one knob, and the single difference it must produce with the shallowest depth that can see it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from airflow_provider_shardmigrate.core.topology import DriftDepth, Topology, load_topology
from tests.conftest import SqliteFleet
from tests.server_fixtures import MySqlFleet, PostgresFleet

ENGINES = ("sqlite", "postgres", "mysql")
PREFIX = {"sqlite": "lite", "postgres": "pg", "mysql": "my"}

# -- the drift catalogue ----------------------------------------------------------------------------------

_DDL = {
    "postgres": """
CREATE TABLE customers (id integer PRIMARY KEY, email varchar(100) NOT NULL, name {name_type}{name_null},
    status varchar(20) DEFAULT {status_default});
CREATE {email_unique}INDEX ix_customers_email ON customers (email);
CREATE TABLE orders (id integer PRIMARY KEY, customer_id integer NOT NULL, total numeric(10,2) NOT NULL,
    created_at timestamp{fk}{check});
CREATE INDEX ix_orders_customer ON orders (customer_id);
{created_index}
{audit}
{promo}
""",
    "sqlite": """
CREATE TABLE customers (id INTEGER PRIMARY KEY, email VARCHAR(100) NOT NULL, name {name_type}{name_null},
    status VARCHAR(20) DEFAULT {status_default});
CREATE {email_unique}INDEX ix_customers_email ON customers (email);
CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL, total NUMERIC(10,2) NOT NULL,
    created_at TIMESTAMP{fk}{check});
CREATE INDEX ix_orders_customer ON orders (customer_id);
{created_index}
{audit}
{promo}
""",
    # MySQL: the FK's index is declared first (else InnoDB invents one and a missing FK also drops it).
    "mysql": """
CREATE TABLE customers (id INT PRIMARY KEY, email VARCHAR(100) NOT NULL, name {name_type}{name_null},
    status VARCHAR(20) DEFAULT {status_default}) ENGINE=InnoDB;
CREATE {email_unique}INDEX ix_customers_email ON customers (email);
CREATE TABLE orders (id INT PRIMARY KEY, customer_id INT NOT NULL, total DECIMAL(10,2) NOT NULL,
    created_at DATETIME, INDEX ix_orders_customer (customer_id){fk}{check}) ENGINE=InnoDB;
{created_index}
{audit}
{promo}
""",
}
BASE_KNOBS = {
    "name_type": "varchar(50)",
    "name_null": "",
    "status_default": "'new'",
    "email_unique": "",
    "fk": ", CONSTRAINT fk_orders_customer FOREIGN KEY (customer_id) REFERENCES customers (id)",
    "check": ", CONSTRAINT ck_orders_total CHECK (total >= 0)",
    "created_index": "CREATE INDEX ix_orders_created ON orders (created_at);",
    "audit": "CREATE TABLE audit (id integer PRIMARY KEY, msg text);",
    "promo": "",
}


@dataclass(frozen=True)
class Case:
    """One kind of drift: the knob it turns and the one difference it must produce."""

    name: str
    knobs: dict[str, str]
    table: str
    table_kind: str  # missing | extra | modified
    min_depth: DriftDepth
    part: str | None = None  # columns | indexes | constraints
    object_name: str | None = None  # column/index name, or a substring of the constraint label
    object_kind: str | None = None  # missing | extra | modified
    attributes: frozenset[str] = frozenset()  # changed attributes of a modified object


CASES = (
    Case("missing_table", {"audit": ""}, "audit", "missing", DriftDepth.TABLES_ONLY),
    Case(
        "extra_table",
        {"promo": "CREATE TABLE promo (id integer PRIMARY KEY, code varchar(10));"},
        "promo",
        "extra",
        DriftDepth.TABLES_ONLY,
    ),
    Case(
        "column_type",
        {"name_type": "varchar(80)"},
        "customers",
        "modified",
        DriftDepth.TABLES_AND_COLUMNS,
        "columns",
        "name",
        "modified",
        frozenset({"type"}),
    ),
    Case(
        "nullability",
        {"name_null": " NOT NULL"},
        "customers",
        "modified",
        DriftDepth.TABLES_AND_COLUMNS,
        "columns",
        "name",
        "modified",
        frozenset({"nullable"}),
    ),
    Case(
        "default",
        {"status_default": "'active'"},
        "customers",
        "modified",
        DriftDepth.TABLES_AND_COLUMNS,
        "columns",
        "status",
        "modified",
        frozenset({"default"}),
    ),
    Case(
        "missing_index",
        {"created_index": ""},
        "orders",
        "modified",
        DriftDepth.FULL,
        "indexes",
        "ix_orders_created",
        "missing",
    ),
    Case(
        "unique_index",
        {"email_unique": "UNIQUE "},
        "customers",
        "modified",
        DriftDepth.FULL,
        "indexes",
        "ix_customers_email",
        "modified",
        frozenset({"unique"}),
    ),
    Case(
        "missing_foreign_key",
        {"fk": ""},
        "orders",
        "modified",
        DriftDepth.FULL,
        "constraints",
        "foreign key (customer_id)",
        "missing",
    ),
    Case(
        "check_constraint",
        {"check": ""},
        "orders",
        "modified",
        DriftDepth.FULL,
        "constraints",
        "check (total>=0)",
        "missing",
    ),
)


def ddl(engine: str, **knobs: str) -> str:
    return _DDL[engine].format(**{**BASE_KNOBS, **knobs})


def shard_id(engine: str, name: str) -> str:
    return f"{PREFIX[engine]}-{name.replace('_', '-')}"


# -- fleets ---------------------------------------------------------------------------------------------


def write_topology(path: Path, shard_ids: list[str], *, inactive: tuple[str, ...] = (), **drift: Any) -> Topology:
    """A topology file listing ``shard_ids`` (connection = id with ``-`` -> ``_``) and a ``drift:`` section."""
    document: dict[str, Any] = {
        "shards": [
            {"id": s, "conn_id": s.replace("-", "_"), **({"active": False} if s in inactive else {})} for s in shard_ids
        ]
    }
    if drift:
        document["drift"] = drift
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return load_topology(path)


@pytest.fixture(scope="module")
def module_env() -> Iterator[pytest.MonkeyPatch]:
    """Environment (``AIRFLOW_CONN_*``) for the module's fleets, undone when the module ends."""
    patch = pytest.MonkeyPatch()
    yield patch
    patch.undo()


FleetFactory = Callable[[str], Any]


@pytest.fixture(scope="module")
def fleet_factory(
    request: pytest.FixtureRequest, module_env: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FleetFactory]:
    """``make(engine)`` -> a fleet (SqliteFleet / PostgresFleet / MySqlFleet) living as long as the module."""
    made: list[Any] = []

    def make(engine: str) -> Any:
        fleet: Any
        if engine == "sqlite":
            fleet = SqliteFleet(tmp_path_factory.mktemp("drift-sqlite"), module_env)
        elif engine == "postgres":
            fleet = PostgresFleet(request.getfixturevalue("postgres_server"), module_env)
        elif engine == "mysql":
            fleet = MySqlFleet(request.getfixturevalue("mysql_server"), module_env)
        else:
            raise ValueError(engine)
        made.append(fleet)
        return fleet

    yield make
    for fleet in made:
        if hasattr(fleet, "drop_all"):
            fleet.drop_all()


def run_sql(fleet: Any, shard: str, script: str) -> None:
    """Run DDL on one shard of any fleet (used to change a shard while a DAG watches it)."""
    if isinstance(fleet, SqliteFleet):
        import sqlite3

        with sqlite3.connect(fleet.paths[shard]) as conn:
            conn.executescript(script)
        conn.close()
        return
    from airflow_provider_shardmigrate.core.sqltext import split_sql

    for statement in split_sql(script):
        fleet.query(shard, statement)
