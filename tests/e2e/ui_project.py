"""The UI tests' project, added to the running e2e deployment (no change to the shared harness): shard databases
(PostgreSQL, one MariaDB shard that fails, one inactive shard), their Airflow connections created through the
REST API (the workers read them from the metadata DB), and a sub-folder of the dags folder the dag-processor
picks up on its next scan.

The project is its own fleet (``load_migration_dags(..., fleet="ui")``): the fleet status the page shows is
published by the real ``shardmigrate_status__ui`` DAG, read from every shard's history table; the test
computes what it must say from the same tables.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from airflow_provider_shardmigrate.dags.layout import FLEET_VIEW_ROUTE
from tests.e2e.project import MigrationSpec, migration_dag_id, write_migrations_project
from tests.server_fixtures import MYSQL_BASE_SCHEMA, conn_id_for, topology_yaml

PG_SHARDS = ["ui-0", "ui-1", "ui-3", "ui-4"]
FAILING = "ui-2"  # MariaDB with duplicate names: the unique index fails there, and its history says `failed`
INACTIVE = "ui-5"
SHARDS = ["ui-0", "ui-1", FAILING, "ui-3", "ui-4", INACTIVE]  # topology order
ACTIVE = [s for s in SHARDS if s != INACTIVE]
FLEET = "ui"
STATUS_DAG_ID = f"shardmigrate_status__{FLEET}"
FLEET_ROUTE = FLEET_VIEW_ROUTE

UNIQUE = MigrationSpec(
    "e2e_ui_unique",
    up="CREATE UNIQUE INDEX e2e_ui_name ON customers (name);",
    down="DROP INDEX e2e_ui_name;",
    variants={"down.mysql.sql": "DROP INDEX e2e_ui_name ON customers;"},
    options={
        "description": "Unique customer names",
        "strategy": "parallel",
        "max_parallelism": 4,
        "stop_on_first_failure": False,
        "auto_rollback": True,
        "depends_on": [],
    },
)
CANARY = MigrationSpec(
    "e2e_ui_canary",
    up="CREATE INDEX e2e_ui_canary_idx ON customers (id, name);",
    down="DROP INDEX e2e_ui_canary_idx;",
    variants={"down.mysql.sql": "DROP INDEX e2e_ui_canary_idx ON customers;"},
    options={
        "description": "Canary with a human approval",
        "strategy": "canary_first",
        "canary": "ui-0",
        "canary_validation": "SELECT COUNT(*) FROM customers",
        "canary_approval": True,
        "canary_approval_timeout": 900,
        "max_parallelism": 2,
        "depends_on": [],
    },
)
MIGRATIONS = sorted([UNIQUE, CANARY], key=lambda spec: spec.id)  # the order of the fleet status
LETTERS = {"applied": "A", "baselined": "B", "failed": "F", "running": "R", "rolled_back": "X"}
LEGEND = {
    "A": "applied",
    "B": "baselined",
    "F": "failed",
    "R": "running",
    "X": "rolled_back",
    "-": "not_applied",
    "?": "unreadable",
}


@dataclass
class UiProject:
    folder: Path
    dag_ids: list[str] = field(default_factory=list)

    def expected_fleet_status(self, e2e: Any) -> dict[str, Any]:
        """What the fleet status must say, computed from every shard's history table."""
        migrations = [spec.id for spec in MIGRATIONS]
        shards = []
        for shard_id in SHARDS:
            history = e2e.history(shard_id)
            row = "".join(LETTERS.get(str((history.get(m) or {}).get("status")), "-") for m in migrations)
            shards.append(
                {
                    "id": shard_id,
                    "active": shard_id != INACTIVE,
                    "engine": "mysql" if shard_id == FAILING else "postgres",
                    "row": row,
                    "error": None,  # every shard is readable
                }
            )
        counts = {
            m: {
                LEGEND[letter]: sum(1 for s in shards if s["row"][i] == letter)
                for letter in LEGEND
                if any(s["row"][i] == letter for s in shards)
            }
            for i, m in enumerate(migrations)
        }
        status = {
            "generated_at": datetime.now(UTC).isoformat(),
            "migrations": migrations,
            "shards": shards,
            "legend": LEGEND,
            "counts": counts,
            "complete": True,
        }
        return status


def set_up(e2e: Any) -> UiProject:
    """Create the shards and their connections, write the project, wait until its DAGs are parsed."""
    api = e2e.api
    for shard_id in SHARDS:
        if shard_id == FAILING:
            e2e.my.add(shard_id, MYSQL_BASE_SCHEMA + "INSERT INTO customers (name) VALUES ('ada');")
            spec = json.loads(e2e.my.conn_env(shard_id))
        else:
            e2e.pg.add(shard_id)
            spec = json.loads(e2e.pg.conn_env(shard_id))
        body = {"connection_id": conn_id_for(shard_id), **spec}
        api.request("POST", "/api/v2/connections", json=body, expect=(201, 200))
    folder = e2e.deployment.dags_folder / "ui"
    expected = write_migrations_project(folder, topology_yaml(SHARDS, inactive=[INACTIVE]), MIGRATIONS, fleet=FLEET)
    project = UiProject(folder, [*expected, STATUS_DAG_ID])
    e2e.deployment.wait_for_dags(project.dag_ids, timeout=180, unpause=False)
    for dag_id in project.dag_ids:
        # A DAG listed a moment ago may not be patchable yet (the dag-processor is still committing it).
        wait(f"{dag_id} to be unpaused", lambda d=dag_id: _unpause(api, d), alive=e2e.alive)
    return project


def _unpause(api: Any, dag_id: str) -> bool:
    response = api.request("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False})
    return response.status_code == 200


def wait(what: str, probe: Callable[[], Any], *, alive: Callable[[], None], timeout: float = 180.0) -> Any:
    """Poll ``probe`` until it returns something truthy; fail naming ``what`` (checking the deployment lives)."""
    end = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        alive()
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


def rollout_dag_id(spec: MigrationSpec) -> str:
    return migration_dag_id(spec.id)
