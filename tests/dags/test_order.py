"""Migration order through real DAG runs (``dag.test()``) on a mixed fleet of PostgreSQL, MariaDB and SQLite
shards: a migration whose predecessor is not on the shards is refused with ``shardmigrate.out_of_order`` on
every shard, nothing applied, the report says the run was refused and names the missing migration; after the
predecessor ran, it succeeds; ``depends_on: []`` runs on its own; a bad ``depends_on`` never becomes a DAG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from airflow_provider_shardmigrate.dags.loader import load_migration_dags
from tests.server_fixtures import topology_yaml

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.mysql]

FLEET = ["pg-0", "my-0", "sq-0"]
OUT_OF_ORDER = "shardmigrate.out_of_order"
PARALLEL = {"strategy": "parallel", "max_parallelism": 3, "stop_on_first_failure": False}


class Fleet:
    def __init__(self, pg_fleet: Any, mysql_fleet: Any, sqlite_fleet: Any, tmp_path: Path) -> None:
        self.by_prefix = {"pg": pg_fleet, "my": mysql_fleet, "sq": sqlite_fleet}
        for shard_id in FLEET:
            self.of(shard_id).add(shard_id)
        self.topology = tmp_path / "shards.yaml"
        self.topology.write_text(topology_yaml(FLEET))
        self.migrations = tmp_path / "migrations"

    def of(self, shard_id: str) -> Any:
        return self.by_prefix[shard_id.split("-")[0]]

    def objects(self, shard_id: str) -> set[str]:
        return set(self.of(shard_id).objects(shard_id))

    def history(self, shard_id: str) -> dict[str, dict[str, Any]]:
        return dict(self.of(shard_id).history(shard_id))

    def dags(self) -> dict[str, Any]:
        return load_migration_dags(self.migrations, self.topology, base_dir=self.topology.parent)


@pytest.fixture
def fleet(pg_fleet, mysql_fleet, sqlite_fleet, tmp_path) -> Fleet:
    return Fleet(pg_fleet, mysql_fleet, sqlite_fleet, tmp_path)


def write_pair(write_migration: Any) -> None:
    write_migration(
        "001_orders",
        up="CREATE TABLE o_orders (id INT PRIMARY KEY, note VARCHAR(40));",
        down="DROP TABLE o_orders;",
        options=PARALLEL,
    )
    write_migration(
        "002_orders_note",
        up="CREATE INDEX idx_o_orders_note ON o_orders (note);",
        down="DROP INDEX idx_o_orders_note;",
        extra={"down.mysql.sql": "DROP INDEX idx_o_orders_note ON o_orders;"},
        options=PARALLEL,
    )


def test_a_migration_before_its_predecessor_is_refused_on_every_shard_then_runs_after_it(
    fleet, write_migration, dag_runner
):
    write_pair(write_migration)
    # a fresh DAG per run: dag.test() in one process keeps a run's conf in the DAG's Param objects
    assert "`001_orders`" in fleet.dags()["shardmigrate__002_orders_note"].doc_md  # it says what must come first

    for conf in ({"dry_run": True}, {}):
        run = dag_runner(fleet.dags()["shardmigrate__002_orders_note"], conf)
        assert run.state == "failed", conf
        assert run.outcomes() == dict.fromkeys(FLEET, "failed"), conf
        for shard_id in FLEET:
            status = run.shards[shard_id]
            assert status["error_code"] == OUT_OF_ORDER, status
            assert "001_orders (not_applied)" in status["error_message"]
        refused = run.report["refused"]
        assert refused["code"] == OUT_OF_ORDER and "001_orders" in refused["reason"]
        assert "3 shard(s) refused it, nothing was applied" in refused["reason"]
    for shard_id in FLEET:  # nothing applied anywhere: no index, no table, no row for either migration
        assert "idx_o_orders_note" not in fleet.objects(shard_id) and "o_orders" not in fleet.objects(shard_id)
        assert fleet.history(shard_id) == {}

    first = dag_runner(fleet.dags()["shardmigrate__001_orders"])
    assert first.state == "success", first.tasks
    after = dag_runner(fleet.dags()["shardmigrate__002_orders_note"])
    assert after.state == "success" and after.outcomes() == dict.fromkeys(FLEET, "succeeded")
    assert after.report["refused"] is None
    for shard_id in FLEET:
        assert "idx_o_orders_note" in fleet.objects(shard_id)
        assert fleet.history(shard_id)["002_orders_note"]["status"] == "applied"


def test_depends_on_an_empty_list_runs_independently_of_earlier_migrations(fleet, write_migration, dag_runner):
    write_pair(write_migration)
    write_migration(
        "003_audit",
        up="CREATE TABLE o_audit (id INT PRIMARY KEY);",
        down="DROP TABLE o_audit;",
        options={**PARALLEL, "depends_on": []},
    )
    run = dag_runner(fleet.dags()["shardmigrate__003_audit"])
    assert run.state == "success" and run.outcomes() == dict.fromkeys(FLEET, "succeeded")
    for shard_id in FLEET:
        assert sorted(fleet.history(shard_id)) == ["003_audit"]  # applied before 001 and 002, which never ran


def test_a_bad_depends_on_is_a_stand_in_dag_naming_the_field(fleet, write_migration):
    write_pair(write_migration)
    write_migration("003_later", options={"depends_on": ["004_future"]})
    write_migration("004_future")
    dags = fleet.dags()
    stand_in = dags["shardmigrate__003_later"]
    assert stand_in.task_ids == ["invalid_migration"] and "invalid" in stand_in.tags
    assert "shardmigrate.invalid_script" in stand_in.doc_md and "field 'depends_on'" in stand_in.doc_md
    assert "does not come before '003_later'" in stand_in.doc_md
    assert "shardmigrate__003_later__rollback" not in dags
    # the migration after it still waits for it: it is a migration of the folder, even broken
    assert "`003_later`" in dags["shardmigrate__004_future"].doc_md
