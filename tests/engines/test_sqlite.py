"""What only the SQLite engine does, on real shard files (no mocks). The behaviour every engine shares is in
test_contract.py, which runs it on SQLite too."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from airflow_provider_shardmigrate.core.scripts import load_migration
from airflow_provider_shardmigrate.engines.runner import apply_to_shard
from airflow_provider_shardmigrate.engines.sqlite import database_path
from tests.conftest import SqliteFleet
from tests.engines.conftest import SqliteShard, shard

WriteMigration = Callable[..., Path]
UP, DOWN = SqliteShard.rich_up, SqliteShard.rich_down


def test_missing_database_file_is_a_clear_failure(sqlite_fleet: SqliteFleet, write_migration: WriteMigration) -> None:
    path = sqlite_fleet.add("lite-0")
    path.unlink()
    migration = load_migration(write_migration("001_orders", up=UP, down=DOWN))

    status = apply_to_shard(shard("lite-0"), migration)

    assert status.error_code == "shardmigrate.migration_failed"
    assert str(path) in status.error_message and "does not exist" in status.error_message
    assert not path.exists()  # no empty database was created in its place


def test_connection_without_a_path_is_a_clear_failure(
    sqlite_fleet: SqliteFleet, write_migration: WriteMigration, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_LITE_0", json.dumps({"conn_type": "sqlite"}))

    status = apply_to_shard(shard("lite-0"), load_migration(write_migration("001_orders", up=UP, down=DOWN)))

    assert status.error_code == "shardmigrate.migration_failed"
    assert "no database file path" in status.error_message and "lite_0" in status.error_message


@pytest.mark.parametrize("form", ["json", "uri"])
def test_the_file_path_is_read_from_airflow_s_connection_forms(
    sqlite_fleet: SqliteFleet, write_migration: WriteMigration, monkeypatch: pytest.MonkeyPatch, form: str
) -> None:
    """Airflow keeps the file in ``host`` (JSON/UI form) or ``schema`` (``sqlite:////path`` URI form); this
    fails when it stops doing so. Both forms migrate the same file."""
    from airflow.providers.sqlite.hooks.sqlite import SqliteHook

    path = sqlite_fleet.add("lite-0")
    if form == "uri":
        monkeypatch.setenv("AIRFLOW_CONN_LITE_0", f"sqlite:///{path}")

    assert database_path(SqliteHook.get_connection("lite_0")) == str(path)
    assert apply_to_shard(shard("lite-0"), load_migration(write_migration("001_orders", up=UP, down=DOWN))).outcome == (
        "succeeded"
    )
    assert sqlite_fleet.history("lite-0")["001_orders"]["status"] == "applied"


def test_why_the_engine_opens_the_file_itself(sqlite_fleet: SqliteFleet, tmp_path: Path) -> None:
    """``SqliteHook.get_conn()`` creates a file that does not exist -- a typo would become an empty shard --
    so the engine opens the path the hook's connection names with ``mode=rw``. When this test fails, the
    hook has changed and the engine could use it to open the file."""
    from airflow.providers.sqlite.hooks.sqlite import SqliteHook

    path = sqlite_fleet.add("lite-0")
    path.unlink()

    SqliteHook(sqlite_conn_id="lite_0").get_conn().close()

    assert path.exists()
