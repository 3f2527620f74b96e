"""The ``shardmigrate`` command as users run it (a real subprocess for the demo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from airflow_provider_shardmigrate.cli import main

TOPOLOGY = "shards:\n" + "".join(f"  - {{id: s{i}, conn_id: c{i}}}\n" for i in range(5))


def project(tmp_path: Path, write_migration) -> Path:
    (tmp_path / "shards.yaml").write_text(TOPOLOGY)
    write_migration("001_a", options={"strategy": "rolling", "max_parallelism": 2})
    write_migration("002_b", options={"strategy": "canary_first", "canary": "s3"})
    return tmp_path


def test_validate_ok(tmp_path, write_migration, capsys, monkeypatch):
    monkeypatch.chdir(project(tmp_path, write_migration))
    assert main(["validate"]) == 0
    out = capsys.readouterr().out
    assert "everything is valid" in out and "001_a" in out and "sha256:" in out


def test_validate_lists_every_problem(tmp_path, write_migration, capsys, monkeypatch):
    root = project(tmp_path, write_migration)
    bad = write_migration("003_bad", options={"strategy": "yolo", "max_parallelism": 0, "colour": "red"})
    (bad / "down.sql").write_text("")
    write_migration("004_canary", options={"strategy": "canary_first", "canary": "nope"})
    (root / "shards.yaml").write_text(TOPOLOGY + "  - {id: S1, conn_id: dup}\n")
    monkeypatch.chdir(root)
    assert main(["validate"]) == 1
    out = " ".join(capsys.readouterr().out.split())
    for expected in (
        "unknown strategy 'yolo'",
        "max_parallelism",
        "'colour': unknown key",
        "down.sql: script is empty",
        "duplicate shard id 'S1'",
        "shardmigrate.invalid_topology",
        "shardmigrate.invalid_script",
    ):
        assert expected in out, expected


def test_plan_prints_the_waves(tmp_path, write_migration, capsys, monkeypatch):
    monkeypatch.chdir(project(tmp_path, write_migration))
    assert main(["plan", "001_a"]) == 0
    out = capsys.readouterr().out
    assert "3 wave(s)" in out and "batch 3" in out and "s4" in out
    assert main(["plan", "002_b", "--json"]) == 0
    (plan,) = json.loads(capsys.readouterr().out)
    assert [w["kind"] for w in plan["waves"]] == ["canary", "rest"]
    assert plan["waves"][0]["shards"] == ["s3"] and plan["waves"][1]["shards"] == ["s0", "s1", "s2", "s4"]
    assert main(["plan", "001_a", "--strategy", "parallel", "--max-parallelism", "3", "--json"]) == 0
    (plan,) = json.loads(capsys.readouterr().out)
    assert plan["waves"] == [{"index": 0, "kind": "all", "concurrency": 3, "shards": [f"s{i}" for i in range(5)]}]
    assert main(["plan", "001_a", "--strategy", "sideways"]) == 1
    assert main(["plan", "nope"]) == 1
    assert "shardmigrate.migration_not_found" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "airflow_provider_shardmigrate.cli", "demo", "--workdir", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        env={**env, "COLUMNS": "160"},
        timeout=300,
    )
    elapsed = time.monotonic() - started
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "UNEXPECTED" not in out
    assert "every shard succeeded; the run is success" in out
    assert "every shard already_applied; no DDL ran" in out
    assert "every other shard was rolled back" in out
    assert "idx_customers_email exists on no shard" in out
    assert "demo finished" in out
    assert elapsed < 120, f"the demo took {elapsed:.0f}s"
    # running it again over its own folder works (it replaces its previous working folder)
    again = subprocess.run(
        [sys.executable, "-m", "airflow_provider_shardmigrate.cli", "demo", "--workdir", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert again.returncode == 0, again.stdout + again.stderr


def test_demo_refuses_a_folder_it_did_not_make(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(SystemExit, match="was not made by"):
        main(["demo", "--workdir", str(tmp_path)])
    assert (tmp_path / "precious.txt").exists()


def test_what_validate_passes_the_engines_run_a_long_insert(
    tmp_path, write_migration, sqlite_fleet, capsys, monkeypatch
):
    """A 1,249-row INSERT (15 KB) passed validate and then broke sqlparse at run time (issue 9, bug 3)."""
    from airflow_provider_shardmigrate.core.scripts import load_migration
    from airflow_provider_shardmigrate.core.topology import Shard
    from airflow_provider_shardmigrate.engines.runner import apply_to_shard

    sqlite_fleet.add("s0")
    (tmp_path / "shards.yaml").write_text(sqlite_fleet.topology())
    rows = ",\n".join(f"({i}, 'customer {i}; the {i}th')" for i in range(100, 1_349))
    folder = write_migration(
        "005_bulk", up=f"INSERT INTO customers (id, name) VALUES\n{rows};\nCREATE INDEX i ON customers (name);"
    )
    monkeypatch.chdir(tmp_path)
    assert main(["validate"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "up.sql: 2" in out and "down.sql: 1" in out  # validate split the scripts as the engines will

    status = apply_to_shard(Shard("s0", "s0"), load_migration(folder))

    assert status.outcome == "succeeded", status
    assert sqlite_fleet.query("s0", "SELECT count(*) FROM customers") == [(3 + 1_249,)]


def test_validate_follows_the_topologys_allow_symlinks(tmp_path, write_migration, capsys, monkeypatch):
    root = project(tmp_path, write_migration)
    outside = write_migration("shared", root=tmp_path / "elsewhere")
    (root / "migrations" / "003_linked").symlink_to(outside, target_is_directory=True)
    monkeypatch.chdir(root)
    assert main(["validate"]) == 1
    assert "outside the migrations folder" in " ".join(capsys.readouterr().out.split())
    (root / "shards.yaml").write_text(TOPOLOGY + "allow_symlinks: true\n")
    assert main(["validate"]) == 0
