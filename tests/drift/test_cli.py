"""``shardmigrate drift`` on real shard files: readable tables, the JSON report, and exit codes 0/1/2."""

from __future__ import annotations

import json

import pytest

from airflow_provider_shardmigrate.cli import main
from tests.drift.conftest import write_topology

BASE = """
CREATE TABLE orders (id INTEGER PRIMARY KEY, total NUMERIC(10,2) NOT NULL);
CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT);
"""


@pytest.fixture
def fleet(sqlite_fleet, tmp_path):
    sqlite_fleet.add("c0", BASE)
    sqlite_fleet.add("c1", BASE)
    sqlite_fleet.add("c2", BASE)
    path = tmp_path / "shards.yaml"
    write_topology(path, ["c0", "c1", "c2"], critical_tables=["orders"], depth="tables_and_columns")
    return sqlite_fleet, path


def drift(capsys, *args: str) -> tuple[int, str]:
    code = main(["drift", *args])
    return code, capsys.readouterr().out


def test_healthy_fleet_exits_0(fleet, capsys):
    _, path = fleet
    code, out = drift(capsys, "--topology", str(path))
    assert code == 0
    assert "in sync" in out and "healthy: 2 shard(s) match baseline c0" in out


def test_drift_outside_critical_tables_is_degraded(fleet, capsys):
    sqlite_fleet, path = fleet
    sqlite_fleet.query("c2", "ALTER TABLE notes ADD COLUMN extra TEXT")
    code, out = drift(capsys, "--topology", str(path))
    assert code == 1
    assert "drifted" in out and "column extra: extra -- text" in out and "degraded" in out
    # the same drift at tables_only depth is not drift at all
    code, _ = drift(capsys, "--topology", str(path), "--depth", "tables_only")
    assert code == 0


def test_drift_in_a_critical_table_is_unhealthy_case_insensitively(fleet, capsys):
    sqlite_fleet, path = fleet
    sqlite_fleet.query("c1", "ALTER TABLE notes ADD COLUMN extra TEXT")
    code, _ = drift(capsys, "--topology", str(path), "--critical", "NOTES")
    assert code == 2
    code, out = drift(capsys, "--topology", str(path), "--critical", "payments,Notes", "--json")
    assert code == 2
    data = json.loads(out)
    assert data["health"]["status"] == "unhealthy"
    assert data["health"]["critical_drift"] == {"notes": ["c1"]}
    assert data["report"]["drifted_shards"] == ["c1"]
    assert data["report"]["diffs"]["c1"][0]["columns"][0] == {"name": "extra", "kind": "extra", "definition": "text"}


def test_baseline_option_and_unreadable_shard(fleet, capsys):
    sqlite_fleet, path = fleet
    sqlite_fleet.paths["c2"].unlink()
    code, out = drift(capsys, "--topology", str(path), "--baseline", "c1", "--json")
    assert code == 2
    data = json.loads(out)
    assert data["report"]["baseline"] == "c1"
    assert data["report"]["shards_compared"] == ["c0"]
    assert "does not exist" in data["report"]["errors"]["c2"]["message"]
    code, out = drift(capsys, "--topology", str(path))
    assert code == 2 and "failed" in out and "detection failed" in out


def test_unknown_baseline_is_an_error(fleet, capsys):
    _, path = fleet
    code, out = drift(capsys, "--topology", str(path), "--baseline", "nope", "--json")
    assert code == 2
    assert json.loads(out)["error"]["code"] == "shardmigrate.schema_comparison_failed"


def test_help_lists_drift(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "drift" in capsys.readouterr().out
