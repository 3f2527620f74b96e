"""``shardmigrate history``: what every shard's history table says, read through Airflow connections."""

from __future__ import annotations

import argparse
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from airflow_provider_shardmigrate.cli._common import add_paths, console


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("history", help="show the migration history of every shard")
    add_paths(parser, migrations=False)
    parser.add_argument("--shard", action="append", help="only this shard (repeatable)")
    parser.add_argument("--migration", help="only this migration id")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--workers", type=int, default=8, help="shards read at once (default 8)")
    parser.set_defaults(func=run)


def _read(shard: Any) -> tuple[str, list[dict[str, Any]] | None, str | None]:
    from airflow_provider_shardmigrate.core.errors import ShardMigrateError
    from airflow_provider_shardmigrate.core.status import redact
    from airflow_provider_shardmigrate.engines import engine_for

    try:
        with engine_for(shard) as engine:
            rows = [
                {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in vars(r).items()}
                for r in engine.list_history()
            ]
        for row in rows:
            row["status"] = str(row["status"])
        return shard.id, rows, None
    except ShardMigrateError as exc:
        return shard.id, None, str(exc)
    except Exception as exc:  # an unreachable shard is reported, the others still print
        return shard.id, None, redact(f"{type(exc).__name__}: {exc}")


def run(args: argparse.Namespace) -> int:
    from rich.markup import escape
    from rich.table import Table

    from airflow_provider_shardmigrate.cli._common import styled
    from airflow_provider_shardmigrate.core.errors import ShardMigrateError
    from airflow_provider_shardmigrate.core.topology import load_topology

    try:
        topology = load_topology(args.topology)
        shards = [topology.get(s) for s in args.shard] if args.shard else list(topology.shards)
    except ShardMigrateError as exc:
        console(stderr=True).print(f"[bold red]{escape(str(exc))}[/]")
        return 1
    with ThreadPoolExecutor(max_workers=max(1, args.workers)) as pool:
        results = list(pool.map(_read, shards))
    if args.migration:
        results = [
            (sid, [r for r in rows if r["migration_id"] == args.migration] if rows else rows, err)
            for sid, rows, err in results
        ]
    if args.json:
        print(json.dumps({sid: {"rows": rows, "error": err} for sid, rows, err in results}, indent=2, default=str))
        return 1 if any(err for _, _, err in results) else 0
    out = console()
    table = Table(title="shard history")
    for column in ("shard", "migration", "status", "statements", "applied_at", "rolled_back_at", "error"):
        table.add_column(column, overflow="fold")
    for shard_id, rows, error in results:
        if error:
            table.add_row(shard_id, "", "[bold red]unreachable[/]", "", "", "", escape(error))
            continue
        if not rows:
            table.add_row(shard_id, "[dim](none)[/]", "", "", "", "", "")
        for row in rows or []:
            table.add_row(
                shard_id,
                row["migration_id"],
                styled(row["status"]),
                f"{row['statements_applied']}/{row['statements_total']}",
                str(row["applied_at"] or ""),
                str(row["rolled_back_at"] or ""),
                escape(row["error"] or ""),
            )
    out.print(table)
    return 1 if any(err for _, _, err in results) else 0
