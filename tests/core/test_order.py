"""Migration order (docs/contracts.md, order): ids sort the folder, ``depends_on`` narrows what must come first,
and a bad ``depends_on`` is refused at load time naming the file and the field."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from airflow_provider_shardmigrate.core.errors import InvalidScriptError
from airflow_provider_shardmigrate.core.history import HistoryRecord, HistoryStatus, missing_requirements
from airflow_provider_shardmigrate.core.scripts import folder_ids, load_migration, load_migrations, sibling_requirements

WriteMigration = Callable[..., Path]


def test_every_earlier_migration_is_required_by_default(write_migration: WriteMigration, tmp_path: Path) -> None:
    for migration_id in ("003_c", "001_a", "002_b"):
        write_migration(migration_id)
    found = load_migrations(tmp_path / "migrations")
    assert found.ids == ("001_a", "002_b", "003_c")
    assert [found.requires(m) for m in found.migrations] == [(), ("001_a",), ("001_a", "002_b")]


def test_depends_on_narrows_and_an_empty_list_makes_a_migration_independent(
    write_migration: WriteMigration, tmp_path: Path
) -> None:
    write_migration("001_a")
    write_migration("002_b")
    write_migration("003_c", options={"depends_on": ["001_a"]})
    write_migration("004_d", options={"depends_on": []})
    found = load_migrations(tmp_path / "migrations")
    requires = {m.id: found.requires(m) for m in found.migrations}
    assert requires == {"001_a": (), "002_b": ("001_a",), "003_c": ("001_a",), "004_d": ()}


@pytest.mark.parametrize(
    ("depends_on", "message"),
    [
        (["009_missing"], "names '009_missing', which is not a migration of this folder"),
        (["003_c"], "names '003_c', which does not come before '002_b'"),
        (["002_b"], "names '002_b', which does not come before '002_b'"),
    ],
    ids=["unknown", "later", "itself"],
)
def test_a_bad_depends_on_is_refused_at_load_naming_the_field(
    write_migration: WriteMigration, tmp_path: Path, depends_on: list[str], message: str
) -> None:
    write_migration("001_a")
    write_migration("002_b", options={"depends_on": depends_on})
    write_migration("003_c")
    found = load_migrations(tmp_path / "migrations")
    assert [m.id for m in found.migrations] == ["001_a", "003_c"]
    error = found.broken["002_b"]
    assert isinstance(error, InvalidScriptError) and error.code == "shardmigrate.invalid_script"
    (problem,) = error.problems
    assert problem.field == "depends_on" and message in problem.message
    assert problem.source is not None and problem.source.endswith("002_b/migration.yaml")
    # the broken migration still counts in the order: the one after it needs it
    assert found.ids == ("001_a", "002_b", "003_c")
    assert found.requires(found.get("003_c")) == ("001_a", "002_b")


def test_a_broken_or_oddly_named_folder(write_migration: WriteMigration, tmp_path: Path) -> None:
    write_migration("001_a")
    broken = write_migration("002_broken")
    (broken / "down.sql").write_text("")
    write_migration("has space")
    write_migration("003_c", options={"depends_on": ["002_broken"]})  # a broken migration is still known
    root = tmp_path / "migrations"
    assert folder_ids(root) == ("001_a", "002_broken", "003_c")  # a name that is no id is not in the order
    found = load_migrations(root)
    assert found.requires(found.get("003_c")) == ("002_broken",)


def test_a_migration_loaded_on_its_own_takes_its_order_from_its_folder(
    write_migration: WriteMigration, tmp_path: Path
) -> None:
    write_migration("001_a")
    second = load_migration(write_migration("002_b"))
    assert sibling_requirements(second) == ("001_a",)
    bad = load_migration(write_migration("003_c", options={"depends_on": ["nope"]}))
    with pytest.raises(InvalidScriptError, match=r"depends_on.*not a migration of this folder"):
        sibling_requirements(bad)


def test_missing_requirements_name_what_each_row_says() -> None:
    rows = {
        "001_a": HistoryRecord("001_a", "sha256:x", HistoryStatus.APPLIED),
        "002_b": HistoryRecord("002_b", "sha256:x", HistoryStatus.ROLLED_BACK),
        "003_c": HistoryRecord("003_c", "sha256:x", HistoryStatus.BASELINED),
        "004_d": HistoryRecord("004_d", "sha256:x", HistoryStatus.FAILED),
    }
    required = ["001_a", "002_b", "003_c", "004_d", "005_e"]
    assert missing_requirements(rows, required) == [
        ("002_b", "rolled_back"),
        ("004_d", "failed"),
        ("005_e", "not_applied"),
    ]
    assert missing_requirements(rows, ["001_a", "003_c"]) == []
