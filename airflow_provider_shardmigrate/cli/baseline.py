"""``shardmigrate baseline``: record a migration as ``baselined`` on shards cloned from a migrated
snapshot, without running it (so the next rollout reports them ``already_applied``)."""

from __future__ import annotations

import argparse
from typing import Any

from airflow_provider_shardmigrate.cli._common import add_paths, console, styled


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("baseline", help="record a migration as applied without running it")
    add_paths(parser)
    parser.add_argument("migration", help="migration id")
    parser.add_argument("--shard", action="append", required=True, help="shard to baseline (repeatable)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.markup import escape

    from airflow_provider_shardmigrate.core.errors import ShardMigrateError
    from airflow_provider_shardmigrate.core.scripts import load_migrations
    from airflow_provider_shardmigrate.core.status import Outcome
    from airflow_provider_shardmigrate.core.topology import load_topology
    from airflow_provider_shardmigrate.engines.runner import baseline_shard

    out = console()
    try:
        topology = load_topology(args.topology)
        migration = load_migrations(args.migrations).get(args.migration)
        shards = [topology.get(shard_id) for shard_id in args.shard]
    except ShardMigrateError as exc:
        console(stderr=True).print(f"[bold red]{escape(str(exc))}[/]")
        return 1
    failed = 0
    for shard in shards:
        status = baseline_shard(shard, migration)
        detail = f"[{status.error_code}] {status.error_message}" if status.error_code else (status.error_message or "")
        out.print(f"{shard.id}: {styled(status.outcome.value)} {escape(detail)}")
        failed += status.outcome is Outcome.FAILED
    return 1 if failed else 0
