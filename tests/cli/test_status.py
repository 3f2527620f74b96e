"""``shardmigrate status``: the shard x migration matrix read from real shards, exit codes 0 / 1 / 2, the JSON
shape, and a shard whose server never answers reported as unreadable instead of hanging the command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_shardmigrate.cli import main
from airflow_provider_shardmigrate.core.scripts import load_migrations
from airflow_provider_shardmigrate.core.topology import load_topology
from airflow_provider_shardmigrate.engines.runner import apply_to_shard, baseline_shard
from tests.engines.conftest import SilentServer
from tests.server_fixtures import conn_id_for, topology_yaml

IDS = ["001_a", "002_b"]


def project(tmp_path: Path, write_migration: Any, topology: str) -> list[str]:
    (tmp_path / "shards.yaml").write_text(topology)
    for index, migration_id in enumerate(IDS):
        write_migration(migration_id, up=f"CREATE TABLE st{index} (id INT);", down=f"DROP TABLE st{index};")
    return ["--migrations", str(tmp_path / "migrations"), "--topology", str(tmp_path / "shards.yaml")]


def status_json(capsys: Any, args: list[str], expected_exit: int) -> dict[str, Any]:
    assert main(["status", *args, "--json"]) == expected_exit
    data: dict[str, Any] = json.loads(capsys.readouterr().out)
    return data


def test_exit_codes_and_json_follow_the_active_shards(sqlite_fleet, tmp_path, write_migration, capsys):
    for shard_id in ("s0", "s1", "spare"):
        sqlite_fleet.add(shard_id)
    args = project(tmp_path, write_migration, sqlite_fleet.topology(["s0", "s1", "spare"], inactive=("spare",)))
    found = load_migrations(tmp_path / "migrations")
    topology = load_topology(tmp_path / "shards.yaml")
    for migration in found.migrations:
        assert apply_to_shard(topology.get("s0"), migration).outcome == "succeeded"
    assert baseline_shard(topology.get("s1"), found.migrations[0]).outcome == "succeeded"

    data = status_json(capsys, args, 1)  # s1 lacks 002_b
    assert data["migrations"] == IDS and data["complete"] is False
    assert [(s["id"], s["active"], s["engine"], s["row"], s["error"]) for s in data["shards"]] == [
        ("s0", True, "sqlite", "AA", None),
        ("s1", True, "sqlite", "B-", None),
        ("spare", False, "sqlite", "--", None),
    ]
    assert data["counts"] == {
        "001_a": {"applied": 1, "baselined": 1, "not_applied": 1},
        "002_b": {"applied": 1, "not_applied": 2},
    }

    assert apply_to_shard(topology.get("s1"), found.migrations[1]).outcome == "succeeded"
    data = status_json(capsys, args, 0)  # every active shard has every migration; the inactive one does not count
    assert data["complete"] is True

    assert main(["status", *args]) == 0  # the table
    out = capsys.readouterr().out
    assert "001_a" in out and "s1" in out and "BA" in out and "complete" in out


def test_a_shard_that_cannot_be_read_exits_2(sqlite_fleet, tmp_path, write_migration, capsys):
    sqlite_fleet.add("s0")
    args = project(tmp_path, write_migration, sqlite_fleet.topology(["s0"]) + "  - {id: lost, conn_id: nowhere}\n")
    data = status_json(capsys, args, 2)
    lost = data["shards"][1]
    assert lost["row"] == "??" and "shardmigrate.invalid_topology" in lost["error"] and "nowhere" in lost["error"]
    assert data["counts"]["001_a"] == {"not_applied": 1, "unreadable": 1}


def test_a_bad_topology_or_missing_folder_exits_2(tmp_path, write_migration, capsys):
    args = project(tmp_path, write_migration, "shards: [{id: a}]\n")
    assert main(["status", *args]) == 2
    assert "shardmigrate.invalid_topology" in capsys.readouterr().err
    (tmp_path / "shards.yaml").write_text("shards: [{id: a, conn_id: a}]\n")
    assert main(["status", "--migrations", str(tmp_path / "nope"), "--topology", str(tmp_path / "shards.yaml")]) == 2
    assert "shardmigrate.migration_not_found" in " ".join(capsys.readouterr().err.split())


@pytest.mark.postgres
@pytest.mark.mysql
def test_a_server_that_never_answers_is_reported_not_hung(
    pg_fleet, mysql_fleet, sqlite_fleet, tmp_path, write_migration, capsys, monkeypatch
):
    server = SilentServer()
    try:
        pg_fleet.add("pg-0")
        mysql_fleet.add("my-0")
        sqlite_fleet.add("sq-0")
        for fleet, hung in ((pg_fleet, "pg-hung"), (mysql_fleet, "my-hung")):
            fleet.add(hung)
            spec = json.loads(fleet.conn_env(hung, "n0t-shown-pw", server.port))
            monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id_for(hung).upper()}", json.dumps(spec))
        shard_ids = ["pg-0", "pg-hung", "my-0", "my-hung", "sq-0"]
        args = project(tmp_path, write_migration, topology_yaml(shard_ids))
        data = status_json(capsys, [*args, "--timeout", "3"], 2)
    finally:
        server.close()
    rows = {shard["id"]: shard for shard in data["shards"]}
    for shard_id in ("pg-0", "my-0", "sq-0"):
        assert rows[shard_id]["row"] == "--" and rows[shard_id]["error"] is None, rows[shard_id]
    assert {rows["pg-0"]["engine"], rows["my-0"]["engine"], rows["sq-0"]["engine"]} == {"postgres", "mysql", "sqlite"}
    assert server.connections >= 2  # both hung shards reached the listener, which never answered
    for shard_id in ("pg-hung", "my-hung"):
        row = rows[shard_id]
        assert row["row"] == "??" and "shardmigrate.migration_timeout" in row["error"], row
        assert "n0t-shown-pw" not in row["error"]
