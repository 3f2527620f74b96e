"""One topology with PostgreSQL, MariaDB, SQLite and MongoDB shards, run through real DAGs (``dag.test()``):
every strategy runs each engine's own script (``up.mongo.json`` on the MongoDB shards, SQL on the others),
read back from each server; a migration lacking a script for some shard's engine is refused by the
``preflight`` task, naming the shard and the file, before any shard is touched.

Why the preflight and not the DAG builder: building a DAG reads the migration folder and the topology only --
no connection is looked up at parse time, and the topology does not say which database a connection is --
so the shards' engines are first known when a run starts (engines/coverage.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from airflow_provider_shardmigrate.core.topology import parse_topology
from airflow_provider_shardmigrate.dags.migration import build_migration_dag
from airflow_provider_shardmigrate.dags.rollback import build_rollback_dag
from tests.conftest import BASE_SCHEMA
from tests.server_fixtures import MYSQL_BASE_SCHEMA, PG_BASE_SCHEMA, topology_yaml

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.mysql, pytest.mark.mongo]

ORDER = ["mg-0", "pg-0", "my-0", "sq-0", "mg-1"]  # a MongoDB shard first: the canary of canary_first
INDEX = "idx_customers_name"
SQL = {
    "up.sql": f"CREATE UNIQUE INDEX {INDEX} ON customers (name);",
    "down.sql": f"DROP INDEX {INDEX};",
    "down.mysql.sql": f"DROP INDEX {INDEX} ON customers;",
}
MONGO = {
    "up.mongo.json": json.dumps(
        [{"createIndexes": "customers", "indexes": [{"key": {"name": 1}, "name": INDEX, "unique": True}]}]
    ),
    "down.mongo.json": json.dumps([{"dropIndexes": "customers", "index": INDEX}]),
}


class Fleet:
    def __init__(self, pg: Any, my: Any, sq: Any, mg: Any) -> None:
        self.fleets = {"pg": pg, "my": my, "sq": sq, "mg": mg}

    def of(self, shard_id: str) -> Any:
        return self.fleets[shard_id.split("-")[0]]

    def build(self, order: list[str]) -> Any:
        for shard_id in order:
            kind = shard_id.split("-")[0]
            if kind == "mg":
                self.of(shard_id).add(shard_id)
            else:
                self.of(shard_id).add(
                    shard_id, {"pg": PG_BASE_SCHEMA, "my": MYSQL_BASE_SCHEMA, "sq": BASE_SCHEMA}[kind]
                )
        return parse_topology(yaml.safe_load(topology_yaml(order)), "mixed.yaml")

    def has_index(self, shard_id: str) -> bool:
        fleet = self.of(shard_id)
        return INDEX in (fleet.objects(shard_id) if shard_id.startswith("sq") else fleet.indexes(shard_id))

    def history(self, shard_id: str) -> dict[str, Any]:
        return dict(self.of(shard_id).history(shard_id))


@pytest.fixture
def fleet(pg_fleet: Any, mysql_fleet: Any, sqlite_fleet: Any, mongo_fleet: Any) -> Fleet:
    return Fleet(pg_fleet, mysql_fleet, sqlite_fleet, mongo_fleet)


def migration_folder(write_migration: Any, migration_id: str, scripts: dict[str, str], **options: Any) -> Path:
    folder: Path = write_migration(migration_id, up=SQL["up.sql"], down=SQL["down.sql"], options=options or None)
    for name in ("up.sql", "down.sql"):
        if name not in scripts:
            (folder / name).unlink()
    for name, text in scripts.items():
        (folder / name).write_text(text)
    return folder


@pytest.mark.parametrize("strategy", ["sequential", "parallel", "rolling", "canary_first"])
def test_every_strategy_runs_each_engines_own_script(
    strategy: str, fleet: Fleet, write_migration: Any, dag_runner: Any
) -> None:
    topology = fleet.build(ORDER)
    folder = migration_folder(
        write_migration, "200_mixed_mongo", {**SQL, **MONGO}, strategy=strategy, max_parallelism=2
    )

    run = dag_runner(build_migration_dag(folder, topology))

    assert run.state == "success", run.report
    assert run.outcomes() == dict.fromkeys(ORDER, "succeeded")
    for shard_id in ORDER:
        assert fleet.has_index(shard_id), shard_id
        row = fleet.history(shard_id)["200_mixed_mongo"]
        assert (row["status"], row["statements_applied"], row["statements_total"]) == ("applied", 1, 1), shard_id
    for shard_id in ("mg-0", "mg-1"):  # the JSON script ran there: a unique index on name
        specs = {s["name"]: s for s in fleet.of(shard_id).db(shard_id)["customers"].list_indexes()}
        assert specs[INDEX]["unique"] is True and specs[INDEX]["key"] == {"name": 1}

    if strategy == "canary_first":
        undone = dag_runner(build_rollback_dag(folder, topology), {"shards": ["all"]})
        assert undone.state == "success" and set(undone.outcomes().values()) == {"rolled_back"}
        for shard_id in ORDER:
            assert not fleet.has_index(shard_id), shard_id
            assert fleet.history(shard_id)["200_mixed_mongo"]["status"] == "rolled_back"


@pytest.mark.parametrize(
    ("scripts", "lacking", "files"),
    [
        (SQL, ["mg-0", "mg-1"], "up.mongo.json, down.mongo.json"),
        (MONGO, ["pg-0", "my-0", "sq-0"], "up.sql, down.sql"),
    ],
    ids=["no_mongo_script", "mongo_only"],
)
def test_a_missing_script_for_a_shards_engine_refuses_the_run_before_any_shard(
    scripts: dict[str, str], lacking: list[str], files: str, fleet: Fleet, write_migration: Any, dag_runner: Any
) -> None:
    topology = fleet.build(ORDER)
    folder = migration_folder(write_migration, "201_lacking", scripts, strategy="parallel")

    run = dag_runner(build_migration_dag(folder, topology))

    assert run.state == "failed"
    assert run.outcomes() == dict.fromkeys(ORDER, "pending")
    assert run.report is not None and run.report["refused"]["code"] == "shardmigrate.invalid_script"
    reason = run.report["refused"]["reason"]
    for shard_id in lacking:
        assert f"shard '{shard_id}': add {files}" in reason, reason
    assert all(f"shard '{s}'" not in reason for s in ORDER if s not in lacking)
    assert run.xcoms[("preflight", -1)]["missing_scripts"] == {s: files.split(", ") for s in lacking}
    for shard_id in ORDER:  # nothing ran anywhere
        assert "201_lacking" not in fleet.history(shard_id) and not fleet.has_index(shard_id)
