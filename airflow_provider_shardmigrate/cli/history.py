"""``shardmigrate history``: what every shard's history table says, read through Airflow connections.

Each shard is read read-only within ``--timeout`` seconds (connecting included), so a shard that does not
answer is reported as unreachable -- with its error code -- instead of hanging the command.
"""

from __future__ import annotations

import argparse
import json
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from airflow_provider_shardmigrate.cli._common import add_paths, console

#: Default seconds one shard may take to answer (connect + read).
DEFAULT_TIMEOUT = 30.0

#: ``(shard id, history rows or None, error or None)``
Result = tuple[str, list[dict[str, Any]] | None, str | None]


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, not {text}")
    return value


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("history", help="show the migration history of every shard")
    add_paths(parser, migrations=False)
    parser.add_argument("--shard", action="append", help="only this shard (repeatable)")
    parser.add_argument("--migration", help="only this migration id")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--workers", type=int, default=8, help="shards read at once (default 8)")
    parser.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"seconds each shard may take to connect and answer (default {DEFAULT_TIMEOUT:g})",
    )
    parser.set_defaults(func=run)


def _row(record: Any) -> dict[str, Any]:
    row = {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in vars(record).items()}
    row["status"] = str(row["status"])
    return row


def _read(shard: Any, timeout: float) -> Result:
    from airflow_provider_shardmigrate.core.deadline import Deadline
    from airflow_provider_shardmigrate.core.errors import ShardMigrateError
    from airflow_provider_shardmigrate.core.status import redact
    from airflow_provider_shardmigrate.engines import engine_for

    try:
        with engine_for(shard).connected(Deadline(timeout), read_only=True) as engine:
            return shard.id, [_row(record) for record in engine.list_history()], None
    except ShardMigrateError as exc:
        return shard.id, None, str(exc)
    except Exception as exc:  # an unreachable shard is reported, the others still print
        return shard.id, None, redact(f"{type(exc).__name__}: {exc}")


def _only_migration(results: list[Result], migration: str | None) -> list[Result]:
    if not migration:
        return results
    return [
        (sid, [r for r in rows if r["migration_id"] == migration] if rows else rows, err) for sid, rows, err in results
    ]


def _print_table(results: list[Result]) -> None:
    from rich.markup import escape
    from rich.table import Table

    from airflow_provider_shardmigrate.cli._common import styled

    table = Table(title="shard history")
    for column in ("shard", "migration", "status", "statements", "applied_at", "rolled_back_at", "error"):
        table.add_column(column, overflow="fold")
    for shard_id, rows, error in results:
        if error:
            table.add_row(shard_id, "", "[bold red]unreachable[/]", "", "", "", escape(error))
        elif not rows:
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
    console().print(table)


def run(args: argparse.Namespace) -> int:
    from rich.markup import escape

    from airflow_provider_shardmigrate.core.errors import ShardMigrateError
    from airflow_provider_shardmigrate.core.topology import load_topology

    try:
        topology = load_topology(args.topology)
        shards = [topology.get(s) for s in args.shard] if args.shard else list(topology.shards)
    except ShardMigrateError as exc:
        console(stderr=True).print(f"[bold red]{escape(str(exc))}[/]")
        return 1
    with ThreadPoolExecutor(max_workers=max(1, args.workers)) as pool:
        results = _only_migration(list(pool.map(partial(_read, timeout=args.timeout), shards)), args.migration)
    if args.json:
        print(json.dumps({sid: {"rows": rows, "error": err} for sid, rows, err in results}, indent=2, default=str))
    else:
        _print_table(results)
    return 1 if any(err for _, _, err in results) else 0
