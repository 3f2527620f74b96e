"""Drift detection at ``full`` depth over 1 baseline + 20 PostgreSQL shards of 50 tables each (indexes,
foreign keys, checks), against running migra once per (baseline, shard) pair, measured in one run.

Prints both times, the ratio, our time per shard, and whether both found drift on the same shards.
Ours is measured warm (median of --repeat runs, after one run that pays Python's imports), migra as a
user runs it: one process per pair, one after the other. Every database it creates is dropped at the end.

Run: .venv/bin/python bench/bench_drift.py [--shards 20] [--tables 50] [--repeat 3] [--workers 8]
Needs the local PostgreSQL (127.0.0.1:5432, user postgres, trust auth) and creates migra's own
virtualenv with scripts/ensure-migra-venv.sh when it is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
PREFIX = f"smbench_{os.getpid()}_"


def _environment() -> None:
    """A throwaway Airflow home, set before anything imports Airflow (connections come from env vars)."""
    home = Path(tempfile.mkdtemp(prefix="shardmigrate-bench-airflow-"))
    os.environ.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        }
    )
    sys.path.insert(0, str(REPO))


def schema_sql(tables: int) -> str:
    """``tables`` tables, each with a primary key, typed columns, defaults, a foreign key to an earlier
    table, a check, a unique constraint and two secondary indexes."""
    parts = []
    for i in range(tables):
        fk = f", parent_id integer REFERENCES t{i - 1:02d} (id) ON DELETE CASCADE" if i else ""
        parts.append(
            f"CREATE TABLE t{i:02d} (id integer PRIMARY KEY, code varchar(20) NOT NULL, "
            f"amount numeric(12,2) DEFAULT 0 CHECK (amount >= 0), status text DEFAULT 'new', "
            f"created_at timestamptz DEFAULT now(), flags smallint{fk}, CONSTRAINT uq_t{i:02d}_code UNIQUE (code));"
        )
        parts.append(f"CREATE INDEX ix_t{i:02d}_status ON t{i:02d} (status, created_at);")
        parts.append(f"CREATE INDEX ix_t{i:02d}_amount ON t{i:02d} (amount DESC) WHERE amount > 0;")
    return "\n".join(parts)


#: Drift applied to every fourth shard (so the report is not empty and both tools have work to show).
DRIFT = [
    "ALTER TABLE t07 ALTER COLUMN code TYPE varchar(40);",
    "DROP INDEX ix_t12_status;",
    "ALTER TABLE t20 ADD COLUMN note text;",
    "CREATE TABLE extra_table (id integer PRIMARY KEY);",
]


def _admin(dbname: str = "postgres") -> object:
    import psycopg

    return psycopg.connect(dbname=dbname, autocommit=True, connect_timeout=5, **PG)


def create_fleet(shards: int, tables: int) -> list[str]:
    names = [f"{PREFIX}{n:02d}" for n in range(shards + 1)]
    with _admin() as admin:
        admin.execute(f'CREATE DATABASE "{names[0]}"')
        with _admin(names[0]) as base:
            base.execute(schema_sql(tables))
        for name in names[1:]:  # clones of the baseline: same catalog, cheap to create
            admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{names[0]}"')
    for index, name in enumerate(names[1:], start=1):
        if index % 4 == 0:
            with _admin(name) as shard:
                for statement in DRIFT:
                    shard.execute(statement)
    return names


def drop_fleet() -> None:
    with _admin() as admin:
        rows = admin.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (PREFIX + "%",)).fetchall()
        for (name,) in rows:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def topology_for(names: list[str], folder: Path) -> Path:
    lines = ["shards:"]
    for name in names:
        conn_id = name
        lines.append(f"  - {{id: {name.replace('_', '-')}, conn_id: {conn_id}}}")
        os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(
            {"conn_type": "postgres", "host": PG["host"], "port": PG["port"], "login": PG["user"], "schema": name}
        )
    path = folder / "shards.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def run_ours(topology_path: Path, workers: int) -> tuple[float, set[str], int]:
    from airflow_provider_shardmigrate.core.topology import load_topology
    from airflow_provider_shardmigrate.engines.introspect import detect_drift

    began = time.perf_counter()
    report = detect_drift(load_topology(topology_path), depth="full", max_workers=workers)
    elapsed = time.perf_counter() - began
    if report.errors:
        raise SystemExit(f"detection failed: {report.errors}")
    changes = sum(len(t.details()) or 1 for tables in report.diffs.values() for t in tables)
    return elapsed, {s.replace("-", "_") for s in report.drifted_shards}, changes


def run_migra(names: list[str]) -> tuple[float, set[str]]:
    done = subprocess.run(
        [str(REPO / "scripts" / "ensure-migra-venv.sh")], capture_output=True, text=True, check=True, cwd=REPO
    )
    migra = str(REPO / done.stdout.strip().splitlines()[-1])
    url = "postgresql://{user}@{host}:{port}/{db}"
    drifted: set[str] = set()
    began = time.perf_counter()
    for name in names[1:]:
        result = subprocess.run(
            [migra, "--unsafe", url.format(db=names[0], **PG), url.format(db=name, **PG)],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode not in (0, 2):
            raise SystemExit(f"migra failed on {name}: {result.stderr[-1000:]}")
        if result.returncode == 2:
            drifted.add(name)
    return time.perf_counter() - began, drifted


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=20, help="shards besides the baseline")
    parser.add_argument("--tables", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3, help="warm runs of ours (median reported)")
    parser.add_argument("--workers", type=int, default=8, help="shards introspected at once")
    args = parser.parse_args()
    _environment()
    folder = Path(tempfile.mkdtemp(prefix="shardmigrate-bench-drift-"))
    try:
        began = time.perf_counter()
        names = create_fleet(args.shards, args.tables)
        print(
            f"fleet: 1 baseline + {args.shards} PostgreSQL shards x {args.tables} tables "
            f"(created in {time.perf_counter() - began:.1f}s)"
        )
        topology = topology_for(names, folder)
        cold, drifted_ours, changes = run_ours(topology, args.workers)
        warm = [run_ours(topology, args.workers)[0] for _ in range(args.repeat)]
        ours = statistics.median(warm)
        theirs, drifted_migra = run_migra(names)
        shards = len(names)
        print(
            f"ours  (full depth, {args.workers} workers): {ours:.3f}s warm median of {args.repeat} "
            f"(first run incl. imports {cold:.3f}s); {ours / shards * 1000:.1f} ms per shard over {shards} shards; "
            f"{len(drifted_ours)} drifted shards, {changes} differences"
        )
        print(
            f"migra (one process per pair, {args.shards} pairs): {theirs:.3f}s; "
            f"{theirs / args.shards * 1000:.0f} ms per pair; {len(drifted_migra)} drifted shards"
        )
        print(f"ratio migra / ours: {theirs / ours:.1f}x (vs our first run: {theirs / cold:.1f}x)")
        agree = drifted_ours == drifted_migra
        print(f"same drifted shards: {'yes' if agree else 'NO'}")
        return 0 if agree else 1
    finally:
        drop_fleet()


if __name__ == "__main__":
    sys.exit(main())
