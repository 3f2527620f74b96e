"""Test session set-up: a throwaway Airflow home (configured before anything imports Airflow) and the
fleets of real SQLite shard files the tests migrate."""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

#: Fixtures for the PostgreSQL, MariaDB and MongoDB servers (unique shard databases per test session).
pytest_plugins = ["tests.server_fixtures", "tests.mongo_fixtures"]

_HOME = Path(tempfile.mkdtemp(prefix="shardmigrate-test-airflow-"))
(_HOME / "dags").mkdir()
os.environ.update(
    {
        "AIRFLOW_HOME": str(_HOME),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(_HOME / "dags"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_HOME}/airflow.db",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
    }
)
for key in [k for k in os.environ if k.startswith("AIRFLOW_CONN_")]:
    del os.environ[key]

BASE_SCHEMA = """
CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
INSERT INTO customers (name) VALUES ('ada'), ('grace'), ('linus');
"""


@pytest.fixture(scope="session")
def airflow_db() -> Iterator[Path]:
    """A migrated Airflow metadata DB for the whole session (``dag.test()`` needs one)."""
    from airflow.utils import db

    db.resetdb()
    yield _HOME


def sqlite_conn_env(path: Path) -> str:
    return json.dumps({"conn_type": "sqlite", "host": str(path)})


class SqliteFleet:
    """SQLite shard files with Airflow connections (``AIRFLOW_CONN_*``) pointing at them."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = root
        self.monkeypatch = monkeypatch
        self.paths: dict[str, Path] = {}

    def add(self, shard_id: str, schema: str = BASE_SCHEMA, *, conn_id: str | None = None) -> Path:
        path = self.root / f"{shard_id}.db"
        with sqlite3.connect(path) as conn:
            conn.executescript(schema)
        conn.close()
        conn_id = conn_id or shard_id.replace("-", "_")
        self.monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", sqlite_conn_env(path))
        self.paths[shard_id] = path
        return path

    def topology(self, shard_ids: list[str] | None = None, *, inactive: tuple[str, ...] = ()) -> str:
        lines = ["shards:"]
        for shard_id in shard_ids or list(self.paths):
            lines.append(f"  - id: {shard_id}\n    conn_id: {shard_id.replace('-', '_')}")
            if shard_id in inactive:
                lines.append("    active: false")
        return "\n".join(lines) + "\n"

    def query(self, shard_id: str, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        conn = sqlite3.connect(self.paths[shard_id])
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def execute(self, shard_id: str, sql: str) -> None:
        conn = sqlite3.connect(self.paths[shard_id])
        try:
            with conn:
                conn.executescript(sql)
        finally:
            conn.close()

    def objects(self, shard_id: str) -> set[str]:
        return {row[0] for row in self.query(shard_id, "SELECT name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'")}

    def history(self, shard_id: str) -> dict[str, dict[str, object]]:
        conn = sqlite3.connect(self.paths[shard_id])
        conn.row_factory = sqlite3.Row
        try:
            exists = conn.execute("SELECT 1 FROM sqlite_master WHERE name='shardmigrate_history'").fetchone()
            if not exists:
                return {}
            return {row["migration_id"]: dict(row) for row in conn.execute("SELECT * FROM shardmigrate_history")}
        finally:
            conn.close()


@pytest.fixture
def sqlite_fleet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SqliteFleet:
    root = tmp_path / "shards"
    root.mkdir()
    return SqliteFleet(root, monkeypatch)


@pytest.fixture
def write_migration(tmp_path: Path) -> Callable[..., Path]:
    """Write a migration folder: ``write_migration("001_x", up=..., down=..., options={...})``."""

    def write(
        migration_id: str,
        *,
        up: str = "CREATE INDEX idx_customers_name ON customers (name);",
        down: str = "DROP INDEX idx_customers_name;",
        options: dict[str, object] | None = None,
        extra: dict[str, str] | None = None,
        root: Path | None = None,
    ) -> Path:
        import yaml

        folder = (root or tmp_path / "migrations") / migration_id
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "up.sql").write_text(up)
        (folder / "down.sql").write_text(down)
        for name, text in (extra or {}).items():
            (folder / name).write_text(text)
        if options:
            (folder / "migration.yaml").write_text(yaml.safe_dump(options))
        return folder

    return write
