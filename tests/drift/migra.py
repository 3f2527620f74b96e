"""Running migra (an independent PostgreSQL schema diff) and reading its output as a set of objects, so the
cross-check test and the benchmark can compare it with our drift report.

migra lives in a virtualenv of its own (scripts/ensure-migra-venv.sh creates it on first use): it pins an
old SQLAlchemy line that must not leak into the environment Airflow runs in.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

from airflow_provider_shardmigrate.core.drift import DiffKind, TableDiff

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "ensure-migra-venv.sh"

#: (kind, table or None, name or None): ("table", t, None), ("column", t, c), ("index", None, i),
#: ("constraint", t, n) -- indexes are named per schema in PostgreSQL and migra drops them by name only.
Obj = tuple[str, str | None, str | None]

_TABLE = r'"(?P<schema>[^"]+)"\."(?P<table>[^"]+)"'
_PATTERNS = (
    (re.compile(rf"^create table {_TABLE}"), "table"),
    (re.compile(rf"^drop table {_TABLE}"), "table"),
    (re.compile(rf'^alter table {_TABLE} (?:add|drop) column "(?P<name>[^"]+)"'), "column"),
    (re.compile(rf'^alter table {_TABLE} alter column "(?P<name>[^"]+)"'), "column"),
    (re.compile(rf'^alter table {_TABLE} (?:add|drop) constraint "(?P<name>[^"]+)"'), "constraint"),
    (re.compile(r'^drop index if exists "(?P<schema>[^"]+)"\."(?P<name>[^"]+)"'), "index"),
    (re.compile(r"^CREATE (?:UNIQUE )?INDEX (?P<name>\S+) ON (?P<schema>\w+)\.(?P<table>\S+)"), "index"),
)


def migra_executable() -> str:
    """Path of migra in its own virtualenv, creating the virtualenv when it is missing."""
    done = subprocess.run([str(SCRIPT)], capture_output=True, text=True, timeout=900, check=False, cwd=REPO)
    if done.returncode != 0:
        raise RuntimeError(f"{SCRIPT.name} failed ({done.returncode}): {done.stderr[-2000:]}")
    return str(REPO / done.stdout.strip().splitlines()[-1])


def pg_url(database: str, host: str = "127.0.0.1", port: int = 5432, user: str = "postgres") -> str:
    return f"postgresql://{user}@{host}:{port}/{database}"


def run_migra(executable: str, source: str, target: str) -> str:
    """SQL that turns database ``source`` into ``target`` (exit 0: none needed, 2: some)."""
    done = subprocess.run(
        [executable, "--unsafe", source, target], capture_output=True, text=True, timeout=300, check=False
    )
    if done.returncode not in (0, 2):
        raise RuntimeError(f"migra failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.stdout


def _table_name(schema: str, table: str) -> str:
    return table if schema == "public" else f"{schema}.{table}"


def migra_objects(sql: str, index_tables: dict[str, str]) -> set[Obj]:
    """Objects migra changes, folded like our report: objects of a created/dropped table count as the table;
    an index that only backs a constraint counts as the constraint.

    ``index_tables`` maps every index name of both databases to its table (migra drops indexes by name).
    """
    found: set[Obj] = set()
    for statement in (s.strip() for s in sql.split(";")):
        for pattern, kind in _PATTERNS:
            match = pattern.match(statement)
            if match is None:
                continue
            parts = match.groupdict()
            table = _table_name(parts["schema"], parts["table"]) if parts.get("table") else None
            if kind == "table":
                found.add(("table", table, None))
            elif kind == "index":
                found.add(("index", None, parts["name"]))
            else:
                found.add((kind, table, parts["name"]))
            break
    whole_tables = {table for kind, table, _ in found if kind == "table"}
    constraints = {name for kind, _, name in found if kind == "constraint"}
    folded: set[Obj] = set()
    for kind, table, name in found:
        owner = index_tables.get(name or "") if kind == "index" else table
        if kind != "table" and owner in whole_tables:
            continue
        if kind == "index" and name in constraints:
            continue
        folded.add((kind, table, name))
    return folded


def our_objects(diffs: tuple[TableDiff, ...]) -> set[Obj]:
    """The same object set from our report's differences for one shard."""
    found: set[Obj] = set()
    for diff in diffs:
        if diff.kind is not DiffKind.MODIFIED:
            found.add(("table", diff.table, None))
            continue
        found.update(("column", diff.table, c.name) for c in diff.columns)
        found.update(("index", None, i.name) for i in diff.indexes)
        found.update(("constraint", diff.table, c.name.split(" [", 1)[0]) for c in diff.constraints)
    return found


def index_tables(query: Any, databases: list[str]) -> dict[str, str]:
    """Index name -> table, over ``databases`` (``query(db, sql)`` returns rows)."""
    mapping: dict[str, str] = {}
    for database in databases:
        for schema, table, index in query(database, "SELECT schemaname, tablename, indexname FROM pg_indexes"):
            mapping[index] = _table_name(schema, table)
    return mapping
