"""``shardmigrate drift``: compare every active shard with the baseline, once, from a terminal or CI.

Exit code 0 healthy, 1 degraded (drift outside critical tables), 2 unhealthy (a critical table drifted,
or a shard could not be read) -- so a deploy pipeline can gate on it. Connections come from Airflow
(``AIRFLOW_CONN_*``, the metadata DB, secrets backends), exactly as the drift DAG resolves them.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from airflow_provider_shardmigrate.cli._common import add_paths, console

#: Exit code when the command cannot run at all (bad topology, unknown baseline).
USAGE_ERROR = 2


def register(subparsers: Any) -> None:
    from airflow_provider_shardmigrate.core.topology import DriftDepth

    parser = subparsers.add_parser(
        "drift",
        help="compare every active shard's schema with the baseline shard",
        description="Exit code 0 healthy, 1 degraded (drift outside critical tables), 2 unhealthy "
        "(drift in a critical table, or a shard could not be read).",
    )
    add_paths(parser, migrations=False)
    parser.add_argument(
        "--depth",
        choices=[depth.value for depth in DriftDepth],
        help="what to compare (default: the topology's drift.depth)",
    )
    parser.add_argument("--baseline", help="baseline shard id (default: drift.baseline, else the first active shard)")
    parser.add_argument(
        "--critical",
        action="append",
        metavar="TABLE",
        help="critical table; repeat or separate with commas (default: drift.critical_tables)",
    )
    parser.add_argument("--json", action="store_true", help="print the JSON report and health instead of tables")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per shard (default: 60)")
    parser.add_argument("--max-workers", type=int, default=None, help="shards introspected at once (default: 8)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from airflow_provider_shardmigrate.core.errors import ShardMigrateError
    from airflow_provider_shardmigrate.core.health import assess_health
    from airflow_provider_shardmigrate.core.topology import load_topology
    from airflow_provider_shardmigrate.engines.introspect import DEFAULT_MAX_WORKERS, DEFAULT_TIMEOUT, detect_drift

    try:
        topology = load_topology(args.topology)
        report = detect_drift(
            topology,
            depth=args.depth,
            baseline=args.baseline,
            timeout=args.timeout or DEFAULT_TIMEOUT,
            max_workers=args.max_workers or DEFAULT_MAX_WORKERS,
        )
    except ShardMigrateError as exc:
        if args.json:
            print(json.dumps({"error": {"code": exc.code.value, "message": exc.message}}))
        else:
            console(stderr=True).print(f"[bold red]{_escape(str(exc))}[/]")
        return USAGE_ERROR
    critical: tuple[str, ...] = topology.drift.critical_tables
    if args.critical:
        critical = tuple(t.strip() for item in args.critical for t in item.split(",") if t.strip())
    health = assess_health(report, critical)
    if args.json:
        print(json.dumps({"report": report.to_dict(), "health": health.to_dict()}, indent=2))
    else:
        _print_tables(report, health, [s.id for s in topology.active_shards])
    return health.status.exit_code


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _print_tables(report: Any, health: Any, active: list[str]) -> None:
    out = console()
    out.print(_summary_table(report, active))
    for shard in report.drifted_shards:
        out.print(_detail_table(report, shard))
    style = {"healthy": "bold green", "degraded": "bold yellow", "unhealthy": "bold red"}[health.status.value]
    out.print(f"[{style}]{_escape(health.description)}[/]")


def _summary_table(report: Any, active: list[str]) -> Any:
    """One row per shard: the baseline first, then every active shard in topology order."""
    from rich.table import Table

    summary = Table(
        title=f"drift against baseline {report.baseline} (depth {report.depth.value}, {report.duration_ms} ms)"
    )
    for column in ("shard", "status", "tables differing"):
        summary.add_column(column)
    summary.add_row(_escape(report.baseline), "[cyan]baseline[/]", "")
    for shard in active:
        row = _summary_row(report, shard) if shard != report.baseline else None
        if row is not None:
            summary.add_row(*row)
    if report.baseline in report.errors:
        summary.add_row(
            _escape(report.baseline), "[bold red]failed[/]", _escape(report.errors[report.baseline].message)
        )
    return summary


def _summary_row(report: Any, shard: str) -> tuple[str, str, str] | None:
    """The shard's row: failed (with the error), drifted (with the count), in sync; None when not compared."""
    if shard in report.errors:
        return _escape(shard), "[bold red]failed[/]", _escape(report.errors[shard].message)
    if report.diffs.get(shard):
        return _escape(shard), "[yellow]drifted[/]", str(len(report.diffs[shard]))
    if shard in report.shards_compared:
        return _escape(shard), "[green]in sync[/]", "0"
    return None


def _detail_table(report: Any, shard: str) -> Any:
    """Every table of ``shard`` that differs from the baseline, with what differs."""
    from rich.table import Table

    detail = Table(title=f"{shard}: differences from {report.baseline}", show_lines=True)
    for column in ("table", "kind", "details"):
        detail.add_column(column)
    for diff in report.diffs[shard]:
        detail.add_row(_escape(diff.table), diff.kind.value, _escape("\n".join(diff.details())))
    return detail
