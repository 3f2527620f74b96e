"""``load_migration_dags``: every migration folder becomes a rollout DAG and a rollback DAG.

A DAG file holds one line::

    globals().update(load_migration_dags("migrations", topology="shards.yaml"))

A broken migration folder does not stop the others from loading: it becomes a DAG of the same id that
shows the error (description, docs, a failing task), so the problem is visible in the UI. A broken
topology breaks every migration alike and is raised as the file's import error.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_provider_shardmigrate.core.errors import ShardMigrateError
from airflow_provider_shardmigrate.core.scripts import load_migrations
from airflow_provider_shardmigrate.core.topology import load_topology
from airflow_provider_shardmigrate.dags.common import (
    dag_defaults,
    migration_dag_id,
    rollback_dag_id,
)

if TYPE_CHECKING:
    from airflow.sdk import DAG


def _caller_dir(depth: int = 2) -> Path:
    frame = sys._getframe(depth)
    file = frame.f_globals.get("__file__")
    return Path(file).resolve().parent if file else Path.cwd()


def resolve(path: str | Path, base: Path) -> Path:
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else (base / candidate)


def build_invalid_migration_dag(migration_id: str, error: Exception) -> DAG:
    """A stand-in DAG for a migration that cannot be built: its description and task say why."""
    from airflow.sdk import DAG

    from airflow_provider_shardmigrate.operators.invalid import InvalidMigrationOperator

    message = str(error)
    with DAG(
        migration_dag_id(migration_id),
        **dag_defaults(
            description=f"INVALID: {message.splitlines()[0]}"[:500],
            doc_md=f"### Migration `{migration_id}` cannot run\n\n```\n{message}\n```\n\nFix the folder; the DAG is "
            "rebuilt at the next parse.",
            tags=["shardmigrate", "invalid"],
        ),
    ) as dag:
        InvalidMigrationOperator(task_id="invalid_migration", message=message)
    return dag


def load_migration_dags(
    migrations: str | Path,
    topology: str | Path,
    *,
    include_rollback: bool = True,
    base_dir: str | Path | None = None,
) -> dict[str, DAG]:
    """Build ``{dag_id: DAG}`` for every migration under ``migrations``.

    :param migrations: The migrations folder (relative paths resolve against the calling DAG file's folder).
    :param topology: The topology file (same resolution).
    :param include_rollback: Also build ``shardmigrate__<id>__rollback`` for each migration.
    :param base_dir: Folder for relative paths instead of the caller's.
    """
    from airflow.sdk import get_parsing_context

    from airflow_provider_shardmigrate.dags.migration import build_migration_dag
    from airflow_provider_shardmigrate.dags.rollback import build_rollback_dag

    base = Path(base_dir) if base_dir is not None else _caller_dir()
    shard_topology = load_topology(resolve(topology, base))
    found = load_migrations(resolve(migrations, base))
    # A worker parsing the file to run one task only needs that task's DAG.
    wanted = get_parsing_context().dag_id
    dags: dict[str, Any] = {}
    for migration in found.migrations:
        ids = (migration_dag_id(migration.id), rollback_dag_id(migration.id))
        if wanted is not None and wanted not in ids:
            continue
        try:
            dags[ids[0]] = build_migration_dag(migration, shard_topology)
            if include_rollback:
                dags[ids[1]] = build_rollback_dag(migration, shard_topology)
        except ShardMigrateError as exc:
            if not shard_topology.active_shards:
                raise
            dags[ids[0]] = build_invalid_migration_dag(migration.id, exc)
    for migration_id, error in found.broken.items():
        if wanted is None or wanted == migration_dag_id(migration_id):
            dags[migration_dag_id(migration_id)] = build_invalid_migration_dag(migration_id, error)
    return dags
