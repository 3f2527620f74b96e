"""``shardmigrate validate``: check every migration folder and the topology; list every problem.

Every SQL script is split into statements with the splitter the engines use (core/sqltext.split_sql),
so a script that validates is one the engines can run; the counts are shown per script.
"""

from __future__ import annotations

import argparse
from typing import Any

from airflow_provider_shardmigrate.cli._common import add_paths, console


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "validate",
        help="validate migrations (scripts, checksums, migration.yaml) and the topology",
        description="Exit code 0 when everything is valid, 1 otherwise; every problem is listed.",
    )
    add_paths(parser)
    parser.set_defaults(func=run)


def _migrations_table(migrations: Any, topology: Any, record: Any) -> Any:
    """One row per migration; plans are checked against the topology (a canary that is not a shard...)."""
    from rich.markup import escape
    from rich.table import Table

    from airflow_provider_shardmigrate.core.errors import ShardMigrateError
    from airflow_provider_shardmigrate.core.plans import plan_rollout
    from airflow_provider_shardmigrate.core.scripts import MIGRATION_ID_PATTERN

    table = Table(title="migrations", show_lines=False)
    for column in ("migration", "strategy", "waves", "statements", "checksum", "status"):
        table.add_column(column, overflow="fold")
    for migration_id, error in migrations.broken.items():
        shown = migration_id if MIGRATION_ID_PATTERN.fullmatch(migration_id) else repr(migration_id)  # a newline...
        record(shown, error)
        table.add_row(escape(shown), "", "", "", "", "[bold red]invalid[/]")
    for migration in migrations.migrations:
        waves = ""
        status = "[green]valid[/]"
        if topology is not None:
            try:
                waves = str(len(plan_rollout(topology.shards, migration.options).waves))
            except ShardMigrateError as exc:
                record(migration.id, exc)
                status = "[bold red]invalid[/]"
        table.add_row(
            migration.id, migration.options.strategy.value, waves, _statements(migration), migration.checksum, status
        )
    return table


def _statements(migration: Any) -> str:
    """``up.sql: 3, down.sql: 1``: each script split as the engines split it (SQL Server variants in T-SQL
    steps, core/tsql.py; MongoDB scripts: commands)."""
    import json

    from airflow_provider_shardmigrate.core.sqltext import split_sql
    from airflow_provider_shardmigrate.core.tsql import split_tsql

    def count(name: str, text: str) -> int:
        if name.endswith(".json"):  # validated at load: a command document or a list of them
            commands = json.loads(text)
            return 1 if isinstance(commands, dict) else len(commands)
        return len(split_tsql(text) if name.endswith(".mssql.sql") else split_sql(text))

    return ", ".join(f"{name}: {count(name, text)}" for name, text in sorted(migration.scripts.items()))


def run(args: argparse.Namespace) -> int:
    from rich.markup import escape

    from airflow_provider_shardmigrate.core.errors import ShardMigrateError
    from airflow_provider_shardmigrate.core.scripts import load_migrations
    from airflow_provider_shardmigrate.core.topology import load_topology

    out = console()
    problems: list[tuple[str, str]] = []  # (where, message)

    def record(where: str, error: ShardMigrateError) -> None:
        if error.problems:
            problems.extend((where, f"[{error.code}] {problem}") for problem in error.problems)
        else:
            problems.append((where, str(error)))

    topology = None
    try:
        topology = load_topology(args.topology)
    except ShardMigrateError as exc:
        record("topology", exc)
    migrations = None
    try:
        migrations = load_migrations(args.migrations, allow_symlinks=bool(topology and topology.allow_symlinks))
    except ShardMigrateError as exc:
        record("migrations", exc)

    if migrations is not None:
        out.print(_migrations_table(migrations, topology, record))
    if topology is not None:
        active = len(topology.active_shards)
        out.print(f"topology {escape(str(args.topology))}: {len(topology.shards)} shard(s), {active} active")
    if problems:
        out.print(f"[bold red]{len(problems)} problem(s):[/]")
        for where, message in problems:
            out.print(f"  [bold]{escape(where)}[/]: {escape(message)}")
        return 1
    out.print("[green]everything is valid[/]")
    return 0
