"""What only the MySQL/MariaDB engine does, against the real local MariaDB server (no mocks of the database).

The behaviour every engine shares is in test_contract.py, which runs it here too. The MySQL 8 timeout path
(a ``KILL QUERY`` watchdog) is exercised by forcing ``timeout_mode="watchdog"`` on MariaDB; nothing in this
file runs against a real MySQL 8.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from airflow_provider_shardmigrate.core.deadline import Deadline
from airflow_provider_shardmigrate.core.scripts import load_migration
from airflow_provider_shardmigrate.core.topology import Shard
from airflow_provider_shardmigrate.engines.mysql import MySqlEngine, connect_with_timeouts, lock_name
from airflow_provider_shardmigrate.engines.runner import apply_to_shard, rollback_shard
from tests.engines.conftest import MySqlShard, SilentServer, hung_shard, shard
from tests.server_fixtures import MySqlFleet

pytestmark = pytest.mark.mysql

WriteMigration = Callable[..., Path]
UP, DOWN = MySqlShard.rich_up, MySqlShard.rich_down


def watchdog_factory(shard: Shard) -> MySqlEngine:
    """The MySQL 8 timeout path (KILL QUERY from a second connection), forced on MariaDB."""
    return MySqlEngine(shard.conn_id, shard.id, timeout_mode="watchdog")


def _set_extra(conn_id: str, **extra: object) -> None:
    """Give a fleet connection extras (restored by the fleet's monkeypatch at teardown)."""
    variable = f"AIRFLOW_CONN_{conn_id.upper()}"
    spec = json.loads(os.environ[variable])
    spec["extra"] = extra
    os.environ[variable] = json.dumps(spec)


def test_lock_names_fit_the_server_limit() -> None:
    assert len(lock_name("x" * 64)) == 64 and lock_name("x" * 64) == lock_name("x" * 64)
    assert lock_name("x" * 64) != lock_name("x" * 63 + "y")


def test_flavour_is_detected_at_runtime(mysql_fleet: MySqlFleet) -> None:
    mysql_fleet.add("my-0")
    with MySqlEngine("my_0", "my-0") as engine:
        assert engine.is_mariadb == mysql_fleet.server.is_mariadb
        assert engine.timeout_mode == ("server" if engine.is_mariadb else "watchdog")
        assert engine.query_scalar("SELECT COUNT(*) FROM customers", Deadline(5)) == 3
    with MySqlEngine("my_0", "my-0", timeout_mode="watchdog") as engine:
        assert engine.timeout_mode == "watchdog"


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


@pytest.mark.timeout(120)
def test_watchdog_stops_ddl_blocked_by_a_metadata_lock(
    mysql_fleet: MySqlFleet, write_migration: WriteMigration
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
        engines.append(watchdog_factory(shard))
        return engines[-1]

    with mysql_fleet.hold_table_lock("my-0", "customers"):
        status = apply_to_shard(shard("my-0"), migration, engine_factory=make)
        still_running = mysql_fleet.running("my-0", "ALTER TABLE customers")

    assert status.error_code == "shardmigrate.migration_timeout", status
    assert still_running == []
    assert "1317" in status.error_message  # KILL QUERY
    assert engines[0].timeout_mode == "watchdog"
    assert engines[0].last_watchdog is not None and engines[0].last_watchdog.fired
    row = mysql_fleet.history("my-0")["006_alter"]
    assert (row["status"], row["statements_applied"]) == ("failed", 1)
    assert "ALTER TABLE customers" in row["error"]
    columns = {r[0] for r in mysql_fleet.query("my-0", "SELECT column_name FROM information_schema.columns")}
    assert "email" not in columns


@pytest.mark.timeout(120)
def test_watchdog_stops_a_long_statement(mysql_fleet: MySqlFleet, write_migration: WriteMigration) -> None:
    mysql_fleet.add("my-0")
    migration = load_migration(
        write_migration(
            "007_slow",
            up="SELECT SLEEP(30);\nCREATE TABLE never (id INT);\n",
            down="DROP TABLE never;",
            options={"per_shard_timeout": 1.5},
        )
    )

    status = apply_to_shard(shard("my-0"), migration, engine_factory=watchdog_factory)

    assert status.error_code == "shardmigrate.migration_timeout", status
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


@pytest.mark.timeout(120)
def test_mysql_connector_client_takes_the_same_path(mysql_fleet: MySqlFleet, write_migration: WriteMigration) -> None:
    """MySqlHook hands out a mysql-connector-python connection with ``{"client": "mysql-connector-python"}``."""
    mysql_fleet.add("my-0")
    _set_extra("my_0", client="mysql-connector-python")
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


@pytest.mark.timeout(120)
def test_mysql_connector_client_gives_up_on_a_server_that_never_answers(
    mysql_fleet: MySqlFleet, silent_server: SilentServer, write_migration: WriteMigration
) -> None:
    mysql_fleet.add("my-0")
    hung = hung_shard(MySqlShard(mysql_fleet, "my-0"), silent_server, "S3cret-pw", client="mysql-connector-python")
    migration = load_migration(write_migration("001_orders", up=UP, options={"per_shard_timeout": 1}))

    status = apply_to_shard(hung, migration)

    assert status.error_code == "shardmigrate.migration_timeout", status
    assert f"127.0.0.1:{silent_server.port}" in status.error_message and "S3cret-pw" not in status.error_message


# -- the one adapter past MySqlHook's public surface (engines/mysql.py connect_with_timeouts) ----------------


@pytest.mark.parametrize("client", ["mysqlclient", "mysql-connector-python"])
def test_timeout_adapter_connects_as_the_hook_does(mysql_fleet: MySqlFleet, client: str) -> None:
    """Fails when the installed MySqlHook stops building its driver arguments the way the adapter relies on:
    the adapter's connection must be the hook's own (same user, database, charset, cursor class) plus the
    timeouts."""
    from airflow.providers.mysql.hooks.mysql import MySqlHook

    mysql_fleet.add("my-0")
    extra: dict[str, object] = {"client": client, "charset": "latin1"}
    if client == "mysqlclient":
        extra["cursor"] = "dictcursor"
    _set_extra("my_0", **extra)
    hook = MySqlHook(mysql_conn_id="my_0")
    probe = "SELECT CURRENT_USER() AS u, DATABASE() AS d, @@character_set_client AS c"

    theirs = hook.get_conn()
    ours = connect_with_timeouts(hook, hook.connection, connect_timeout=5, read_timeout=5)
    try:
        readings = []
        for conn in (theirs, ours):
            cursor = conn.cursor()
            cursor.execute(probe)
            readings.append((type(conn), type(cursor), cursor.fetchall()))
            cursor.close()
    finally:
        theirs.close()
        ours.close()

    assert readings[0] == readings[1]
    assert mysql_fleet.databases["my-0"] in str(readings[1][2])
    if client == "mysqlclient":  # the extras the hook turns into driver arguments arrived (connector: ssl_* only)
        assert "latin1" in str(readings[1][2]) and "Dict" in readings[1][1].__name__
    assert "_get_conn_config_mysql_client(conn)" in _source(MySqlHook.get_conn)
    assert "_get_conn_config_mysql_connector_python(conn)" in _source(MySqlHook.get_conn)


def _source(function: object) -> str:
    import inspect

    return inspect.getsource(function)  # type: ignore[arg-type]
