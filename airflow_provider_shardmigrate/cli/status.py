"""``shardmigrate status``: the shard x migration matrix, read from every shard's history table.

Shards are read concurrently (a bounded pool) and read-only, each within ``--timeout`` seconds, so an
unreachable shard is reported -- ``?`` in its row, with its error -- instead of hanging the command. Exit code
0 when every active shard has every migration (applied or baselined), 1 when one lacks some, 2 when an active
shard cannot be read (or the migrations folder / topology cannot be loaded).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from airflow_provider_shardmigrate.cli._common import add_paths, console
from airflow_provider_shardmigrate.cli.history import _positive_seconds

_STYLE = {"A": "green", "B": "cyan", "F": "bold red", "R": "bold blue", "X": "magenta", "-": "dim", "?": "bold red"}


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "status",
        help="show which migration is on which shard (the shard x migration matrix)",
        description="Exit code 0 when every active shard has every migration, 1 when one lacks some, 2 when an "
        "active shard cannot be read.",
    )
    add_paths(parser)
    parser.add_argument("--json", action="store_true", help="print the matrix as JSON (the status DAG's XCom shape)")
    parser.add_argument("--workers", type=int, default=8, help="shards read at once (default 8)")
    parser.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=30.0,
        metavar="SECONDS",
        help="seconds each shard may take to connect and answer (default 30)",
    )
    parser.set_defaults(func=run)


def _row(row: str) -> str:
    from rich.markup import escape

    return "".join(f"[{_STYLE[letter]}]{escape(letter)}[/]" for letter in row)


def _print(status: Any) -> None:
    from rich.markup import escape
    from rich.table import Table

    from airflow_provider_shardmigrate.core.fleet_status import LEGEND

    out = console()
    for index, migration_id in enumerate(status.migrations, start=1):
        out.print(f"{index:>3}  {escape(migration_id)}")
    table = Table(title=f"{len(status.shards)} shard(s) x {len(status.migrations)} migration(s)")
    for column in ("shard", "active", "engine", "migrations 1..n", "error"):
        table.add_column(column, overflow="fold")
    for shard in status.shards:
        active = "yes" if shard.active else "[dim]no[/]"
        table.add_row(escape(shard.id), active, shard.engine or "", _row(shard.row), escape(shard.error or ""))
    out.print(table)
    out.print("  ".join(f"{_row(letter)} {name}" for letter, name in LEGEND.items()))
    verdict = "[bold green]complete[/]" if status.complete else "[bold yellow]incomplete[/]"
    out.print(f"every active shard has every migration: {verdict}")


def run(args: argparse.Namespace) -> int:
    from rich.markup import escape

    from airflow_provider_shardmigrate.core.errors import MigrationNotFoundError, ShardMigrateError
    from airflow_provider_shardmigrate.core.fleet_status import EXIT_UNREADABLE, fleet_status
    from airflow_provider_shardmigrate.core.scripts import folder_ids
    from airflow_provider_shardmigrate.core.topology import load_topology
    from airflow_provider_shardmigrate.engines.fleet import read_fleet_history

    try:
        topology = load_topology(args.topology)
        if not args.migrations.is_dir():
            raise MigrationNotFoundError(f"migrations folder '{args.migrations}' does not exist")
        ids = folder_ids(args.migrations)
    except ShardMigrateError as exc:
        console(stderr=True).print(f"[bold red]{escape(str(exc))}[/]")
        return EXIT_UNREADABLE
    reads = read_fleet_history(topology.shards, timeout=args.timeout, max_workers=max(1, args.workers))
    status = fleet_status(ids, topology.shards, reads)
    if args.json:
        print(json.dumps(status.to_xcom(), indent=1))
    else:
        _print(status)
    return status.exit_code
