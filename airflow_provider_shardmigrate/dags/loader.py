"""``load_migration_dags``: every migration folder becomes a rollout DAG and a rollback DAG, and the folder as
a whole gets the fleet DAGs: ``shardmigrate_catchup`` (every pending migration, in order, on each shard),
``shardmigrate_status`` (the scheduled shard x migration matrix) and ``shardmigrate_baseline`` (onboarding).

A DAG file holds one line::

    globals().update(load_migration_dags("migrations", topology="shards.yaml"))

Migrations are ordered by id: each rollout DAG is told which migrations a shard must hold first (every
earlier one of the folder, or its ``depends_on``), and refuses a shard lacking one (``out_of_order``).

A broken migration folder does not stop the others from loading: it becomes a DAG of the same id that
shows the error (description, docs, a failing task), so the problem is visible in the UI. A folder whose
name is not a valid migration id (a space, a quote, a newline...) cannot give its name to a DAG: its
stand-in is ``shardmigrate__invalid__<name made safe>__<hash of the name>``. A broken topology breaks
every migration alike and is raised as the file's import error.
"""

from __future__ import annotations

import hashlib
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_provider_shardmigrate.core.errors import ShardMigrateError
from airflow_provider_shardmigrate.core.scripts import MIGRATION_ID_PATTERN, MigrationSet, load_migrations
from airflow_provider_shardmigrate.core.topology import Topology, load_topology
from airflow_provider_shardmigrate.dags.common import (
    DAG_PREFIX,
    dag_defaults,
    migration_dag_id,
    rollback_dag_id,
)
from airflow_provider_shardmigrate.dags.layout import BASELINE_DAG_ID, CATCHUP_DAG_ID, STATUS_DAG_ID, fleet_dag_id

if TYPE_CHECKING:
    from airflow.sdk import DAG


def _caller_dir(depth: int = 2) -> Path:
    frame = sys._getframe(depth)
    file = frame.f_globals.get("__file__")
    return Path(file).resolve().parent if file else Path.cwd()


def resolve(path: str | Path, base: Path) -> Path:
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else (base / candidate)


_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def invalid_dag_id(folder_name: str) -> str:
    """The DAG id of the stand-in for a broken folder: ``shardmigrate__<id>`` when the name is a valid
    migration id, else a valid DAG id derived from it -- stable across parses (a hash of the exact name,
    so names that differ only in unsafe characters stay apart)."""
    if MIGRATION_ID_PATTERN.fullmatch(folder_name):
        return migration_dag_id(folder_name)
    safe = _UNSAFE.sub("_", folder_name).strip("_.-")[:100] or "folder"
    digest = hashlib.sha256(folder_name.encode("utf-8", "surrogateescape")).hexdigest()[:10]
    return f"{DAG_PREFIX}invalid__{safe}__{digest}"


def _stand_in_docs(migration_id: str, dag_id: str, message: str) -> str:
    if dag_id == migration_dag_id(migration_id):
        head = f"### Migration `{migration_id}` cannot run"
    else:
        head = (
            f"### Migration folder {migration_id!r} cannot run\n\nThe folder name {migration_id!r} is not a valid "
            "migration id: the id is the folder name, and it becomes DAG ids and the key of every shard's history "
            "row, so it may only hold letters, digits, '_', '.' and '-'. This stand-in DAG is named "
            f"`{dag_id}` instead; rename the folder."
        )
    return f"{head}\n\n```\n{message}\n```\n\nFix the folder; the DAG is rebuilt at the next parse."


def build_invalid_migration_dag(migration_id: str, error: Exception) -> DAG:
    """A stand-in DAG for a migration that cannot be built: its description and task say why."""
    from airflow.sdk import DAG

    from airflow_provider_shardmigrate.operators.invalid import InvalidMigrationOperator

    message = str(error)
    dag_id = invalid_dag_id(migration_id)
    with DAG(
        dag_id,
        **dag_defaults(
            description=f"INVALID: {message.splitlines()[0]}"[:500],
            doc_md=_stand_in_docs(migration_id, dag_id, message),
            tags=["shardmigrate", "invalid"],
        ),
    ) as dag:
        InvalidMigrationOperator(task_id="invalid_migration", message=message)
    return dag


def _fleet_dags(
    found: MigrationSet, topology: Topology, topology_path: Path, fleet: str | None, wanted: str | None
) -> dict[str, Any]:
    """The catch-up, status and baseline DAGs of the folder (only ``wanted`` when a worker parses for one)."""
    from airflow_provider_shardmigrate.dags.baseline import build_baseline_dag
    from airflow_provider_shardmigrate.dags.catchup import build_catchup_dag
    from airflow_provider_shardmigrate.dags.fleet_status import build_status_dag

    builders: dict[str, Any] = {
        fleet_dag_id(STATUS_DAG_ID, fleet): lambda dag_id: build_status_dag(
            found.root.resolve(), topology_path, schedule=topology.status.schedule, dag_id=dag_id
        )
    }
    if found.ids and topology.shards:  # nothing to catch up or baseline otherwise
        builders[fleet_dag_id(CATCHUP_DAG_ID, fleet)] = lambda dag_id: build_catchup_dag(found, topology, dag_id=dag_id)
        builders[fleet_dag_id(BASELINE_DAG_ID, fleet)] = lambda dag_id: build_baseline_dag(
            found, topology, dag_id=dag_id
        )
    return {dag_id: build(dag_id) for dag_id, build in builders.items() if wanted is None or wanted == dag_id}


def load_migration_dags(
    migrations: str | Path,
    topology: str | Path,
    *,
    include_rollback: bool = True,
    fleet_dags: bool = True,
    fleet: str | None = None,
    base_dir: str | Path | None = None,
) -> dict[str, DAG]:
    """Build ``{dag_id: DAG}`` for every migration under ``migrations``, and the folder's fleet DAGs.

    :param migrations: The migrations folder (relative paths resolve against the calling DAG file's folder).
    :param topology: The topology file (same resolution).
    :param include_rollback: Also build ``shardmigrate__<id>__rollback`` for each migration.
    :param fleet_dags: Also build ``shardmigrate_catchup``, ``shardmigrate_status`` and ``shardmigrate_baseline``.
    :param fleet: A name suffixing the fleet DAG ids (``shardmigrate_catchup__<fleet>``), for a dags folder that
        holds several migrations folders (DAG ids are unique per deployment).
    :param base_dir: Folder for relative paths instead of the caller's.
    """
    from airflow.sdk import get_parsing_context

    from airflow_provider_shardmigrate.core.plans import shared_plans
    from airflow_provider_shardmigrate.dags.migration import build_migration_dag
    from airflow_provider_shardmigrate.dags.rollback import build_rollback_dag

    if fleet is not None and not MIGRATION_ID_PATTERN.fullmatch(fleet):
        raise ValueError(f"fleet {fleet!r} must be letters, digits, '_', '.', '-' (it becomes part of DAG ids)")
    base = Path(base_dir) if base_dir is not None else _caller_dir()
    topology_path = resolve(topology, base).resolve()
    shard_topology = load_topology(topology_path)
    found = load_migrations(resolve(migrations, base), allow_symlinks=shard_topology.allow_symlinks)
    # A worker parsing the file to run one task only needs that task's DAG.
    wanted = get_parsing_context().dag_id
    # The migrations share the topology (and mostly their options): plan it once per shaping (core/plans.py).
    with shared_plans():
        dags: dict[str, Any] = {}
        for migration in found.migrations:
            ids = (migration_dag_id(migration.id), rollback_dag_id(migration.id))
            if wanted is not None and wanted not in ids:
                continue
            try:
                dags[ids[0]] = build_migration_dag(migration, shard_topology, requires=found.requires(migration))
                if include_rollback:
                    dags[ids[1]] = build_rollback_dag(migration, shard_topology)
            except ShardMigrateError as exc:
                if not shard_topology.active_shards:
                    raise
                dags[ids[0]] = build_invalid_migration_dag(migration.id, exc)
        for migration_id, error in found.broken.items():
            if wanted is None or wanted == invalid_dag_id(migration_id):
                dags[invalid_dag_id(migration_id)] = build_invalid_migration_dag(migration_id, error)
        if fleet_dags:
            dags.update(_fleet_dags(found, shard_topology, topology_path, fleet, wanted))
        return dags
