"""``shardmigrate plan``: print the waves a strategy would run, exactly as the DAG will run them."""

from __future__ import annotations

import argparse
import json
from typing import Any

from airflow_provider_shardmigrate.cli._common import add_paths, console


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("plan", help="print the waves a rollout would run")
    add_paths(parser)
    parser.add_argument("migration", nargs="?", help="migration id (default: every migration)")
    parser.add_argument("--strategy", help="override migration.yaml's strategy (preview only)")
    parser.add_argument("--max-parallelism", type=int, help="override migration.yaml's max_parallelism")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    parser.set_defaults(func=run)


def _plan_dict(migration_id: str, plan: Any) -> dict[str, Any]:
    return {
        "migration_id": migration_id,
        "strategy": plan.strategy.value,
        "max_parallelism": plan.max_parallelism,
        "waves": [
            {"index": w.index, "kind": w.kind.value, "concurrency": w.concurrency, "shards": [s.id for s in w.shards]}
            for w in plan.waves
        ],
    }


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from rich.markup import escape

    from airflow_provider_shardmigrate.core.errors import InvalidScriptError, ShardMigrateError
    from airflow_provider_shardmigrate.core.options import parse_options
    from airflow_provider_shardmigrate.core.plans import plan_rollout
    from airflow_provider_shardmigrate.core.scripts import load_migrations
    from airflow_provider_shardmigrate.core.topology import load_topology

    out = console()
    try:
        topology = load_topology(args.topology)
        found = load_migrations(args.migrations)
        selected = [found.get(args.migration)] if args.migration else list(found.migrations)
        plans = []
        for migration in selected:
            options = migration.options
            overrides = {
                k: v
                for k, v in (("strategy", args.strategy), ("max_parallelism", args.max_parallelism))
                if v is not None
            }
            if overrides:
                parsed, problems = parse_options(overrides, "command line")
                if problems:
                    raise InvalidScriptError("; ".join(str(p) for p in problems))
                options = replace(options, **{k: getattr(parsed, k) for k in overrides})
            plans.append((migration.id, plan_rollout(topology.shards, options)))
    except ShardMigrateError as exc:
        console(stderr=True).print(f"[bold red]{escape(str(exc))}[/]")
        return 1
    if args.json:
        print(json.dumps([_plan_dict(mid, plan) for mid, plan in plans], indent=2))
        return 0
    for migration_id, plan in plans:
        out.print(
            f"[bold]{escape(migration_id)}[/]: {plan.strategy.value}, max_parallelism {plan.max_parallelism}, "
            f"{len(plan.targets)} shard(s) in {len(plan.waves)} wave(s)"
        )
        for wave in plan.waves:
            shards = ", ".join(s.id for s in wave.shards)
            out.print(f"  {wave.index + 1:>4}. {wave.label:<12} x{wave.concurrency:<3} {escape(shards)}")
    return 0
