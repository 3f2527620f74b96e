"""Per-shard apply overhead: ``apply_to_shard`` against the same DDL run with the raw driver, in one run.

What ours pays on top of the DDL: resolving the Airflow connection (``AIRFLOW_CONN_*``), the hook, session
set-up, the migration lock, the history table check, per-statement server-side timeouts, the history row and
the unlock. The baseline opens a raw driver connection (psycopg / MySQLdb) with the same parameters, runs the
same statements (one transaction on PostgreSQL, autocommit on MariaDB) and closes it.

Each repetition runs on fresh databases (created and dropped outside the timed section); the two paths
alternate so drift on the machine hits both alike. Two shard states are measured:

* ``fresh``   -- an empty database: ours also creates the history table (a shard's first migration);
* ``steady``  -- the history table already holds one earlier migration (every later migration).

Needs the local servers (``make services``). Prints median and p95 in milliseconds and the ratios; drops every
database it created and removes its temporary Airflow home.

Run: .venv/bin/python bench/bench_apply_overhead.py [--reps 20] [--only postgres|mysql]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
MY = {"host": "127.0.0.1", "port": 3306, "user": "root"}
PREFIX = f"smbench_{os.getpid()}_"

DDL = {
    "postgres": [
        "CREATE TABLE bench_orders (id bigserial PRIMARY KEY, customer_id int NOT NULL, note text)",
        "CREATE INDEX idx_bench_orders_customer ON bench_orders (customer_id)",
    ],
    "mysql": [
        "CREATE TABLE bench_orders (id BIGINT AUTO_INCREMENT PRIMARY KEY, customer_id INT NOT NULL, note TEXT)",
        "CREATE INDEX idx_bench_orders_customer ON bench_orders (customer_id)",
    ],
}
EARLIER = {
    "postgres": "CREATE TABLE bench_earlier (id int)",
    "mysql": "CREATE TABLE bench_earlier (id INT)",
}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


# -- servers ---------------------------------------------------------------------------------------------
class Postgres:
    kind = "postgres"

    def __init__(self) -> None:
        import psycopg

        self.psycopg = psycopg

    def admin(self) -> Any:
        return self.psycopg.connect(**PG, dbname="postgres", autocommit=True, connect_timeout=5)

    def create(self, name: str) -> None:
        with self.admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')

    def drop(self, name: str) -> None:
        with self.admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def conn_env(self, name: str) -> str:
        return json.dumps(
            {"conn_type": "postgres", "host": PG["host"], "port": PG["port"], "login": PG["user"], "schema": name}
        )

    def raw(self, name: str) -> None:
        conn = self.psycopg.connect(**PG, dbname=name)
        try:
            with conn.transaction():
                for statement in DDL["postgres"]:
                    conn.execute(statement)
        finally:
            conn.close()


class MariaDb:
    kind = "mysql"

    def __init__(self) -> None:
        import MySQLdb

        self.mysqldb = MySQLdb

    def connect(self, name: str = "") -> Any:
        conn = self.mysqldb.connect(host=MY["host"], port=MY["port"], user=MY["user"], passwd="", db=name)
        conn.autocommit(True)
        return conn

    def create(self, name: str) -> None:
        conn = self.connect()
        try:
            conn.cursor().execute(f"CREATE DATABASE `{name}`")
        finally:
            conn.close()

    def drop(self, name: str) -> None:
        conn = self.connect()
        try:
            conn.cursor().execute(f"DROP DATABASE IF EXISTS `{name}`")
        finally:
            conn.close()

    def conn_env(self, name: str) -> str:
        return json.dumps(
            {"conn_type": "mysql", "host": MY["host"], "port": MY["port"], "login": MY["user"], "schema": name}
        )

    def raw(self, name: str) -> None:
        conn = self.connect(name)
        try:
            cursor = conn.cursor()
            for statement in DDL["mysql"]:
                cursor.execute(statement)
            cursor.close()
        finally:
            conn.close()


# -- the measurement -------------------------------------------------------------------------------------
def write_migration(root: Path, migration_id: str, statements: list[str]) -> Path:
    folder = root / migration_id
    folder.mkdir(parents=True)
    (folder / "up.sql").write_text(";\n".join(statements) + ";\n")
    (folder / "down.sql").write_text("DROP TABLE bench_orders;\n")
    return folder


def measure(server: Any, reps: int, root: Path, state: str, created: list[str]) -> tuple[list[float], list[float]]:
    from airflow_provider_shardmigrate.core.scripts import load_migration
    from airflow_provider_shardmigrate.core.topology import Shard
    from airflow_provider_shardmigrate.engines.runner import apply_to_shard

    migration = load_migration(write_migration(root / f"{server.kind}-{state}", "002_bench", DDL[server.kind]))
    earlier = load_migration(write_migration(root / f"{server.kind}-{state}-0", "001_earlier", [EARLIER[server.kind]]))
    counter = iter(range(10**6))

    def fresh_database(with_history: bool) -> tuple[str, Shard]:
        name = f"{PREFIX}{server.kind[:2]}_{next(counter)}"
        server.create(name)
        created.append(name)
        conn_id = f"bench_{name}"
        os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = server.conn_env(name)
        shard = Shard(name, conn_id)
        if with_history:
            status = apply_to_shard(shard, earlier)
            assert status.outcome == "succeeded", status
        return name, shard

    def timed(action: Callable[[], object]) -> float:
        started = time.perf_counter()
        action()
        return (time.perf_counter() - started) * 1000

    ours: list[float] = []
    raw: list[float] = []
    for rep in range(reps + 1):  # repetition 0 warms imports and connection caches, and is not counted
        name_a, shard = fresh_database(state == "steady")
        name_b, _ = fresh_database(state == "steady")

        def run_ours(shard: Shard = shard) -> None:
            status = apply_to_shard(shard, migration)
            assert status.outcome == "succeeded", status

        pair = [("ours", lambda: run_ours()), ("raw", lambda name=name_b: server.raw(name))]
        if rep % 2:
            pair.reverse()
        for label, action in pair:
            elapsed = timed(action)
            if rep:
                (ours if label == "ours" else raw).append(elapsed)
        for name in (name_a, name_b):
            server.drop(name)
            created.remove(name)
    return ours, raw


def report(kind: str, state: str, ours: list[float], raw: list[float]) -> None:
    med_o, med_r = statistics.median(ours), statistics.median(raw)
    p95_o, p95_r = percentile(ours, 0.95), percentile(raw, 0.95)
    print(
        f"{kind:9} {state:7} ours median {med_o:7.2f} ms  p95 {p95_o:7.2f} ms | raw median {med_r:6.2f} ms  "
        f"p95 {p95_r:6.2f} ms | ratio (median) {med_o / med_r:5.2f}x  overhead {med_o - med_r:+7.2f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--only", choices=("postgres", "mysql"))
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="shardmigrate-bench-"))
    os.environ.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "ERROR",
        }
    )
    servers: list[Any] = []
    if args.only in (None, "postgres"):
        servers.append(Postgres())
    if args.only in (None, "mysql"):
        servers.append(MariaDb())
    created: list[str] = []
    print(f"per-shard apply overhead, {args.reps} repetitions each on fresh databases (median / p95)")
    try:
        for server in servers:
            for state in ("fresh", "steady"):
                ours, raw = measure(server, args.reps, home / "migrations", state, created)
                report(server.kind, state, ours, raw)
    finally:
        for name in created:
            for server in servers:
                if server.kind[:2] == name[len(PREFIX) : len(PREFIX) + 2]:
                    server.drop(name)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
