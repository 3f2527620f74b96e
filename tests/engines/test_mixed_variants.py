"""One migration, three kinds of shard: each engine is picked from its Airflow connection's type and runs its
own script variant (``up.postgres.sql``, ``up.mysql.sql``, else ``up.sql``); the checksum covers them all."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from airflow_provider_shardmigrate.core.scripts import load_migration
from airflow_provider_shardmigrate.core.topology import parse_topology
from airflow_provider_shardmigrate.engines.runner import apply_to_shard, rollback_shard
from tests.conftest import SqliteFleet
from tests.server_fixtures import MySqlFleet, PostgresFleet, topology_yaml

pytestmark = [pytest.mark.postgres, pytest.mark.mysql]


def test_each_shard_runs_its_variant(
    sqlite_fleet: SqliteFleet,
    pg_fleet: PostgresFleet,
    mysql_fleet: MySqlFleet,
    write_migration: Callable[..., Path],
) -> None:
    sqlite_fleet.add("lite-0")
    pg_fleet.add("pg-0")
    mysql_fleet.add("my-0")
    migration = load_migration(
        write_migration(
            "001_variants",
            up="CREATE TABLE generic_events (id INTEGER PRIMARY KEY, payload TEXT);",
            down="DROP TABLE generic_events;",
            extra={
                "up.postgres.sql": "CREATE TABLE pg_events (id bigserial PRIMARY KEY, payload jsonb);",
                "down.postgres.sql": "DROP TABLE pg_events;",
                "up.mysql.sql": "CREATE TABLE my_events (id BIGINT AUTO_INCREMENT PRIMARY KEY, payload JSON);",
                "down.mysql.sql": "DROP TABLE my_events;",
            },
        )
    )
    assert migration.variants == ("", "mysql", "postgres")
    topology = parse_topology(yaml.safe_load(topology_yaml(["lite-0", "pg-0", "my-0"])))
    assert sqlite_fleet.topology(["lite-0", "pg-0", "my-0"]) == topology_yaml(["lite-0", "pg-0", "my-0"])

    statuses = {s.id: apply_to_shard(s, migration) for s in topology.shards}

    assert {k: v.outcome.value for k, v in statuses.items()} == dict.fromkeys(statuses, "succeeded"), statuses
    assert "generic_events" in sqlite_fleet.objects("lite-0")
    assert "pg_events" in pg_fleet.tables("pg-0") and "generic_events" not in pg_fleet.tables("pg-0")
    assert "my_events" in mysql_fleet.tables("my-0") and "generic_events" not in mysql_fleet.tables("my-0")
    checksums = {
        sqlite_fleet.history("lite-0")["001_variants"]["checksum"],
        pg_fleet.history("pg-0")["001_variants"]["checksum"],
        mysql_fleet.history("my-0")["001_variants"]["checksum"],
    }
    assert checksums == {migration.checksum}

    rolled = {s.id: rollback_shard(s, migration).outcome.value for s in topology.shards}

    assert rolled == dict.fromkeys(rolled, "rolled_back")
    assert "pg_events" not in pg_fleet.tables("pg-0") and "my_events" not in mysql_fleet.tables("my-0")
