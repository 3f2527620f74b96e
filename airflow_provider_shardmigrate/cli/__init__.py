"""The ``shardmigrate`` command: the same engine as the DAGs, outside Airflow's scheduler.

Each sub-command lives in its own module with ``register(subparsers)``; it sets ``func`` on its parser,
which receives the parsed arguments and returns the exit code.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib import import_module

#: Sub-command modules, in the order ``--help`` lists them.
COMMANDS = ("demo", "local_airflow", "validate", "plan", "status", "drift", "history", "baseline")


def build_parser() -> argparse.ArgumentParser:
    from airflow_provider_shardmigrate import __version__

    parser = argparse.ArgumentParser(
        prog="shardmigrate",
        description="Roll schema migrations out across a fleet of database shards (Apache Airflow provider).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        import_module(f"airflow_provider_shardmigrate.cli.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
