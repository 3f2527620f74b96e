"""One topology with PostgreSQL, MariaDB and SQLite shards, every strategy x stop_on_first_failure, a
MariaDB shard made to fail: per-shard outcomes, the index read back from each server's catalog, and
the history rows (transactional engines keep no row for a failed shard; MariaDB keeps a ``failed`` row
that says no statement completed)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from airflow_provider_shardmigrate.core.topology import parse_topology
from airflow_provider_shardmigrate.dags.migration import build_migration_dag
from airflow_provider_shardmigrate.dags.rollback import build_rollback_dag
from tests.conftest import BASE_SCHEMA
from tests.server_fixtures import MYSQL_BASE_SCHEMA, PG_BASE_SCHEMA, topology_yaml

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.mysql]

ORDER = ["pg-0", "my-0", "my-bad", "sq-0", "pg-1", "sq-1"]
UNIQUE_UP = "CREATE UNIQUE INDEX idx_customers_name ON customers (name);"
INDEX = "idx_customers_name"
MYSQL_DOWN = {"down.mysql.sql": "DROP INDEX idx_customers_name ON customers;"}


class Mixed:
    def __init__(self, pg_fleet: Any, mysql_fleet: Any, sqlite_fleet: Any) -> None:
        self.pg, self.my, self.sq = pg_fleet, mysql_fleet, sqlite_fleet

    def fleet_of(self, shard_id: str) -> Any:
        return {"pg": self.pg, "my": self.my, "sq": self.sq}[shard_id.split("-")[0]]

    def build(self, order: list[str], broken: tuple[str, ...] = ("my-bad",), extra: tuple[str, ...] = ()) -> Any:
        for shard_id in order:
            fleet = self.fleet_of(shard_id)
            base = {"pg": PG_BASE_SCHEMA, "my": MYSQL_BASE_SCHEMA, "sq": BASE_SCHEMA}[shard_id.split("-")[0]]
            # a broken shard has the same schema (the preflight passes) and a duplicate name
            fleet.add(shard_id, base + ("INSERT INTO customers (name) VALUES ('ada');" if shard_id in broken else ""))
        return parse_topology(yaml.safe_load(topology_yaml(order, inactive=extra)), "mixed.yaml")

    def has_index(self, shard_id: str) -> bool:
        fleet = self.fleet_of(shard_id)
        return INDEX in (fleet.objects(shard_id) if fleet is self.sq else fleet.indexes(shard_id))

    def history(self, shard_id: str, migration_id: str) -> dict[str, Any] | None:
        return self.fleet_of(shard_id).history(shard_id).get(migration_id)


@pytest.fixture
def mixed(pg_fleet, mysql_fleet, sqlite_fleet) -> Mixed:
    return Mixed(pg_fleet, mysql_fleet, sqlite_fleet)


def check_shards(mixed: Mixed, outcomes: dict[str, str], migration_id: str) -> None:
    for shard_id, outcome in outcomes.items():
        row = mixed.history(shard_id, migration_id)
        if outcome == "succeeded":
            assert mixed.has_index(shard_id), shard_id
            assert row is not None and row["status"] == "applied" and row["statements_applied"] == 1, (shard_id, row)
        else:
            assert not mixed.has_index(shard_id), shard_id
            if outcome == "failed" and shard_id.startswith("my-"):
                assert row is not None and row["status"] == "failed" and row["statements_applied"] == 0, row
                assert "statement 1 of 1 failed" in row["error"]
            else:
                assert row is None, (shard_id, row)


@pytest.mark.parametrize("stop", [True, False], ids=["stop", "continue"])
@pytest.mark.parametrize("strategy", ["sequential", "parallel", "rolling", "canary_first"])
def test_mixed_fleet_every_strategy(strategy, stop, mixed, write_migration, dag_runner):
    topology = mixed.build(ORDER)
    migration = write_migration(
        "100_mixed", up=UNIQUE_UP, extra=MYSQL_DOWN, options={"strategy": strategy, "max_parallelism": 2}
    )
    run = dag_runner(build_migration_dag(migration, topology), {"stop_on_first_failure": stop})
    outcomes = run.outcomes()
    assert list(outcomes) == ORDER
    assert outcomes["my-bad"] == "failed"
    assert run.shards["my-bad"]["error_code"] == "shardmigrate.migration_failed"
    assert "Duplicate entry" in run.shards["my-bad"]["error_message"]
    assert run.state == "failed"
    others = {sid: o for sid, o in outcomes.items() if sid != "my-bad"}
    if not stop:
        assert set(others.values()) == {"succeeded"}
    elif strategy == "sequential":
        assert outcomes == {
            "pg-0": "succeeded",
            "my-0": "succeeded",
            "my-bad": "failed",
            "sq-0": "pending",
            "pg-1": "pending",
            "sq-1": "pending",
        }
    elif strategy == "rolling":  # batches [pg-0, my-0] [my-bad, sq-0] [pg-1, sq-1]: the failing batch completes
        assert outcomes == {
            "pg-0": "succeeded",
            "my-0": "succeeded",
            "my-bad": "failed",
            "sq-0": "succeeded",
            "pg-1": "pending",
            "sq-1": "pending",
        }
    else:  # parallel waves: which shards ran before the failure depends on scheduling order
        assert set(others.values()) <= {"succeeded", "pending"}
        if strategy == "canary_first":
            assert outcomes["pg-0"] == "succeeded"  # the canary
    check_shards(mixed, outcomes, "100_mixed")


def test_mixed_fleet_clean_rollout_rerun_and_rollback(mixed, write_migration, dag_runner):
    order = ["pg-0", "my-0", "sq-0", "pg-1", "my-1"]
    topology = mixed.build(order, broken=())
    migration = write_migration(
        "101_mixed_clean", up=UNIQUE_UP, extra=MYSQL_DOWN, options={"strategy": "canary_first", "max_parallelism": 3}
    )
    first = dag_runner(build_migration_dag(migration, topology))
    assert first.state == "success" and set(first.outcomes().values()) == {"succeeded"}
    check_shards(mixed, first.outcomes(), "101_mixed_clean")
    again = dag_runner(build_migration_dag(migration, topology))
    assert set(again.outcomes().values()) == {"already_applied"}

    undone = dag_runner(build_rollback_dag(migration, topology), {"shards": ["all"]})
    assert undone.state == "success" and set(undone.outcomes().values()) == {"rolled_back"}
    for shard_id in order:
        assert not mixed.has_index(shard_id)
        assert mixed.history(shard_id, "101_mixed_clean")["status"] == "rolled_back"
    reapplied = dag_runner(build_migration_dag(migration, topology))
    assert set(reapplied.outcomes().values()) == {"succeeded"}


def test_auto_rollback_across_engines(mixed, write_migration, dag_runner):
    topology = mixed.build(ORDER)
    migration = write_migration(
        "102_mixed_rollback",
        up=UNIQUE_UP,
        extra=MYSQL_DOWN,
        options={"strategy": "parallel", "stop_on_first_failure": False, "auto_rollback": True},
    )
    run = dag_runner(build_migration_dag(migration, topology))
    assert run.state == "failed"
    assert run.outcomes() == {sid: ("failed" if sid == "my-bad" else "rolled_back") for sid in ORDER}
    for shard_id in ORDER:
        assert not mixed.has_index(shard_id)


def test_unreachable_shard_fails_clearly_and_the_others_continue(mixed, write_migration, dag_runner):
    mixed.pg.add("pg-0")
    mixed.pg.add("pg-down", port=1, password="s3cret-pw")
    mixed.my.add("my-0")
    topology = parse_topology(yaml.safe_load(topology_yaml(["pg-0", "pg-down", "my-0"])), "mixed.yaml")
    migration = write_migration(
        "103_unreachable",
        up=UNIQUE_UP,
        extra=MYSQL_DOWN,
        # without the preflight: an unreachable shard would refuse the whole run there (see the next test)
        options={"strategy": "sequential", "stop_on_first_failure": False, "validate_before_apply": False},
    )
    run = dag_runner(build_migration_dag(migration, topology))
    assert run.outcomes() == {"pg-0": "succeeded", "pg-down": "failed", "my-0": "succeeded"}
    message = run.shards["pg-down"]["error_message"]
    assert "127.0.0.1:1" in message and "s3cret-pw" not in message
    assert "s3cret-pw" not in str(run.xcoms)


@pytest.mark.slow
def test_a_shard_the_preflight_cannot_read_refuses_the_run(mixed, write_migration, dag_runner):
    mixed.pg.add("pg-0")
    mixed.pg.add("pg-down", port=1, password="s3cret-pw")
    topology = parse_topology(yaml.safe_load(topology_yaml(["pg-0", "pg-down"])), "mixed.yaml")
    migration = write_migration("104_refused", up=UNIQUE_UP, options={"strategy": "parallel"})
    run = dag_runner(build_migration_dag(migration, topology))
    assert run.state == "failed"
    assert run.outcomes() == {"pg-0": "pending", "pg-down": "pending"}
    assert run.report is not None
    assert run.report["refused"]["code"] == "shardmigrate.schema_comparison_failed"
    assert "pg-down" in run.report["refused"]["reason"] and "s3cret-pw" not in str(run.xcoms)
    assert mixed.pg.history("pg-0") == {}  # nothing ran anywhere
