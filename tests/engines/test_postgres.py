"""The PostgreSQL engine against the real local server (no mocks of the database)."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from airflow_provider_shardmigrate.core.deadline import Deadline
from airflow_provider_shardmigrate.core.scripts import load_migration
from airflow_provider_shardmigrate.engines import ENGINE_CLASSES, engine_class
from airflow_provider_shardmigrate.engines.postgres import PostgresEngine
from airflow_provider_shardmigrate.engines.runner import apply_to_shard, rollback_shard
from tests.engines.conftest import Workers, shard, wait_for
from tests.server_fixtures import PostgresFleet

pytestmark = pytest.mark.postgres

UP = """
-- a comment; with a semicolon
CREATE TABLE orders (id SERIAL PRIMARY KEY, customer_id INT NOT NULL, note TEXT DEFAULT 'a;b');
CREATE INDEX idx_orders_customer ON orders (customer_id);
CREATE FUNCTION order_count() RETURNS bigint AS $body$
BEGIN
    RETURN (SELECT count(*) FROM orders); -- semicolons inside the body stay in it
END;
$body$ LANGUAGE plpgsql;
"""
DOWN = """
DROP FUNCTION order_count();
DROP TABLE orders;
"""

WriteMigration = Callable[..., Path]


def test_registered_for_postgres_connections() -> None:
    assert engine_class("postgres") is PostgresEngine
    assert "postgres" in ENGINE_CLASSES
    assert (PostgresEngine.variant, PostgresEngine.transactional_ddl) == ("postgres", True)


def test_apply_commits_ddl_and_history_together(pg_fleet: PostgresFleet, write_migration: WriteMigration) -> None:
    pg_fleet.add("pg-0")
    migration = load_migration(write_migration("001_orders", up=UP, down=DOWN, options={"description": "orders"}))

    status = apply_to_shard(shard("pg-0"), migration)

    assert status.outcome == "succeeded", status
    assert {"orders", "idx_orders_customer", "order_count"} <= pg_fleet.objects("pg-0")
    assert pg_fleet.query("pg-0", "SELECT order_count()") == [(0,)]
    row = pg_fleet.history("pg-0")["001_orders"]
    assert row["status"] == "applied"
    assert row["checksum"] == migration.checksum
    assert (row["statements_applied"], row["statements_total"]) == (3, 3)
    assert row["description"] == "orders"
    assert row["applied_at"].tzinfo is not None and row["duration_ms"] >= 0
    columns = dict(
        pg_fleet.query(
            "pg-0",
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'shardmigrate_history'",
        )
    )
    assert columns["applied_at"] == "timestamp with time zone"
    assert columns["statements_applied"] == "integer"
    # The session lock is gone with the engine's session: another session takes it at once.
    from airflow_provider_shardmigrate.engines.postgres import lock_keys

    assert pg_fleet.query("pg-0", "SELECT pg_try_advisory_lock(%s, %s)", lock_keys("public")) == [(True,)]


def test_rerun_is_already_applied(pg_fleet: PostgresFleet, write_migration: WriteMigration) -> None:
    pg_fleet.add("pg-0")
    migration = load_migration(write_migration("001_orders", up=UP, down=DOWN))
    assert apply_to_shard(shard("pg-0"), migration).outcome == "succeeded"

    again = apply_to_shard(shard("pg-0"), migration)

    assert again.outcome == "already_applied"
    assert len(pg_fleet.history("pg-0")) == 1


def test_failing_second_statement_leaves_nothing(pg_fleet: PostgresFleet, write_migration: WriteMigration) -> None:
    pg_fleet.add("pg-0")
    before = pg_fleet.objects("pg-0")
    migration = load_migration(
        write_migration(
            "002_broken",
            up="CREATE TABLE first_effect (id int);\nINSERT INTO no_such_table VALUES (1);\n",
            down="DROP TABLE first_effect;",
        )
    )

    status = apply_to_shard(shard("pg-0"), migration)

    assert status.outcome == "failed"
    assert status.error_code == "shardmigrate.migration_failed"
    assert "statement 2 of 2" in status.error_message and "no_such_table" in status.error_message
    assert "42P01" in status.error_message  # the SQLSTATE, for operators
    # The first statement's table was rolled back with the rest; only the (empty) history table is new.
    assert pg_fleet.objects("pg-0") - before == {"shardmigrate_history", "shardmigrate_history_pkey"}
    assert pg_fleet.history("pg-0") == {}  # the history table exists, without a row


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


def test_checksum_mismatch_is_refused(pg_fleet: PostgresFleet, write_migration: WriteMigration) -> None:
    pg_fleet.add("pg-0")
    folder = write_migration("001_orders", up=UP, down=DOWN)
    first = load_migration(folder)
    assert apply_to_shard(shard("pg-0"), first).outcome == "succeeded"
    (folder / "up.sql").write_text(UP + "\nCREATE TABLE sneaky (id int);\n")
    edited = load_migration(folder)

    status = apply_to_shard(shard("pg-0"), edited)

    assert status.outcome == "failed"
    assert status.error_code == "shardmigrate.invalid_script"
    assert first.checksum in status.error_message and edited.checksum in status.error_message
    assert "sneaky" not in pg_fleet.tables("pg-0")


def test_rollback_then_reapply(pg_fleet: PostgresFleet, write_migration: WriteMigration) -> None:
    pg_fleet.add("pg-0")
    migration = load_migration(write_migration("001_orders", up=UP, down=DOWN))
    assert apply_to_shard(shard("pg-0"), migration).outcome == "succeeded"
    applied_at = pg_fleet.history("pg-0")["001_orders"]["applied_at"]

    rolled = rollback_shard(shard("pg-0"), migration)

    assert rolled.outcome == "rolled_back", rolled
    assert "orders" not in pg_fleet.objects("pg-0") and "order_count" not in pg_fleet.objects("pg-0")
    row = pg_fleet.history("pg-0")["001_orders"]
    assert row["status"] == "rolled_back" and row["rolled_back_at"] is not None
    assert row["applied_at"] == applied_at  # timestamp kept
    # Idempotent: a second rollback finds nothing to undo (already rolled back) and touches nothing.
    assert rollback_shard(shard("pg-0"), migration).outcome == "not_applied"

    again = apply_to_shard(shard("pg-0"), migration)

    assert again.outcome == "succeeded"
    assert "orders" in pg_fleet.tables("pg-0")
    assert pg_fleet.history("pg-0")["001_orders"]["status"] == "applied"


def test_failing_rollback_keeps_applied_row(pg_fleet: PostgresFleet, write_migration: WriteMigration) -> None:
    pg_fleet.add("pg-0")
    migration = load_migration(
        write_migration("001_orders", up=UP, down="DROP FUNCTION order_count();\nDROP TABLE not_there;\n")
    )
    assert apply_to_shard(shard("pg-0"), migration).outcome == "succeeded"

    status = rollback_shard(shard("pg-0"), migration)

    assert status.outcome == "failed" and status.error_code == "shardmigrate.rollback_failed"
    assert "order_count" in pg_fleet.objects("pg-0")  # the first down statement was rolled back too
    assert pg_fleet.history("pg-0")["001_orders"]["status"] == "applied"


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


def test_per_engine_variant_is_chosen(pg_fleet: PostgresFleet, write_migration: WriteMigration) -> None:
    pg_fleet.add("pg-0")
    migration = load_migration(
        write_migration(
            "005_variants",
            up="CREATE TABLE generic_table (id INTEGER);",
            down="DROP TABLE generic_table;",
            extra={
                "up.postgres.sql": "CREATE TABLE pg_only (id bigint GENERATED ALWAYS AS IDENTITY);",
                "down.postgres.sql": "DROP TABLE pg_only;",
            },
        )
    )

    assert apply_to_shard(shard("pg-0"), migration).outcome == "succeeded"

    tables = pg_fleet.tables("pg-0")
    assert "pg_only" in tables and "generic_table" not in tables


def test_lock_held_by_another_session_is_lock_timeout(pg_fleet: PostgresFleet, write_migration: WriteMigration) -> None:
    pg_fleet.add("pg-0")
    migration = load_migration(write_migration("001_orders", up=UP, down=DOWN, options={"per_shard_timeout": 1}))

    with pg_fleet.hold_migration_lock("pg-0"):
        started = time.monotonic()
        status = apply_to_shard(shard("pg-0"), migration)
        elapsed = time.monotonic() - started

    assert status.outcome == "failed"
    assert status.error_code == "shardmigrate.lock_timeout"
    assert "another migration holds the lock" in status.error_message
    assert 0.9 < elapsed < 3.0
    assert "orders" not in pg_fleet.tables("pg-0")
    assert pg_fleet.history("pg-0") == {}


def test_ddl_blocked_by_table_lock_times_out_in_the_server(
    pg_fleet: PostgresFleet, write_migration: WriteMigration
) -> None:
    pg_fleet.add("pg-0")
    migration = load_migration(
        write_migration(
            "006_alter",
            up="ALTER TABLE customers ADD COLUMN email text;",
            down="ALTER TABLE customers DROP COLUMN email;",
            options={"per_shard_timeout": 1.5},
        )
    )

    with pg_fleet.hold_table_lock("pg-0", "customers"):
        started = time.monotonic()
        status = apply_to_shard(shard("pg-0"), migration)
        elapsed = time.monotonic() - started
        still_running = pg_fleet.ours_running("pg-0")  # checked while the blocker still holds the lock

    assert status.outcome == "failed"
    assert status.error_code == "shardmigrate.migration_timeout"
    assert "55P03" in status.error_message or "57014" in status.error_message
    assert elapsed < 1.5 + 1.0
    assert still_running == []
    columns = {row[0] for row in pg_fleet.query("pg-0", "SELECT column_name FROM information_schema.columns")}
    assert "email" not in columns
    assert pg_fleet.history("pg-0") == {}


def test_long_statement_is_cancelled_at_the_deadline(pg_fleet: PostgresFleet, write_migration: WriteMigration) -> None:
    pg_fleet.add("pg-0")
    migration = load_migration(
        write_migration(
            "007_slow",
            up="CREATE TABLE slow_effect (id int);\nSELECT pg_sleep(30);\n",
            down="DROP TABLE slow_effect;",
            options={"per_shard_timeout": 1.5},
        )
    )

    started = time.monotonic()
    status = apply_to_shard(shard("pg-0"), migration)
    elapsed = time.monotonic() - started

    assert status.error_code == "shardmigrate.migration_timeout", status
    assert "statement 2 of 2" in status.error_message
    assert elapsed < 2.5
    assert pg_fleet.ours_running("pg-0") == []
    assert not any("pg_sleep" in str(row["query"]) and row["state"] == "active" for row in pg_fleet.activity("pg-0"))
    assert "slow_effect" not in pg_fleet.tables("pg-0")


def test_non_transactional_timeout_records_the_failed_statement(
    pg_fleet: PostgresFleet, write_migration: WriteMigration
) -> None:
    pg_fleet.add("pg-0")
    migration = load_migration(
        write_migration(
            "008_slow_autocommit",
            up="CREATE TABLE kept (id int);\nSELECT pg_sleep(30);\nCREATE TABLE never (id int);\n",
            down="DROP TABLE kept;",
            options={"per_shard_timeout": 1.2, "transactional": False},
        )
    )

    status = apply_to_shard(shard("pg-0"), migration)

    assert status.error_code == "shardmigrate.migration_timeout"
    row = pg_fleet.history("pg-0")["008_slow_autocommit"]
    # The history write after the timeout ran with the bookkeeping timeout, not the spent deadline.
    assert (row["status"], row["statements_applied"], row["statements_total"]) == ("failed", 1, 3)
    assert "statement 2 of 3" in row["error"] and "pg_sleep" in row["error"]
    assert "kept" in pg_fleet.tables("pg-0") and "never" not in pg_fleet.tables("pg-0")
    assert pg_fleet.ours_running("pg-0") == []


def test_unreachable_shard_fails_clearly_without_the_password(
    pg_fleet: PostgresFleet, write_migration: WriteMigration
) -> None:
    database = pg_fleet.add("pg-down", password="S3cret-pw-never-shown", port=1)
    migration = load_migration(write_migration("001_orders", up=UP, down=DOWN))

    status = apply_to_shard(shard("pg-down"), migration)

    assert status.outcome == "failed"
    assert status.error_code == "shardmigrate.migration_failed"
    message = status.error_message or ""
    assert "127.0.0.1:1" in message and database in message and "pg_down" in message
    assert "S3cret-pw-never-shown" not in json.dumps(status.to_xcom())


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


def test_dict_cursor_extra_and_read_only_validation(pg_fleet: PostgresFleet) -> None:
    pg_fleet.add("pg-0")
    spec = json.loads(os.environ["AIRFLOW_CONN_PG_0"])
    spec["extra"] = {"cursor": "dictcursor"}
    os.environ["AIRFLOW_CONN_PG_0"] = json.dumps(spec)  # restored by the fleet's monkeypatch at teardown

    with PostgresEngine("pg_0", "pg-0") as engine:
        assert engine.query_scalar("SELECT count(*) FROM customers", Deadline(5)) == 3
        assert engine.list_history() == []
        with pytest.raises(Exception, match="25006"):  # read_only_sql_transaction
            engine.query_scalar("INSERT INTO customers (name) VALUES ('x') RETURNING id", Deadline(5))
    assert pg_fleet.query("pg-0", "SELECT count(*) FROM customers") == [(3,)]


@pytest.mark.slow
def test_killed_worker_leaves_nothing_and_rerun_applies_once(
    pg_fleet: PostgresFleet, write_migration: WriteMigration, workers: Workers
) -> None:
    pg_fleet.add("pg-0")
    pg_fleet.query("pg-0", "CREATE TABLE sleep_control (seconds float); INSERT INTO sleep_control VALUES (60)")
    folder = write_migration(
        "009_crash",
        up="""
CREATE TABLE crash_log (n int NOT NULL);
INSERT INTO crash_log VALUES (1);
CREATE TABLE crash_a (id int);
SELECT pg_sleep(seconds) FROM sleep_control;
INSERT INTO crash_log VALUES (2);
CREATE TABLE crash_b (id int);
""",
        down="DROP TABLE crash_b; DROP TABLE crash_a; DROP TABLE crash_log;",
        options={"per_shard_timeout": 120},
    )
    proc = workers.start(folder, "pg-0")
    wait_for(
        lambda: any("pg_sleep" in str(r["query"]) and r["state"] == "active" for r in pg_fleet.ours_running("pg-0")),
        timeout=60,
        what="the worker to reach pg_sleep",
    )

    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # client_connection_check_interval: the server notices the dead client and rolls back within ~1 s.
    wait_for(lambda: not pg_fleet.ours_running("pg-0"), timeout=10, what="the server to drop the dead session")

    assert {"crash_log", "crash_a"}.isdisjoint(pg_fleet.tables("pg-0"))
    assert pg_fleet.history("pg-0") == {}

    pg_fleet.query("pg-0", "UPDATE sleep_control SET seconds = 0")
    status = apply_to_shard(shard("pg-0"), load_migration(folder))

    assert status.outcome == "succeeded", status
    assert pg_fleet.query("pg-0", "SELECT n FROM crash_log ORDER BY n") == [(1,), (2,)]
    assert {"crash_a", "crash_b"} <= pg_fleet.tables("pg-0")
    assert [row["status"] for row in pg_fleet.history("pg-0").values()] == ["applied"]
    assert apply_to_shard(shard("pg-0"), load_migration(folder)).outcome == "already_applied"


@pytest.mark.slow
def test_two_processes_at_once_apply_exactly_once(
    pg_fleet: PostgresFleet, write_migration: WriteMigration, workers: Workers
) -> None:
    pg_fleet.add("pg-0")
    folder = write_migration(
        "010_race",
        up="CREATE TABLE race_log (n int);\nINSERT INTO race_log VALUES (1);\nSELECT pg_sleep(1);\n",
        down="DROP TABLE race_log;",
        options={"per_shard_timeout": 30},
    )
    first = workers.start(folder, "pg-0", name="a", sync=True)
    second = workers.start(folder, "pg-0", name="b", sync=True)
    workers.wait_ready("a", "b")
    workers.go()

    results = [Workers.result(first), Workers.result(second)]

    assert sorted(r["outcome"] for r in results) == ["already_applied", "succeeded"], results
    loser = next(r for r in results if r["outcome"] == "already_applied")
    assert loser["duration_ms"] >= 500  # it really waited for the winner's lock
    assert pg_fleet.query("pg-0", "SELECT count(*) FROM race_log") == [(1,)]
    assert list(pg_fleet.history("pg-0")) == ["010_race"]


@pytest.mark.slow
def test_waiting_longer_than_the_bound_is_lock_timeout(
    pg_fleet: PostgresFleet, write_migration: WriteMigration, workers: Workers, tmp_path: Path
) -> None:
    pg_fleet.add("pg-0")
    up = "CREATE TABLE race_log (n int);\nSELECT pg_sleep(3);\n"
    slow = write_migration("011_race", up=up, down="DROP TABLE race_log;", options={"per_shard_timeout": 30})
    # The same migration (same id and scripts, so the same checksum) with a 1 s bound on this side.
    impatient = write_migration(
        "011_race", up=up, down="DROP TABLE race_log;", options={"per_shard_timeout": 1}, root=tmp_path / "other"
    )
    assert load_migration(slow).checksum == load_migration(impatient).checksum
    proc = workers.start(slow, "pg-0")
    wait_for(lambda: pg_fleet.ours_running("pg-0"), timeout=60, what="the first worker to start applying")

    status = apply_to_shard(shard("pg-0"), load_migration(impatient))

    assert status.error_code == "shardmigrate.lock_timeout", status
    assert Workers.result(proc)["outcome"] == "succeeded"
    assert pg_fleet.history("pg-0")["011_race"]["status"] == "applied"
