"""What only the PostgreSQL engine does, against the real local server (no mocks of the database).

The behaviour every engine shares -- atomicity, history, locks, timeouts, crashes, races, unreachable
shards -- is in test_contract.py, which runs it here too.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from airflow_provider_shardmigrate.core.deadline import Deadline
from airflow_provider_shardmigrate.core.scripts import load_migration
from airflow_provider_shardmigrate.engines import engine_for
from airflow_provider_shardmigrate.engines.postgres import PostgresEngine
from airflow_provider_shardmigrate.engines.runner import apply_to_shard, rollback_shard
from tests.engines.conftest import PostgresShard, shard
from tests.server_fixtures import PostgresFleet

pytestmark = pytest.mark.postgres

WriteMigration = Callable[..., Path]
UP, DOWN = PostgresShard.rich_up, PostgresShard.rich_down


def _set_extra(conn_id: str, **extra: object) -> None:
    """Give a fleet connection extras (restored by the fleet's monkeypatch at teardown)."""
    variable = f"AIRFLOW_CONN_{conn_id.upper()}"
    spec = json.loads(os.environ[variable])
    spec["extra"] = extra
    os.environ[variable] = json.dumps(spec)


def test_history_table_types(pg_fleet: PostgresFleet, write_migration: WriteMigration) -> None:
    pg_fleet.add("pg-0")
    assert apply_to_shard(shard("pg-0"), load_migration(write_migration("001_orders", up=UP, down=DOWN))).outcome == (
        "succeeded"
    )
    row = pg_fleet.history("pg-0")["001_orders"]
    assert row["applied_at"].tzinfo is not None and row["duration_ms"] >= 0
    columns = dict(
        pg_fleet.query(
            "pg-0",
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'shardmigrate_history'",
        )
    )
    assert columns["applied_at"] == "timestamp with time zone"
    assert columns["statements_applied"] == "integer"


def test_the_hook_gets_a_copy_of_the_connection(pg_fleet: PostgresFleet) -> None:
    """The session is set up through the connection the engine hands PostgresHook (``connection=``): if the
    hook stopped using it, the session would not carry our name. Airflow's own Connection is left alone."""
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    pg_fleet.add("pg-0")
    _set_extra("pg_0", connect_timeout=7)
    resolved = PostgresHook.get_connection("pg_0")

    with PostgresEngine("pg_0", "pg-0") as engine:
        name = engine.query_scalar("SELECT current_setting('application_name')", Deadline(5))
        parameters = engine.conn.info.get_parameters()  # what libpq was given (the password left out)

    assert name == "shardmigrate:pg-0"
    assert parameters["connect_timeout"] == "7"  # the connection asked for less than the 30 s budget
    assert resolved.extra_dejson == {"connect_timeout": 7}
    assert PostgresHook.get_connection("pg_0").extra_dejson == {"connect_timeout": 7}

    _set_extra("pg_0", application_name="ops-tool")
    with PostgresEngine("pg_0", "pg-0") as engine:  # the connection's own label wins
        assert engine.query_scalar("SELECT current_setting('application_name')", Deadline(5)) == "ops-tool"


def test_postgresql_spelling_is_the_same_engine(
    pg_fleet: PostgresFleet, write_migration: WriteMigration, monkeypatch: pytest.MonkeyPatch
) -> None:
    pg_fleet.add("pg-0")
    spec = json.loads(os.environ["AIRFLOW_CONN_PG_0"])
    monkeypatch.setenv("AIRFLOW_CONN_PG_0", json.dumps({**spec, "conn_type": "postgresql"}))

    assert type(engine_for(shard("pg-0"))) is PostgresEngine
    assert apply_to_shard(shard("pg-0"), load_migration(write_migration("001_orders", up=UP, down=DOWN))).outcome == (
        "succeeded"
    )


def test_script_with_its_own_commit_is_refused(pg_fleet: PostgresFleet, write_migration: WriteMigration) -> None:
    pg_fleet.add("pg-0")
    migration = load_migration(
        write_migration(
            "002_own_tx",
            up="BEGIN;\nCREATE TABLE half (id int);\nCOMMIT;\nCREATE TABLE other_half (id int);\n",
            down="DROP TABLE other_half; DROP TABLE half;",
        )
    )

    status = apply_to_shard(shard("pg-0"), migration)

    assert status.error_code == "shardmigrate.invalid_script", status
    assert "statement 1" in status.error_message and "transactional: false" in status.error_message
    assert {"half", "other_half"}.isdisjoint(pg_fleet.tables("pg-0"))
    assert pg_fleet.history("pg-0") == {}


def test_non_transactional_create_index_concurrently(pg_fleet: PostgresFleet, write_migration: WriteMigration) -> None:
    pg_fleet.add("pg-0")
    migration = load_migration(
        write_migration(
            "003_concurrent",
            up="CREATE INDEX CONCURRENTLY idx_customers_name ON customers (name);\n"
            "CREATE INDEX CONCURRENTLY idx_customers_id_name ON customers (id, name);\n",
            down="DROP INDEX CONCURRENTLY idx_customers_id_name;\nDROP INDEX CONCURRENTLY idx_customers_name;\n",
            options={"transactional": False},
        )
    )

    status = apply_to_shard(shard("pg-0"), migration)

    assert status.outcome == "succeeded", status
    assert {"idx_customers_name", "idx_customers_id_name"} <= pg_fleet.indexes("pg-0")
    valid = pg_fleet.query("pg-0", "SELECT bool_and(indisvalid) FROM pg_index")
    assert valid == [(True,)]
    row = pg_fleet.history("pg-0")["003_concurrent"]
    assert (row["status"], row["statements_applied"], row["statements_total"]) == ("applied", 2, 2)

    # The same migration inside a transaction is PostgreSQL's own refusal, reported with its SQLSTATE.
    blocked = load_migration(
        write_migration(
            "004_concurrent_in_tx",
            up="CREATE INDEX CONCURRENTLY idx_x ON customers (id);",
            down="DROP INDEX idx_x;",
        )
    )
    refused = apply_to_shard(shard("pg-0"), blocked)
    assert refused.outcome == "failed" and "25001" in refused.error_message

    assert rollback_shard(shard("pg-0"), migration).outcome == "rolled_back"
    assert "idx_customers_name" not in pg_fleet.indexes("pg-0")


def test_psycopg2_driver_takes_the_same_path(
    pg_fleet: PostgresFleet, write_migration: WriteMigration, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Provider 7.x falls back to psycopg2 without psycopg 3 + SQLAlchemy 2; the engine must work on both."""
    import airflow.providers.postgres.hooks.postgres as hook_module

    monkeypatch.setattr(hook_module, "USE_PSYCOPG3", False)
    pg_fleet.add("pg-0")
    migration = load_migration(write_migration("001_orders", up=UP, down=DOWN))
    with PostgresEngine("pg_0", "pg-0") as engine:
        assert type(engine.conn).__module__.startswith("psycopg2")

    assert apply_to_shard(shard("pg-0"), migration).outcome == "succeeded"
    assert apply_to_shard(shard("pg-0"), migration).outcome == "already_applied"
    broken = load_migration(
        write_migration(
            "002_slow", up="CREATE TABLE t2 (id int);\nSELECT pg_sleep(5);", options={"per_shard_timeout": 1}
        )
    )
    assert apply_to_shard(shard("pg-0"), broken).error_code == "shardmigrate.migration_timeout"
    assert rollback_shard(shard("pg-0"), migration).outcome == "rolled_back"
    with PostgresEngine("pg_0", "pg-0").connected(Deadline(5), read_only=True) as engine:
        assert [r.migration_id for r in engine.list_history()] == ["001_orders"]


def test_dict_cursor_extra_and_read_only_validation(pg_fleet: PostgresFleet) -> None:
    pg_fleet.add("pg-0")
    _set_extra("pg_0", cursor="dictcursor")

    with PostgresEngine("pg_0", "pg-0") as engine:
        assert engine.query_scalar("SELECT count(*) FROM customers", Deadline(5)) == 3
        assert engine.list_history() == []
        with pytest.raises(Exception, match="25006"):  # read_only_sql_transaction
            engine.query_scalar("INSERT INTO customers (name) VALUES ('x') RETURNING id", Deadline(5))
    assert pg_fleet.query("pg-0", "SELECT count(*) FROM customers") == [(3,)]
