"""The demo's working folder: a fleet of SQLite shards with data, two migrations, a topology and the
one-line DAG file -- the same layout a user's dags folder has."""

from __future__ import annotations

import json
import random
import sqlite3
from dataclasses import dataclass
from pathlib import Path

MARKER = ".shardmigrate-demo"
GOOD_MIGRATION = "20260301_add_order_status"
FAILING_MIGRATION = "20260302_unique_customer_email"
LEGACY_SHARD = "shard-4"  # imported from a legacy system: two customers share an email address
#: The fix of the legacy shard's data (the README's walk-through runs it): the duplicate gets its own address.
LEGACY_FIX_SQL = "UPDATE customers SET email = 'c4-200@example.com' WHERE id = 200"

DRIFT_DAG_FILE = '''"""The scheduled drift check (shardmigrate_drift): every shard's schema against the baseline,
on the schedule of shards.yaml's drift: section."""

from airflow_provider_shardmigrate import build_drift_dag

dag = build_drift_dag(topology="shards.yaml")
'''

DAG_FILE = '''"""Every folder under migrations/ becomes a rollout DAG and a rollback DAG."""

from airflow_provider_shardmigrate import load_migration_dags

globals().update(load_migration_dags("migrations", topology="shards.yaml"))
'''

MIGRATIONS = {
    GOOD_MIGRATION: {
        "up.sql": (
            "-- every order gets a status; the index serves the 'open orders' screen\n"
            "ALTER TABLE orders ADD COLUMN status TEXT NOT NULL DEFAULT 'new';\n"
            "CREATE INDEX idx_orders_status ON orders (status);\n"
        ),
        "down.sql": "DROP INDEX idx_orders_status;\nALTER TABLE orders DROP COLUMN status;\n",
        "migration.yaml": (
            "description: Add orders.status with an index\n"
            "strategy: canary_first\n"
            "canary: shard-0\n"
            "max_parallelism: 3\n"
            "per_shard_timeout: 60\n"
            "canary_validation: SELECT COUNT(*) = (SELECT COUNT(*) FROM orders) FROM orders WHERE status = 'new'\n"
        ),
    },
    FAILING_MIGRATION: {
        "up.sql": "CREATE UNIQUE INDEX idx_customers_email ON customers (email);\n",
        "down.sql": "DROP INDEX idx_customers_email;\n",
        "migration.yaml": (
            "description: One account per email (fails on the legacy shard, which has duplicates)\n"
            "strategy: parallel\n"
            "max_parallelism: 3\n"
            "stop_on_first_failure: false\n"
            "auto_rollback: true\n"
        ),
    },
}


@dataclass(frozen=True)
class DemoFleet:
    root: Path
    dags: Path
    shards: dict[str, Path]

    def connections(self) -> dict[str, str]:
        """``AIRFLOW_CONN_*`` environment entries (JSON form) for every shard."""
        return {
            f"AIRFLOW_CONN_{shard_id.replace('-', '_').upper()}": json.dumps({"conn_type": "sqlite", "host": str(path)})
            for shard_id, path in self.shards.items()
        }


def _fill_shard(path: Path, index: int, legacy: bool) -> None:
    rng = random.Random(index)
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL)")
        conn.execute(
            "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL REFERENCES customers(id), "
            "amount_cents INTEGER NOT NULL, created_at TEXT NOT NULL)"
        )
        customers = [(i, f"customer {index}-{i}", f"c{index}-{i}@example.com") for i in range(1, 201)]
        if legacy:  # the same person imported twice
            customers[-1] = (200, "customer imported twice", customers[0][2])
        conn.executemany("INSERT INTO customers (id, name, email) VALUES (?, ?, ?)", customers)
        conn.executemany(
            "INSERT INTO orders (customer_id, amount_cents, created_at) VALUES (?, ?, ?)",
            [
                (rng.randint(1, 200), rng.randint(100, 50_000), f"2026-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}")
                for _ in range(2000)
            ],
        )
    conn.close()


def create_demo_fleet(
    root: Path, shard_count: int = 6, *, drift_dag: bool = False, made_by: str = "shardmigrate demo"
) -> DemoFleet:
    """The fleet in ``root``: ``shards/`` (SQLite files with data; ``shard-4`` holds duplicate emails), ``dags/``
    (the topology, the two migrations -- the second needs the first --, the one-line DAG file and, with
    ``drift_dag``, the drift DAG file)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / MARKER).write_text(f"created by `{made_by}`; safe to delete\n")
    dags = root / "dags"
    shards_dir = root / "shards"
    dags.mkdir()
    shards_dir.mkdir()
    shards: dict[str, Path] = {}
    for index in range(shard_count):
        shard_id = f"shard-{index}"
        path = shards_dir / f"{shard_id}.db"
        _fill_shard(path, index, legacy=shard_id == LEGACY_SHARD)
        shards[shard_id] = path
    topology = ["# The order of shards is the rollout order.", "shards:"]
    for shard_id in shards:
        topology += [f"  - id: {shard_id}", f"    conn_id: {shard_id.replace('-', '_')}"]
    topology += ["drift:", "  schedule: '@hourly'", "  baseline: shard-0", "  critical_tables: [orders]"]
    (dags / "shards.yaml").write_text("\n".join(topology) + "\n")
    for migration_id, files in MIGRATIONS.items():
        folder = dags / "migrations" / migration_id
        folder.mkdir(parents=True)
        for name, text in files.items():
            (folder / name).write_text(text)
    (dags / "shardmigrate_dags.py").write_text(DAG_FILE)
    if drift_dag:
        (dags / "shardmigrate_drift.py").write_text(DRIFT_DAG_FILE)
    return DemoFleet(root=root, dags=dags, shards=shards)
