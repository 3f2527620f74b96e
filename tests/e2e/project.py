"""Writing a dags folder for the deployment: one-line DAG files, migration folders, topologies."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

#: The DAG file users write, byte for byte (docs/contracts.md).
MIGRATIONS_DAG_FILE = """\
from airflow_provider_shardmigrate import load_migration_dags

globals().update(load_migration_dags("migrations", topology="shards.yaml"))
"""
DRIFT_DAG_FILE = """\
from airflow_provider_shardmigrate import build_drift_dag

dag = build_drift_dag(topology="{topology}")
"""
#: One second of work inside the shard's database, so overlaps between shards are measurable.
PG_SLEEP_1S = "DO $$ BEGIN PERFORM pg_sleep(1); END $$;"
MYSQL_SLEEP_1S = "DO SLEEP(1);"


@dataclass
class MigrationSpec:
    """A migration folder: ``up``/``down`` scripts, engine variants (``{"up.mysql.sql": ...}``), options."""

    id: str
    up: str
    down: str
    options: dict[str, Any] = field(default_factory=dict)
    variants: dict[str, str] = field(default_factory=dict)

    def write(self, migrations: Path) -> Path:
        folder = migrations / self.id
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "up.sql").write_text(self.up.strip() + "\n")
        (folder / "down.sql").write_text(self.down.strip() + "\n")
        for name, text in self.variants.items():
            (folder / name).write_text(text.strip() + "\n")
        if self.options:
            (folder / "migration.yaml").write_text(yaml.safe_dump(self.options, sort_keys=False))
        return folder


def migration_dag_id(migration_id: str) -> str:
    return f"shardmigrate__{migration_id}"


def write_migrations_project(
    folder: Path,
    topology_yaml: str,
    migrations: Sequence[MigrationSpec],
    *,
    rollback: bool = True,
    fleet: str | None = None,
) -> list[str]:
    """A sub-folder of the dags folder with the one-line DAG file; returns the per-migration DAG ids it will
    produce. ``fleet`` names its fleet DAGs (``shardmigrate_catchup__<fleet>``...): one dags folder holding
    several migrations folders needs one name per folder, as a user's would."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "shards.yaml").write_text(topology_yaml)
    for spec in migrations:
        spec.write(folder / "migrations")
    dag_file = MIGRATIONS_DAG_FILE
    if fleet is not None:
        dag_file = dag_file.replace('topology="shards.yaml")', f'topology="shards.yaml", fleet="{fleet}")')
    (folder / "shardmigrate_dags.py").write_text(dag_file)
    ids = [migration_dag_id(spec.id) for spec in migrations]
    return ids + ([f"{dag_id}__rollback" for dag_id in ids] if rollback else [])


def write_drift_project(folder: Path, topology_yaml: str, topology_name: str = "drift.yaml") -> str:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / topology_name).write_text(topology_yaml)
    (folder / "shardmigrate_drift.py").write_text(DRIFT_DAG_FILE.format(topology=topology_name))
    return "shardmigrate_drift"


def topology(shard_ids: Iterable[str], drift: dict[str, Any] | None = None) -> str:
    """A topology file (conn id = shard id with ``-`` -> ``_``, like the server fixtures)."""
    data: dict[str, Any] = {"shards": [{"id": s, "conn_id": s.replace("-", "_")} for s in shard_ids]}
    if drift:
        data["drift"] = drift
    return yaml.safe_dump(data, sort_keys=False)
