"""Before a run touches any shard: does the migration have a script for every targeted shard's engine?

The DAG is built from the migration folder and the topology only -- parse time looks up no connection, and
the topology does not say which database a connection is -- so the engines of the shards are first known at
run time. The ``preflight`` task (the first task of every rollout and rollback run) therefore resolves each
targeted shard's connection type and refuses the run, naming every shard and the file it lacks, before any
shard starts: a mixed fleet never ends half-migrated because the MongoDB shards had no ``up.mongo.json``.
A migration holding both ``up.sql`` and ``up.mongo.json`` runs on every engine, so nothing is looked up.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from airflow_provider_shardmigrate.core.errors import InvalidScriptError, ShardMigrateError
from airflow_provider_shardmigrate.core.scripts import Migration
from airflow_provider_shardmigrate.core.topology import Shard

#: Shards named one by one in the refusal (the rest are counted).
_LISTED = 20

#: conn_id, shard_id -> the connection's type
TypeLookup = Callable[[str, str], str]


def _default_lookup(conn_id: str, shard_id: str) -> str:
    from airflow_provider_shardmigrate.engines import connection_type

    return connection_type(conn_id, shard_id)


def _variant(conn_type: str) -> str | None:
    """The script variant of a connection type; None when no engine serves it (the shard's task says why)."""
    from airflow_provider_shardmigrate.engines import engine_class

    try:
        return engine_class(conn_type).variant
    except ShardMigrateError:
        return None


def missing_scripts(
    shards: Sequence[Shard],
    migration: Migration,
    *,
    lookup: TypeLookup = _default_lookup,
    max_workers: int = 8,
) -> dict[str, tuple[str, ...]]:
    """Shard id -> the script files its engine needs and the migration lacks, for the shards that lack some.

    A shard whose connection cannot be read is left to its own task, which fails with that error.
    """
    if migration.runs_on_every_engine or not shards:
        return {}

    def check(shard: Shard) -> tuple[str, tuple[str, ...]]:
        try:
            variant = _variant(lookup(shard.conn_id, shard.id))
        except ShardMigrateError:
            return shard.id, ()
        return shard.id, migration.missing_for(variant) if variant is not None else ()

    with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(shards)))) as pool:
        found = dict(pool.map(check, shards))
    return {shard_id: files for shard_id, files in found.items() if files}


def refusal(migration: Migration, missing: dict[str, tuple[str, ...]]) -> InvalidScriptError:
    """The preflight's refusal: every shard (up to a limit) and the files to add for it."""
    more = f"\n... and {len(missing) - _LISTED} more" if len(missing) > _LISTED else ""
    lines = "\n".join(
        f"shard '{shard_id}': add {', '.join(files)}" for shard_id, files in list(missing.items())[:_LISTED]
    )
    return InvalidScriptError(
        f"migration '{migration.id}' has no script for the engine of {len(missing)} targeted shard(s); "
        f"nothing was run\n{lines}{more}"
    )
