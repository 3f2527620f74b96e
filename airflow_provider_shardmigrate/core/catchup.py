"""Catching a shard up with its migrations folder: which migrations it still lacks, in which order, and the
shape of what one shard's catch-up (or baselining) did (docs/contracts.md, the catch-up report).

A shard that was onboarded empty, restored from an old backup, or skipped by per-migration DAGs run by hand
gets every migration it does not hold, in id order, through the same per-shard protocol as a rollout
(engines/runner.py); it stops at its first failure, so it never holds a migration whose predecessors failed.

Pure: migrations and history rows in, steps and shapes out; no Airflow, no database.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from airflow_provider_shardmigrate.core.errors import InvalidParamsError
from airflow_provider_shardmigrate.core.history import HistoryRecord, holds
from airflow_provider_shardmigrate.core.scripts import Migration, MigrationSet
from airflow_provider_shardmigrate.core.status import ShardStatus
from airflow_provider_shardmigrate.core.topology import Shard


@dataclass(frozen=True)
class CatchupStep:
    """One migration of a catch-up, in the folder's order."""

    id: str
    #: The loaded migration; None when its folder cannot be loaded (``error`` says why).
    migration: Migration | None
    #: Migrations the shard must hold before this one runs (see core/scripts.required_migrations).
    requires: tuple[str, ...] = ()
    error: str | None = None


def catchup_steps(migrations: MigrationSet) -> list[CatchupStep]:
    """Every migration of the folder in id order, broken ones included (a shard that lacks one stops there)."""
    loaded = {migration.id: migration for migration in migrations.migrations}
    steps = []
    for migration_id in migrations.ids:
        migration = loaded.get(migration_id)
        if migration is not None:
            steps.append(CatchupStep(migration_id, migration, migrations.requires(migration)))
        else:
            error = migrations.broken.get(migration_id)
            steps.append(CatchupStep(migration_id, None, error=str(error) if error else "cannot be loaded"))
    return steps


def up_to(ids: Sequence[str], last: str | None) -> list[str]:
    """The ids up to and including ``last`` (every id when ``last`` is empty); refuses an id not in ``ids``."""
    if not last:
        return list(ids)
    if last not in ids:
        shown = ", ".join(ids[-10:]) or "none"
        raise InvalidParamsError(f"up_to '{last}' is not a migration of this folder (the last ones: {shown})")
    return list(ids[: list(ids).index(last) + 1])


def held(step: CatchupStep, row: HistoryRecord | None) -> bool:
    """Whether the shard already holds ``step`` -- with the same checksum: a row with another checksum is left
    to the per-shard protocol, which refuses it (``invalid_script``) instead of skipping it silently."""
    if not holds(row):
        return False
    return step.migration is None or (row is not None and row.checksum == step.migration.checksum)


def still_to_do(steps: Sequence[CatchupStep], rows: Mapping[str, HistoryRecord]) -> list[CatchupStep]:
    """The steps a shard whose history holds ``rows`` has not got yet, in order."""
    return [step for step in steps if not held(step, rows.get(step.id))]


def is_selected(shard: Shard, requested: Sequence[str]) -> bool:
    """Whether a catch-up run with the ``shards`` Param ``requested`` works on ``shard``: every active shard when
    nothing is requested, else the requested ones (case-insensitive; inactive shards too -- a new shard can be
    caught up before it is activated)."""
    if not requested:
        return shard.active
    return shard.key in {item.casefold() for item in requested}


def unknown_shards(requested: Sequence[str], shards: Sequence[Shard]) -> list[str]:
    """The requested shard ids that are not shards of the topology (case-insensitive)."""
    known = {shard.key for shard in shards}
    return [item for item in requested if item.casefold() not in known]


@dataclass(frozen=True)
class CatchupStatus(ShardStatus):
    """What one shard's catch-up (or baselining) did: a ShardStatus, plus which migrations.

    ``applied``: recorded by this run (run, or baselined); ``would_apply``: a dry run's list; ``failed_migration``:
    the one it stopped at (``error_code`` / ``error_message`` say why); ``pending``: those after it, left not
    applied.
    """

    applied: tuple[str, ...] = ()
    would_apply: tuple[str, ...] = ()
    failed_migration: str | None = None
    pending: tuple[str, ...] = ()

    def to_xcom(self) -> dict[str, Any]:
        return {
            **super().to_xcom(),
            "applied": list(self.applied),
            "would_apply": list(self.would_apply),
            "failed_migration": self.failed_migration,
            "pending": list(self.pending),
        }

    @classmethod
    def from_xcom(cls, data: Mapping[str, Any]) -> CatchupStatus:
        base = ShardStatus.from_xcom(data)
        return cls(
            base.shard_id,
            base.outcome,
            base.duration_ms,
            base.error_code,
            base.error_message,
            applied=tuple(data.get("applied") or ()),
            would_apply=tuple(data.get("would_apply") or ()),
            failed_migration=data.get("failed_migration"),
            pending=tuple(data.get("pending") or ()),
        )


def catchup_statuses_in(values: Sequence[Any]) -> list[CatchupStatus]:
    """The catch-up statuses in XCom values: a per-shard task returns one, a lane a list."""
    found: list[CatchupStatus] = []
    for value in values:
        items = value if isinstance(value, list) else [value]
        found.extend(CatchupStatus.from_xcom(item) for item in items if ShardStatus.is_xcom(item))
    return found
