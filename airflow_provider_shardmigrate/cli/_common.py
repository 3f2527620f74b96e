"""Shared CLI helpers: paths, the rich console, outcome colours."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

OUTCOME_STYLE = {
    "succeeded": "green",
    "already_applied": "cyan",
    "would_apply": "cyan",
    "failed": "bold red",
    "pending": "yellow",
    "rolled_back": "magenta",
    "running": "bold blue",
    "waiting": "dim",
}


def console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def add_paths(parser: argparse.ArgumentParser, *, migrations: bool = True, topology: bool = True) -> None:
    if migrations:
        parser.add_argument(
            "--migrations", type=Path, default=Path("migrations"), help="migrations folder (default: ./migrations)"
        )
    if topology:
        parser.add_argument(
            "--topology", type=Path, default=Path("shards.yaml"), help="topology file (default: ./shards.yaml)"
        )


def styled(outcome: str) -> str:
    style = OUTCOME_STYLE.get(outcome, "")
    return f"[{style}]{outcome}[/{style}]" if style else outcome
