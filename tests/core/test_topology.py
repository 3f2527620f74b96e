"""Topology file: loading, validation, every error naming the file and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_provider_shardmigrate.core.errors import ErrorCode, InvalidTopologyError
from airflow_provider_shardmigrate.core.topology import (
    DriftDepth,
    DriftSettings,
    Shard,
    Topology,
    load_topology,
    parse_topology,
)

GOOD = """\
shards:
  - id: shard-0
    conn_id: shard_0
  - id: Shard-1
    conn_id: shard_1
    active: false
  - id: shard.2_x
    conn_id: conn.2-x
    active: true
drift:
  schedule: "0 * * * *"
  baseline: SHARD-1
  depth: full
  critical_tables: [orders, " payments "]
  grace_period: 60
"""


def write(tmp_path: Path, text: str, name: str = "shards.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_error(tmp_path: Path, text: str) -> tuple[InvalidTopologyError, Path]:
    path = write(tmp_path, text)
    with pytest.raises(InvalidTopologyError) as info:
        load_topology(path)
    assert info.value.code == ErrorCode.INVALID_TOPOLOGY
    assert str(info.value).startswith("[shardmigrate.invalid_topology]")
    assert str(path) in str(info.value)
    return info.value, path


def fields_of(error: InvalidTopologyError) -> list[str | None]:
    return [problem.field for problem in error.problems]


def shards_yaml(*items: str, extra: str = "") -> str:
    return "shards:\n" + "".join(items) + extra


# --- the good path ----------------------------------------------------------------------------------------


def test_loads_a_full_topology(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    topology = load_topology(path)
    assert topology.source == str(path)
    assert topology.shards == (
        Shard("shard-0", "shard_0", True),
        Shard("Shard-1", "shard_1", False),
        Shard("shard.2_x", "conn.2-x", True),
    )
    assert [s.id for s in topology.active_shards] == ["shard-0", "shard.2_x"]
    assert topology.drift == DriftSettings(
        schedule="0 * * * *",
        baseline="Shard-1",  # inactive baseline is allowed, normalised to the topology's spelling
        depth=DriftDepth.FULL,
        critical_tables=("orders", "payments"),
        grace_period=60.0,
    )


def test_drift_defaults_when_section_missing(tmp_path: Path) -> None:
    topology = load_topology(write(tmp_path, shards_yaml("  - {id: a, conn_id: a}\n")))
    assert topology.drift == DriftSettings()
    assert topology.drift.schedule == "@hourly"
    assert topology.drift.baseline is None
    assert topology.drift.depth is DriftDepth.TABLES_AND_COLUMNS
    assert topology.drift.critical_tables == ()
    assert topology.drift.grace_period == 1800.0
    assert topology.shards[0].active is True


def test_drift_null_section_and_null_schedule(tmp_path: Path) -> None:
    assert load_topology(write(tmp_path, "shards: []\ndrift:\n")).drift == DriftSettings()
    topology = load_topology(write(tmp_path, "shards: []\ndrift: {schedule: null, baseline: null}\n"))
    assert topology.drift.schedule is None
    assert topology.drift.baseline is None


@pytest.mark.parametrize("depth", ["tables_only", "tables_and_columns", "full"])
def test_every_drift_depth_is_accepted(tmp_path: Path, depth: str) -> None:
    topology = load_topology(write(tmp_path, f"shards: []\ndrift: {{depth: {depth}}}\n"))
    assert topology.drift.depth == DriftDepth(depth)


def test_grace_period_zero_is_allowed(tmp_path: Path) -> None:
    topology = load_topology(write(tmp_path, "shards: []\ndrift: {grace_period: 0}\n"))
    assert topology.drift.grace_period == 0.0


def test_find_and_get_are_case_insensitive() -> None:
    topology = parse_topology({"shards": [{"id": "Shard-A", "conn_id": "a"}, {"id": "b", "conn_id": "b"}]}, "topo.yaml")
    assert topology.find("shard-a") is topology.shards[0]
    assert topology.get("B") is topology.shards[1]
    assert topology.find("c") is None
    with pytest.raises(InvalidTopologyError) as info:
        topology.get("c")
    assert "topo.yaml" in str(info.value) and "'c'" in str(info.value)
    assert info.value.code == "shardmigrate.invalid_topology"


def test_shard_key_is_casefolded() -> None:
    assert Shard("ABC-1", "x").key == "abc-1"


def test_default_source_name() -> None:
    assert parse_topology({"shards": []}) == Topology(shards=(), source="<topology>")


# --- file level -------------------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(InvalidTopologyError) as info:
        load_topology(path)
    assert info.value.code == "shardmigrate.invalid_topology"
    assert str(path) in str(info.value)
    assert "does not exist" in str(info.value)


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidTopologyError) as info:
        load_topology(tmp_path)
    assert str(tmp_path) in str(info.value)
    assert "cannot be read" in str(info.value)


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "shards.yaml"
    path.write_bytes(b"shards:\n  - id: caf\xe9\n    conn_id: x\n")
    with pytest.raises(InvalidTopologyError) as info:
        load_topology(path)
    assert str(path) in str(info.value)
    assert info.value.code == "shardmigrate.invalid_topology"


def test_invalid_yaml(tmp_path: Path) -> None:
    error, _ = load_error(tmp_path, "shards: [\n  - id: a\n")
    assert "not valid YAML" in str(error)


@pytest.mark.parametrize("text", ["", "- id: a\n  conn_id: a\n", "just a string\n", "42\n"])
def test_document_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    error, _ = load_error(tmp_path, text)
    assert "must be a mapping" in str(error)


def test_missing_shards_key(tmp_path: Path) -> None:
    error, _ = load_error(tmp_path, "drift: {depth: full}\n")
    assert fields_of(error) == ["shards"]
    assert "missing" in str(error)


@pytest.mark.parametrize("value", ["{}", "shard-0", "42", "null"])
def test_shards_must_be_a_list(tmp_path: Path, value: str) -> None:
    error, _ = load_error(tmp_path, f"shards: {value}\n")
    assert fields_of(error) == ["shards"]
    assert "must be a list" in str(error)


def test_unknown_top_level_key(tmp_path: Path) -> None:
    error, _ = load_error(tmp_path, "shards: []\nshard: []\n")
    assert fields_of(error) == ["shard"]
    assert "unknown key" in str(error)
    assert "field 'shard'" in str(error)


# --- shards -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dup", ["shard-0", "SHARD-0", "Shard-0"])
def test_duplicate_ids_are_case_insensitive_and_name_both_positions(tmp_path: Path, dup: str) -> None:
    text = shards_yaml(
        "  - {id: shard-0, conn_id: a}\n",
        "  - {id: shard-1, conn_id: b}\n",
        f"  - {{id: {dup}, conn_id: c}}\n",
    )
    error, _ = load_error(tmp_path, text)
    assert fields_of(error) == ["shards[2].id"]
    assert "duplicate shard id" in str(error)
    assert f"'{dup}'" in str(error)
    assert "shards[0]" in str(error)  # where it was first seen
    assert "field 'shards[2].id'" in str(error)


@pytest.mark.parametrize("bad_id", ["-leading-dash", "has space", "semi;colon", "slash/x", "ünïcode", "''", "x" * 101])
def test_bad_shard_id_characters(tmp_path: Path, bad_id: str) -> None:
    text = shards_yaml("  - {id: ok, conn_id: a}\n", f"  - id: {bad_id}\n    conn_id: b\n")
    error, _ = load_error(tmp_path, text)
    assert fields_of(error) == ["shards[1].id"]
    assert "shard id" in str(error)


@pytest.mark.parametrize("value", ["42", "null", "[a]", "true"])
def test_shard_id_must_be_a_string(tmp_path: Path, value: str) -> None:
    error, _ = load_error(tmp_path, shards_yaml(f"  - {{id: {value}, conn_id: a}}\n"))
    assert fields_of(error) == ["shards[0].id"]


def test_max_length_shard_id_is_accepted(tmp_path: Path) -> None:
    topology = load_topology(write(tmp_path, shards_yaml(f"  - {{id: {'x' * 100}, conn_id: a}}\n")))
    assert topology.shards[0].id == "x" * 100


def test_missing_conn_id(tmp_path: Path) -> None:
    error, _ = load_error(tmp_path, shards_yaml("  - {id: a, conn_id: a}\n", "  - {id: b}\n"))
    assert fields_of(error) == ["shards[1].conn_id"]
    assert "Airflow connection" in str(error)


@pytest.mark.parametrize("value", ["''", "42", "'bad conn'", "[x]"])
def test_bad_conn_id(tmp_path: Path, value: str) -> None:
    error, _ = load_error(tmp_path, shards_yaml(f"  - {{id: a, conn_id: {value}}}\n"))
    assert fields_of(error) == ["shards[0].conn_id"]


@pytest.mark.parametrize("value", ["'yes please'", "1", "0", "null", "'false'"])
def test_active_must_be_a_bool(tmp_path: Path, value: str) -> None:
    error, _ = load_error(tmp_path, shards_yaml(f"  - {{id: a, conn_id: a, active: {value}}}\n"))
    assert fields_of(error) == ["shards[0].active"]
    assert "true or false" in str(error)


def test_shard_entry_must_be_a_mapping(tmp_path: Path) -> None:
    error, _ = load_error(tmp_path, shards_yaml("  - {id: a, conn_id: a}\n", "  - just-a-name\n"))
    assert fields_of(error) == ["shards[1]"]


def test_unknown_shard_key(tmp_path: Path) -> None:
    error, _ = load_error(tmp_path, shards_yaml("  - {id: a, conn_id: a, enabled: false}\n"))
    assert fields_of(error) == ["shards[0].enabled"]
    assert "unknown key" in str(error)
    assert "active, conn_id, id" in str(error)  # the allowed keys


def test_empty_shard_list_is_a_valid_file() -> None:
    # Zero active shards is refused when planning (test_plans), not when loading.
    assert parse_topology({"shards": []}, "t.yaml").shards == ()


# --- drift ------------------------------------------------------------------------------------------------


def test_drift_must_be_a_mapping(tmp_path: Path) -> None:
    error, _ = load_error(tmp_path, "shards: []\ndrift: [depth]\n")
    assert fields_of(error) == ["drift"]


def test_unknown_drift_key(tmp_path: Path) -> None:
    error, _ = load_error(tmp_path, "shards: []\ndrift: {grace: 10}\n")
    assert fields_of(error) == ["drift.grace"]
    assert "unknown key" in str(error)


@pytest.mark.parametrize("depth", ["deep", "FULL", "42", "[full]"])
def test_bad_drift_depth(tmp_path: Path, depth: str) -> None:
    error, _ = load_error(tmp_path, f"shards: []\ndrift: {{depth: {depth}}}\n")
    assert fields_of(error) == ["drift.depth"]
    assert "tables_only, tables_and_columns, full" in str(error)


def test_unknown_baseline(tmp_path: Path) -> None:
    error, _ = load_error(tmp_path, shards_yaml("  - {id: a, conn_id: a}\n", extra="drift: {baseline: b}\n"))
    assert fields_of(error) == ["drift.baseline"]
    assert "'b'" in str(error)


def test_baseline_must_be_a_string(tmp_path: Path) -> None:
    error, _ = load_error(tmp_path, shards_yaml("  - {id: '1', conn_id: a}\n", extra="drift: {baseline: 1}\n"))
    assert fields_of(error) == ["drift.baseline"]


@pytest.mark.parametrize("value", ["orders", "[orders, 1]", "[orders, '  ']", "{a: b}"])
def test_bad_critical_tables(tmp_path: Path, value: str) -> None:
    error, _ = load_error(tmp_path, f"shards: []\ndrift: {{critical_tables: {value}}}\n")
    assert fields_of(error) == ["drift.critical_tables"]


@pytest.mark.parametrize("value", ["-1", "'soon'", "true", "null", ".nan"])
def test_bad_grace_period(tmp_path: Path, value: str) -> None:
    error, _ = load_error(tmp_path, f"shards: []\ndrift: {{grace_period: {value}}}\n")
    assert fields_of(error) == ["drift.grace_period"]
    assert ">= 0" in str(error)


@pytest.mark.parametrize("value", ["''", "'   '", "42", "[a]"])
def test_bad_schedule(tmp_path: Path, value: str) -> None:
    error, _ = load_error(tmp_path, f"shards: []\ndrift: {{schedule: {value}}}\n")
    assert fields_of(error) == ["drift.schedule"]


# --- many problems at once --------------------------------------------------------------------------------


def test_every_problem_is_listed_in_one_error(tmp_path: Path) -> None:
    text = """\
shards:
  - {id: a, conn_id: a}
  - {id: A, conn_id: b}
  - {id: 'b c', conn_id: c}
  - {id: d, active: maybe}
  - {id: e, conn_id: e, colour: red}
drift:
  depth: deep
  baseline: zz
  grace_period: -5
  critical_tables: nope
  schedule: ''
  when: now
extra: 1
"""
    error, path = load_error(tmp_path, text)
    assert sorted(f for f in fields_of(error) if f) == sorted(
        [
            "extra",
            "shards[1].id",
            "shards[2].id",
            "shards[3].conn_id",
            "shards[3].active",
            "shards[4].colour",
            "drift.when",
            "drift.schedule",
            "drift.baseline",
            "drift.depth",
            "drift.critical_tables",
            "drift.grace_period",
        ]
    )
    assert all(problem.source == str(path) for problem in error.problems)
    text_out = str(error)
    assert "(12 problems)" in text_out
    for problem in error.problems:
        assert f"field '{problem.field}'" in text_out
    assert text_out.count(f"\n  - {path}") == 12


def test_single_problem_message_is_the_problem(tmp_path: Path) -> None:
    error, path = load_error(tmp_path, shards_yaml("  - {id: a}\n"))
    assert len(error.problems) == 1
    assert error.message == str(error.problems[0])
    assert error.message.startswith(f"{path}: field 'shards[0].conn_id'")
    assert "\n" not in str(error)  # not listed twice


# --- hardening (issue 9) -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "item"), [("id", '{id: "a\\n", conn_id: c}'), ("conn_id", '{id: a, conn_id: "c\\n"}')]
)
def test_a_trailing_newline_is_not_part_of_a_valid_id(tmp_path: Path, field: str, item: str) -> None:
    error, _ = load_error(tmp_path, shards_yaml(f"  - {item}\n"))
    assert fields_of(error) == [f"shards[0].{field}"]


def test_allow_symlinks_defaults_to_false_and_must_be_a_bool(tmp_path: Path) -> None:
    assert load_topology(write(tmp_path, "shards: []\n")).allow_symlinks is False
    assert load_topology(write(tmp_path, "shards: []\nallow_symlinks: true\n")).allow_symlinks is True
    error, _ = load_error(tmp_path, "shards: []\nallow_symlinks: 'yes'\n")
    assert fields_of(error) == ["allow_symlinks"]
    assert "true or false" in str(error)


def test_status_section_sets_the_status_dag_schedule() -> None:
    shards = [{"id": "a", "conn_id": "c"}]
    assert parse_topology({"shards": shards}).status.schedule == "@hourly"
    assert parse_topology({"shards": shards, "status": {"schedule": "*/10 * * * *"}}).status.schedule == "*/10 * * * *"
    assert parse_topology({"shards": shards, "status": {"schedule": None}}).status.schedule is None
    with pytest.raises(InvalidTopologyError) as info:
        parse_topology({"shards": shards, "status": {"schedule": "", "colour": 1}}, "t.yaml")
    fields = {problem.field for problem in info.value.problems}
    assert fields == {"status.schedule", "status.colour"}
    with pytest.raises(InvalidTopologyError, match="field 'status': must be a mapping"):
        parse_topology({"shards": shards, "status": "@daily"}, "t.yaml")
