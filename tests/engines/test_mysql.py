"""The MySQL/MariaDB engine against the real local MariaDB server (no mocks of the database).

The MySQL 8 timeout path (a ``KILL QUERY`` watchdog) is exercised here by forcing ``timeout_mode="watchdog"``
on MariaDB; nothing in this file runs against a real MySQL 8.
"""

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
from airflow_provider_shardmigrate.core.topology import Shard
from airflow_provider_shardmigrate.engines import ENGINE_CLASSES, engine_class
from airflow_provider_shardmigrate.engines.mysql import MySqlEngine, lock_name
from airflow_provider_shardmigrate.engines.runner import apply_to_shard, rollback_shard
from tests.engines.conftest import Workers, shard, wait_for
from tests.server_fixtures import MySqlFleet

pytestmark = pytest.mark.mysql

WriteMigration = Callable[..., Path]

UP = """
CREATE TABLE orders (id INT AUTO_INCREMENT PRIMARY KEY, customer_id INT NOT NULL, note VARCHAR(20) DEFAULT 'a;b');
CREATE INDEX idx_orders_customer ON orders (customer_id);
-- a trigger body keeps its inner semicolons: the engine sends it as one statement, no DELIMITER needed
CREATE TRIGGER orders_note BEFORE INSERT ON orders FOR EACH ROW
BEGIN
    IF NEW.note IS NULL THEN
        SET NEW.note = 'none';
    END IF;
END;
"""
DOWN = """
DROP TRIGGER orders_note;
DROP TABLE orders;
"""


def watchdog_factory(shard: Shard) -> MySqlEngine:
    """The MySQL 8 timeout path (KILL QUERY from a second connection), forced on MariaDB."""
    return MySqlEngine(shard.conn_id, shard.id, timeout_mode="watchdog")


def test_registered_for_mysql_connections() -> None:
    assert engine_class("mysql") is MySqlEngine
    assert "mysql" in ENGINE_CLASSES
    assert (MySqlEngine.variant, MySqlEngine.transactional_ddl) == ("mysql", False)
    assert len(lock_name("x" * 64)) == 64 and lock_name("x" * 64) == lock_name("x" * 64)


def test_flavour_is_detected_at_runtime(mysql_fleet: MySqlFleet) -> None:
    mysql_fleet.add("my-0")
    with MySqlEngine("my_0", "my-0") as engine:
        assert engine.is_mariadb == mysql_fleet.server.is_mariadb
        assert engine.timeout_mode == ("server" if engine.is_mariadb else "watchdog")
        assert engine.query_scalar("SELECT COUNT(*) FROM customers", Deadline(5)) == 3
    with MySqlEngine("my_0", "my-0", timeout_mode="watchdog") as engine:
        assert engine.timeout_mode == "watchdog"


def test_apply_runs_statement_by_statement_with_history(
    mysql_fleet: MySqlFleet, write_migration: WriteMigration
) -> None:
    mysql_fleet.add("my-0")
    migration = load_migration(write_migration("001_orders", up=UP, down=DOWN, options={"description": "orders"}))

    status = apply_to_shard(shard("my-0"), migration)

    assert status.outcome == "succeeded", status
    assert {"orders", "idx_orders_customer", "orders_note"} <= mysql_fleet.objects("my-0")
    mysql_fleet.query("my-0", "INSERT INTO orders (customer_id, note) VALUES (1, NULL)")
    assert mysql_fleet.query("my-0", "SELECT note FROM orders") == [("none",)]
    row = mysql_fleet.history("my-0")["001_orders"]
    assert (row["status"], row["statements_applied"], row["statements_total"]) == ("applied", 3, 3)
    assert row["checksum"] == migration.checksum and row["description"] == "orders"
    assert row["applied_at"] is not None and row["error"] is None
    assert mysql_fleet.query("my-0", "SELECT IS_USED_LOCK(%s)", (lock_name(mysql_fleet.databases["my-0"]),)) == [
        (None,)
    ]

    assert apply_to_shard(shard("my-0"), migration).outcome == "already_applied"


def test_delimiter_lines_are_rejected_clearly(mysql_fleet: MySqlFleet, write_migration: WriteMigration) -> None:
    mysql_fleet.add("my-0")
    migration = load_migration(
        write_migration(
            "002_delimiter",
            up="DELIMITER //\nCREATE TRIGGER t BEFORE INSERT ON customers FOR EACH ROW BEGIN END//\nDELIMITER ;\n",
            down="DROP TRIGGER t;",
        )
    )

    status = apply_to_shard(shard("my-0"), migration)

    assert status.error_code == "shardmigrate.invalid_script"
    assert "DELIMITER" in status.error_message and "line 1" in status.error_message
    assert mysql_fleet.history("my-0") == {}


def test_failure_midway_records_progress_and_rerun_resumes(
    mysql_fleet: MySqlFleet, write_migration: WriteMigration
) -> None:
    mysql_fleet.add("my-0")
    mysql_fleet.query("my-0", "CREATE TABLE in_the_way (id INT)")  # makes statement 3 fail
    folder = write_migration(
        "003_resume",
        up="""
CREATE TABLE step_log (n INT NOT NULL);
INSERT INTO step_log VALUES (1);
CREATE TABLE in_the_way (id INT);
INSERT INTO step_log VALUES (2);
""",
        down="DROP TABLE in_the_way; DROP TABLE step_log;",
    )

    failed = apply_to_shard(shard("my-0"), load_migration(folder))

    assert failed.outcome == "failed" and failed.error_code == "shardmigrate.migration_failed"
    row = mysql_fleet.history("my-0")["003_resume"]
    assert (row["status"], row["statements_applied"], row["statements_total"]) == ("failed", 2, 4)
    assert "statement 3 of 4" in row["error"] and "in_the_way" in row["error"] and "1050" in row["error"]

    mysql_fleet.query("my-0", "DROP TABLE in_the_way")  # the operator fixes the shard, not the script
    resumed = apply_to_shard(shard("my-0"), load_migration(folder))

    assert resumed.outcome == "succeeded", resumed
    assert mysql_fleet.query("my-0", "SELECT n FROM step_log ORDER BY n") == [(1,), (2,)]  # nothing ran twice
    row = mysql_fleet.history("my-0")["003_resume"]
    assert (row["status"], row["statements_applied"], row["error"]) == ("applied", 4, None)


def test_changed_script_after_partial_apply_is_refused(
    mysql_fleet: MySqlFleet, write_migration: WriteMigration
) -> None:
    mysql_fleet.add("my-0")
    folder = write_migration(
        "004_partial",
        up="CREATE TABLE part_one (id INT);\nINSERT INTO no_such_table VALUES (1);\n",
        down="DROP TABLE part_one;",
    )
    first = load_migration(folder)
    assert apply_to_shard(shard("my-0"), first).outcome == "failed"
    (folder / "up.sql").write_text("CREATE TABLE part_one (id INT);\nCREATE TABLE part_two (id INT);\n")
    edited = load_migration(folder)

    status = apply_to_shard(shard("my-0"), edited)

    assert status.error_code == "shardmigrate.invalid_script"
    assert "after 1 of 2 statements" in status.error_message
    assert first.checksum in status.error_message and edited.checksum in status.error_message
    assert "part_two" not in mysql_fleet.tables("my-0")


def test_checksum_mismatch_after_apply_is_refused(mysql_fleet: MySqlFleet, write_migration: WriteMigration) -> None:
    mysql_fleet.add("my-0")
    folder = write_migration("001_orders", up=UP, down=DOWN)
    first = load_migration(folder)
    assert apply_to_shard(shard("my-0"), first).outcome == "succeeded"
    (folder / "down.sql").write_text(DOWN + "\n-- edited\n")

    status = apply_to_shard(shard("my-0"), load_migration(folder))

    assert status.error_code == "shardmigrate.invalid_script"
    assert first.checksum in status.error_message


def test_rollback_then_reapply(mysql_fleet: MySqlFleet, write_migration: WriteMigration) -> None:
    mysql_fleet.add("my-0")
    migration = load_migration(write_migration("001_orders", up=UP, down=DOWN))
    assert apply_to_shard(shard("my-0"), migration).outcome == "succeeded"

    rolled = rollback_shard(shard("my-0"), migration)

    assert rolled.outcome == "rolled_back", rolled
    assert {"orders", "orders_note"}.isdisjoint(mysql_fleet.objects("my-0"))
    row = mysql_fleet.history("my-0")["001_orders"]
    assert row["status"] == "rolled_back" and row["rolled_back_at"] is not None and row["applied_at"] is not None

    again = apply_to_shard(shard("my-0"), migration)

    assert again.outcome == "succeeded"
    assert "orders" in mysql_fleet.tables("my-0")
    assert mysql_fleet.history("my-0")["001_orders"]["status"] == "applied"


def test_per_engine_variant_is_chosen(mysql_fleet: MySqlFleet, write_migration: WriteMigration) -> None:
    mysql_fleet.add("my-0")
    migration = load_migration(
        write_migration(
            "005_variants",
            up="CREATE TABLE generic_table (id INTEGER);",
            down="DROP TABLE generic_table;",
            extra={
                "up.mysql.sql": "CREATE TABLE mysql_only (id BIGINT UNSIGNED AUTO_INCREMENT PRIMARY KEY);",
                "down.mysql.sql": "DROP TABLE mysql_only;",
            },
        )
    )

    assert apply_to_shard(shard("my-0"), migration).outcome == "succeeded"

    tables = mysql_fleet.tables("my-0")
    assert "mysql_only" in tables and "generic_table" not in tables


def test_lock_held_by_another_session_is_lock_timeout(mysql_fleet: MySqlFleet, write_migration: WriteMigration) -> None:
    mysql_fleet.add("my-0")
    migration = load_migration(write_migration("001_orders", up=UP, down=DOWN, options={"per_shard_timeout": 1}))

    with mysql_fleet.hold_migration_lock("my-0"):
        started = time.monotonic()
        status = apply_to_shard(shard("my-0"), migration)
        elapsed = time.monotonic() - started

    assert status.error_code == "shardmigrate.lock_timeout", status
    assert lock_name(mysql_fleet.databases["my-0"]) in status.error_message
    assert 0.9 < elapsed < 3.0
    assert "orders" not in mysql_fleet.tables("my-0")


@pytest.mark.parametrize("factory", [None, watchdog_factory], ids=["max_statement_time", "kill_query_watchdog"])
def test_ddl_blocked_by_metadata_lock_times_out(
    mysql_fleet: MySqlFleet,
    write_migration: WriteMigration,
    factory: Callable[[Shard], MySqlEngine] | None,
) -> None:
    mysql_fleet.add("my-0")
    migration = load_migration(
        write_migration(
            "006_alter",
            up="CREATE TABLE before_alter (id INT);\nALTER TABLE customers ADD COLUMN email VARCHAR(100);\n",
            down="ALTER TABLE customers DROP COLUMN email;\nDROP TABLE before_alter;",
            options={"per_shard_timeout": 1.5},
        )
    )
    engines: list[MySqlEngine] = []

    def make(shard: Shard) -> MySqlEngine:
        engine = factory(shard) if factory else MySqlEngine(shard.conn_id, shard.id)
        engines.append(engine)
        return engine

    with mysql_fleet.hold_table_lock("my-0", "customers"):
        started = time.monotonic()
        status = apply_to_shard(shard("my-0"), migration, engine_factory=make)
        elapsed = time.monotonic() - started
        still_running = mysql_fleet.running("my-0", "ALTER TABLE customers")

    assert status.error_code == "shardmigrate.migration_timeout", status
    assert elapsed < 1.5 + 1.0
    assert still_running == []
    expected = "1317" if factory else "1969"  # KILL QUERY / max_statement_time
    assert expected in status.error_message
    assert engines[0].timeout_mode == ("watchdog" if factory else "server")
    if factory:
        assert engines[0].last_watchdog is not None and engines[0].last_watchdog.fired
    row = mysql_fleet.history("my-0")["006_alter"]
    assert (row["status"], row["statements_applied"]) == ("failed", 1)
    assert "ALTER TABLE customers" in row["error"]
    columns = {r[0] for r in mysql_fleet.query("my-0", "SELECT column_name FROM information_schema.columns")}
    assert "email" not in columns


@pytest.mark.parametrize("factory", [None, watchdog_factory], ids=["max_statement_time", "kill_query_watchdog"])
def test_long_statement_is_interrupted_at_the_deadline(
    mysql_fleet: MySqlFleet,
    write_migration: WriteMigration,
    factory: Callable[[Shard], MySqlEngine] | None,
) -> None:
    mysql_fleet.add("my-0")
    migration = load_migration(
        write_migration(
            "007_slow",
            up="SELECT SLEEP(30);\nCREATE TABLE never (id INT);\n",
            down="DROP TABLE never;",
            options={"per_shard_timeout": 1.5},
        )
    )
    kwargs = {"engine_factory": factory} if factory else {}

    started = time.monotonic()
    status = apply_to_shard(shard("my-0"), migration, **kwargs)  # type: ignore[arg-type]
    elapsed = time.monotonic() - started

    assert status.error_code == "shardmigrate.migration_timeout", status
    assert elapsed < 2.5
    assert mysql_fleet.running("my-0", "SLEEP(30)") == []
    assert "never" not in mysql_fleet.tables("my-0")
    assert mysql_fleet.history("my-0")["007_slow"]["statements_applied"] == 0


def test_watchdog_stays_quiet_for_fast_statements(mysql_fleet: MySqlFleet, write_migration: WriteMigration) -> None:
    mysql_fleet.add("my-0")
    migration = load_migration(write_migration("001_orders", up=UP, down=DOWN, options={"per_shard_timeout": 20}))
    engines: list[MySqlEngine] = []

    def make(shard: Shard) -> MySqlEngine:
        engines.append(watchdog_factory(shard))
        return engines[-1]

    status = apply_to_shard(shard("my-0"), migration, engine_factory=make)

    assert status.outcome == "succeeded", status
    assert engines[0].last_watchdog is not None and not engines[0].last_watchdog.fired
    assert mysql_fleet.history("my-0")["001_orders"]["statements_applied"] == 3


def test_mysql_connector_client_takes_the_same_path(mysql_fleet: MySqlFleet, write_migration: WriteMigration) -> None:
    """MySqlHook hands out a mysql-connector-python connection with ``{"client": "mysql-connector-python"}``."""
    mysql_fleet.add("my-0")
    spec = json.loads(os.environ["AIRFLOW_CONN_MY_0"])
    spec["extra"] = {"client": "mysql-connector-python"}
    os.environ["AIRFLOW_CONN_MY_0"] = json.dumps(spec)  # restored by the fleet's monkeypatch at teardown
    migration = load_migration(write_migration("001_orders", up=UP, down=DOWN))
    slow = load_migration(write_migration("002_slow", up="SELECT SLEEP(10);", options={"per_shard_timeout": 1}))
    with MySqlEngine("my_0", "my-0") as engine:
        assert type(engine.conn).__module__.startswith("mysql.connector")

    assert apply_to_shard(shard("my-0"), migration).outcome == "succeeded"
    assert apply_to_shard(shard("my-0"), migration).outcome == "already_applied"
    assert rollback_shard(shard("my-0"), migration).outcome == "rolled_back"
    timed_out = apply_to_shard(shard("my-0"), slow)
    assert timed_out.error_code == "shardmigrate.migration_timeout" and "1969" in timed_out.error_message
    watched = apply_to_shard(shard("my-0"), slow, engine_factory=watchdog_factory)
    assert watched.error_code == "shardmigrate.migration_timeout" and "1317" in watched.error_message
    assert mysql_fleet.running("my-0", "SLEEP(10)") == []


def test_unreachable_shard_fails_clearly_without_the_password(
    mysql_fleet: MySqlFleet, write_migration: WriteMigration
) -> None:
    database = mysql_fleet.add("my-down", password="S3cret-pw-never-shown", port=1)
    migration = load_migration(write_migration("001_orders", up=UP, down=DOWN))

    status = apply_to_shard(shard("my-down"), migration)

    assert status.outcome == "failed" and status.error_code == "shardmigrate.migration_failed"
    message = status.error_message or ""
    assert "127.0.0.1:1" in message and database in message and "my_down" in message
    assert "S3cret-pw-never-shown" not in json.dumps(status.to_xcom())


@pytest.mark.slow
def test_killed_worker_leaves_a_running_row_and_rerun_resumes(
    mysql_fleet: MySqlFleet, write_migration: WriteMigration, workers: Workers
) -> None:
    mysql_fleet.add("my-0")
    mysql_fleet.query("my-0", "CREATE TABLE sleep_control (seconds DOUBLE)")
    mysql_fleet.query("my-0", "INSERT INTO sleep_control VALUES (60)")
    folder = write_migration(
        "008_crash",
        up="""
CREATE TABLE crash_log (n INT NOT NULL);
INSERT INTO crash_log VALUES (1);
CREATE TABLE crash_a (id INT);
INSERT INTO crash_log VALUES (2);
SELECT SLEEP(seconds) FROM sleep_control;
INSERT INTO crash_log VALUES (3);
CREATE TABLE crash_b (id INT);
INSERT INTO crash_log VALUES (4);
""",
        down="DROP TABLE crash_b; DROP TABLE crash_a; DROP TABLE crash_log;",
        options={"per_shard_timeout": 120},
    )
    proc = workers.start(folder, "my-0")
    wait_for(lambda: mysql_fleet.running("my-0", "SLEEP(seconds)"), timeout=60, what="the worker to reach SLEEP")

    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    row = mysql_fleet.history("my-0")["008_crash"]
    assert (row["status"], row["statements_applied"], row["statements_total"]) == ("running", 4, 8)
    assert mysql_fleet.query("my-0", "SELECT n FROM crash_log ORDER BY n") == [(1,), (2,)]

    mysql_fleet.query("my-0", "UPDATE sleep_control SET seconds = 0")
    # The server notices the dead client within ~5 s and frees its GET_LOCK; the re-run waits for it.
    status = apply_to_shard(shard("my-0"), load_migration(folder))

    assert status.outcome == "succeeded", status
    assert mysql_fleet.query("my-0", "SELECT n FROM crash_log ORDER BY n") == [(1,), (2,), (3,), (4,)]
    assert {"crash_a", "crash_b"} <= mysql_fleet.tables("my-0")
    row = mysql_fleet.history("my-0")["008_crash"]
    assert (row["status"], row["statements_applied"]) == ("applied", 8)
    assert apply_to_shard(shard("my-0"), load_migration(folder)).outcome == "already_applied"


@pytest.mark.slow
def test_two_processes_at_once_apply_exactly_once(
    mysql_fleet: MySqlFleet, write_migration: WriteMigration, workers: Workers
) -> None:
    mysql_fleet.add("my-0")
    folder = write_migration(
        "009_race",
        up="CREATE TABLE race_log (n INT);\nINSERT INTO race_log VALUES (1);\nDO SLEEP(1);\n",
        down="DROP TABLE race_log;",
        options={"per_shard_timeout": 30},
    )
    first = workers.start(folder, "my-0", name="a", sync=True)
    second = workers.start(folder, "my-0", name="b", sync=True)
    workers.wait_ready("a", "b")
    workers.go()

    results = [Workers.result(first), Workers.result(second)]

    assert sorted(r["outcome"] for r in results) == ["already_applied", "succeeded"], results
    loser = next(r for r in results if r["outcome"] == "already_applied")
    assert loser["duration_ms"] >= 500  # it really waited for the winner's lock
    assert mysql_fleet.query("my-0", "SELECT COUNT(*) FROM race_log") == [(1,)]
    assert list(mysql_fleet.history("my-0")) == ["009_race"]
