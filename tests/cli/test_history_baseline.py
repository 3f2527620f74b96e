"""``shardmigrate history`` and ``shardmigrate baseline`` on real SQLite shards."""

from __future__ import annotations

import json

from airflow_provider_shardmigrate.cli import main
from airflow_provider_shardmigrate.core.scripts import load_migration
from airflow_provider_shardmigrate.core.topology import Shard
from airflow_provider_shardmigrate.engines.runner import apply_to_shard


def test_baseline_then_history(sqlite_fleet, write_migration, tmp_path, capsys, monkeypatch):
    for shard_id in ("s0", "s1", "s2"):
        sqlite_fleet.add(shard_id)
    (tmp_path / "shards.yaml").write_text(sqlite_fleet.topology() + "  - {id: gone, conn_id: missing_conn}\n")
    folder = write_migration("001_idx")
    monkeypatch.chdir(tmp_path)
    assert apply_to_shard(Shard("s0", "s0"), load_migration(folder)).outcome.value == "succeeded"

    assert main(["baseline", "001_idx", "--shard", "s1", "--shard", "S0"]) == 0
    out = capsys.readouterr().out
    assert "s1: succeeded baselined" in out and "s0: already_applied" in out
    assert sqlite_fleet.history("s1")["001_idx"]["status"] == "baselined"
    assert "idx_customers_name" not in sqlite_fleet.objects("s1")  # baselining runs nothing

    # a later rollout treats the baselined shard as already applied
    assert apply_to_shard(Shard("s1", "s1"), load_migration(folder)).outcome.value == "already_applied"

    assert main(["history", "--json"]) == 1  # one shard's connection is missing
    data = json.loads(capsys.readouterr().out)
    assert [r["status"] for r in data["s0"]["rows"]] == ["applied"]
    assert [r["status"] for r in data["s1"]["rows"]] == ["baselined"]
    assert data["s2"]["rows"] == [] and data["s2"]["error"] is None
    assert "missing_conn" in data["gone"]["error"] and "shardmigrate.invalid_topology" in data["gone"]["error"]

    assert main(["history", "--shard", "s0", "--migration", "001_idx"]) == 0
    assert "applied" in capsys.readouterr().out

    assert main(["baseline", "001_idx", "--shard", "nope"]) == 1
