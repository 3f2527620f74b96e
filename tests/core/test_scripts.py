"""Migration folders: loading, validation, checksums, variant selection."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from airflow_provider_shardmigrate.core.errors import (
    ErrorCode,
    InvalidScriptError,
    MigrationNotFoundError,
)
from airflow_provider_shardmigrate.core.options import MigrationOptions, Strategy
from airflow_provider_shardmigrate.core.scripts import (
    canonical_text,
    compute_checksum,
    load_migration,
    load_migrations,
    script_file_name,
)

WriteMigration = Callable[..., Path]
CHECKSUM_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


def invalid(folder: Path) -> InvalidScriptError:
    with pytest.raises(InvalidScriptError) as info:
        load_migration(folder)
    assert info.value.code == ErrorCode.INVALID_SCRIPT
    assert str(info.value).startswith("[shardmigrate.invalid_script]")
    return info.value


def sources(error: InvalidScriptError) -> list[str | None]:
    return [problem.source for problem in error.problems]


# --- the good path ----------------------------------------------------------------------------------------


def test_loads_a_minimal_migration_with_defaults(write_migration: WriteMigration) -> None:
    folder = write_migration("20260216_add_index")
    migration = load_migration(folder)
    assert migration.id == "20260216_add_index"
    assert migration.path == folder
    assert set(migration.scripts) == {"up.sql", "down.sql"}
    assert migration.options == MigrationOptions()
    assert migration.description == ""
    assert CHECKSUM_RE.match(migration.checksum)
    assert migration.variants == ("",)


def test_loads_options_and_description(write_migration: WriteMigration) -> None:
    folder = write_migration(
        "002_opts",
        options={
            "description": "  add an index  ",
            "strategy": "rolling",
            "max_parallelism": 3,
            "stop_on_first_failure": False,
            "per_shard_timeout": 12.5,
            "transactional": False,
            "auto_rollback": True,
            "canary": "shard-2",
        },
    )
    migration = load_migration(folder)
    assert migration.description == "add an index"
    assert migration.options.strategy is Strategy.ROLLING
    assert migration.options.max_parallelism == 3
    assert migration.options.stop_on_first_failure is False
    assert migration.options.per_shard_timeout == 12.5
    assert migration.options.transactional is False
    assert migration.options.auto_rollback is True
    assert migration.options.canary == "shard-2"


def test_scripts_are_stored_canonical(write_migration: WriteMigration) -> None:
    folder = write_migration("003", up="\ufeffCREATE TABLE a (id int);\r\nCREATE TABLE b (id int);\r\n")
    (folder / "up.sql").write_bytes("\ufeffCREATE TABLE a (id int);\r\nCREATE TABLE b (id int);\r".encode())
    migration = load_migration(folder)
    assert migration.scripts["up.sql"] == "CREATE TABLE a (id int);\nCREATE TABLE b (id int);\n"


def test_scripts_mapping_is_read_only(write_migration: WriteMigration) -> None:
    migration = load_migration(write_migration("004"))
    with pytest.raises(TypeError):
        migration.scripts["up.sql"] = "DROP TABLE x;"  # type: ignore[index]


def test_non_script_files_are_ignored(write_migration: WriteMigration) -> None:
    folder = write_migration("005", extra={"README.md": "notes", "notes.txt": "x", "upgrade.sql": "SELECT 1;"})
    (folder / "sub").mkdir()
    migration = load_migration(folder)
    assert set(migration.scripts) == {"up.sql", "down.sql"}


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(MigrationNotFoundError) as info:
        load_migration(tmp_path / "nope")
    assert info.value.code == "shardmigrate.migration_not_found"
    assert str(tmp_path / "nope") in str(info.value)


# --- checksums --------------------------------------------------------------------------------------------


def checksum_of(folder: Path) -> str:
    return load_migration(folder).checksum


def test_checksum_format_and_determinism(write_migration: WriteMigration, tmp_path: Path) -> None:
    a = write_migration("001_x", root=tmp_path / "a")
    b = write_migration("001_x", root=tmp_path / "b")
    assert CHECKSUM_RE.match(checksum_of(a))
    assert checksum_of(a) == checksum_of(b)
    assert checksum_of(a) == checksum_of(a)


def test_checksum_does_not_depend_on_the_folder_name(write_migration: WriteMigration) -> None:
    assert checksum_of(write_migration("001_x")) == checksum_of(write_migration("002_y"))


@pytest.mark.parametrize(
    "encode",
    [
        lambda text: text.replace("\n", "\r\n").encode(),
        lambda text: text.replace("\n", "\r").encode(),
        lambda text: b"\xef\xbb\xbf" + text.encode(),
        lambda text: b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode(),
    ],
    ids=["crlf", "cr", "bom", "bom+crlf"],
)
def test_checksum_is_stable_across_line_endings_and_bom(
    write_migration: WriteMigration, tmp_path: Path, encode: Callable[[str], bytes]
) -> None:
    up = "CREATE TABLE t (\n  id int\n);\nCREATE INDEX i ON t (id);\n"
    down = "DROP INDEX i;\nDROP TABLE t;\n"
    lf = write_migration("001", up=up, down=down, root=tmp_path / "lf")
    other = write_migration("001", root=tmp_path / "other")
    (other / "up.sql").write_bytes(encode(up))
    (other / "down.sql").write_bytes(encode(down))
    assert checksum_of(other) == checksum_of(lf)


def test_checksum_changes_with_up(write_migration: WriteMigration, tmp_path: Path) -> None:
    base = write_migration("001", root=tmp_path / "a")
    changed = write_migration("001", up="CREATE INDEX idx_customers_name ON customers (name );", root=tmp_path / "b")
    assert checksum_of(base) != checksum_of(changed)


def test_checksum_changes_with_down(write_migration: WriteMigration, tmp_path: Path) -> None:
    base = write_migration("001", root=tmp_path / "a")
    changed = write_migration("001", down="DROP INDEX IF EXISTS idx_customers_name;", root=tmp_path / "b")
    assert checksum_of(base) != checksum_of(changed)


def test_checksum_changes_with_trailing_whitespace(write_migration: WriteMigration, tmp_path: Path) -> None:
    base = write_migration("001", root=tmp_path / "a")
    changed = write_migration("001", up="CREATE INDEX idx_customers_name ON customers (name);\n", root=tmp_path / "b")
    assert checksum_of(base) != checksum_of(changed)


def test_checksum_changes_with_a_variant(write_migration: WriteMigration, tmp_path: Path) -> None:
    variant = {"up.postgres.sql": "CREATE INDEX CONCURRENTLY i ON c (n);", "down.postgres.sql": "DROP INDEX i;"}
    base = write_migration("001", root=tmp_path / "a")
    with_variant = write_migration("001", extra=variant, root=tmp_path / "b")
    edited = write_migration(
        "001", extra={**variant, "up.postgres.sql": "CREATE INDEX CONCURRENTLY i ON c (n) ;"}, root=tmp_path / "c"
    )
    edited_down = write_migration(
        "001", extra={**variant, "down.postgres.sql": "DROP INDEX CONCURRENTLY i;"}, root=tmp_path / "d"
    )
    checksums = {checksum_of(f) for f in (base, with_variant, edited, edited_down)}
    assert len(checksums) == 4


def test_checksum_changes_when_a_file_is_renamed(write_migration: WriteMigration, tmp_path: Path) -> None:
    text = {"up.mysql.sql": "CREATE INDEX i ON c (n);", "down.mysql.sql": "DROP INDEX i ON c;"}
    mysql = write_migration("001", extra=text, root=tmp_path / "a")
    renamed = write_migration(
        "001",
        extra={"up.mssql.sql": text["up.mysql.sql"], "down.mssql.sql": text["down.mysql.sql"]},
        root=tmp_path / "b",
    )
    assert checksum_of(mysql) != checksum_of(renamed)


def test_checksum_ignores_migration_yaml_and_other_files(write_migration: WriteMigration, tmp_path: Path) -> None:
    plain = write_migration("001", root=tmp_path / "a")
    decorated = write_migration(
        "001", options={"description": "x", "strategy": "parallel"}, extra={"README.md": "hi"}, root=tmp_path / "b"
    )
    assert checksum_of(plain) == checksum_of(decorated)


def test_compute_checksum_separates_names_and_contents() -> None:
    # "up.sql"+"ab" vs "up.sqla"+"b" must not collide; order of the mapping must not matter.
    assert compute_checksum({"up.sql": "ab"}) != compute_checksum({"up.sqla": "b"})
    assert compute_checksum({"a": "1", "b": "2"}) == compute_checksum({"b": "2", "a": "1"})
    assert compute_checksum({"a": "1", "b": "2"}) != compute_checksum({"a": "2", "b": "1"})


def test_canonical_text() -> None:
    assert canonical_text(b"a\r\nb\rc\n") == "a\nb\nc\n"
    assert canonical_text("\ufeffx".encode()) == "x"
    with pytest.raises(UnicodeDecodeError):
        canonical_text(b"\xff\xfe")


def test_declared_checksum_that_matches_is_accepted(write_migration: WriteMigration, tmp_path: Path) -> None:
    expected = checksum_of(write_migration("001", root=tmp_path / "probe"))
    folder = write_migration("001", options={"checksum": expected})
    migration = load_migration(folder)
    assert migration.checksum == expected
    assert migration.options.checksum == expected


def test_declared_checksum_mismatch_names_file_and_field(write_migration: WriteMigration) -> None:
    wrong = "sha256:" + "0" * 64
    folder = write_migration("001", options={"checksum": wrong})
    error = invalid(folder)
    assert len(error.problems) == 1
    problem = error.problems[0]
    assert problem.source == str(folder / "migration.yaml")
    assert problem.field == "checksum"
    assert wrong in problem.message
    assert checksum_of_scripts(folder) in problem.message  # shows the computed one too
    assert f"{folder / 'migration.yaml'}: field 'checksum'" in str(error)


def checksum_of_scripts(folder: Path) -> str:
    return compute_checksum(
        {p.name: canonical_text(p.read_bytes()) for p in folder.iterdir() if p.name.endswith(".sql")}
    )


# --- script files -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["up", "down"])
@pytest.mark.parametrize("text", ["", "   \n\t\r\n  ", "\ufeff"])
def test_empty_or_whitespace_script(write_migration: WriteMigration, which: str, text: str) -> None:
    folder = write_migration("001", **{which: "x"})
    (folder / f"{which}.sql").write_text(text, encoding="utf-8")
    error = invalid(folder)
    assert sources(error) == [str(folder / f"{which}.sql")]
    assert "empty" in str(error)


def test_empty_variant_script(write_migration: WriteMigration) -> None:
    folder = write_migration("001", extra={"up.sqlite.sql": " \n", "down.sqlite.sql": "DROP INDEX i;"})
    error = invalid(folder)
    assert sources(error) == [str(folder / "up.sqlite.sql")]


def test_missing_up_sql(write_migration: WriteMigration) -> None:
    folder = write_migration("001")
    (folder / "up.sql").unlink()
    (folder / "down.sql").unlink()
    error = invalid(folder)
    assert sources(error) == [str(folder)]
    assert "missing up.sql" in str(error)


def test_missing_up_sql_with_only_a_variant(write_migration: WriteMigration) -> None:
    folder = write_migration("001", extra={"up.postgres.sql": "SELECT 1;", "down.postgres.sql": "SELECT 1;"})
    (folder / "up.sql").unlink()
    (folder / "down.sql").unlink()
    error = invalid(folder)
    assert "missing up.sql" in str(error)


def test_missing_up_sql_reported_even_when_down_is_empty(write_migration: WriteMigration) -> None:
    folder = write_migration("001")
    (folder / "up.sql").unlink()
    (folder / "down.sql").write_text("")
    error = invalid(folder)
    messages = str(error)
    assert "missing up.sql" in messages
    assert "empty" in messages
    assert len(error.problems) == 2


def test_empty_up_is_not_also_reported_missing(write_migration: WriteMigration) -> None:
    folder = write_migration("001", up="  ")
    error = invalid(folder)
    assert len(error.problems) == 1
    assert "missing" not in str(error)


def test_up_without_down(write_migration: WriteMigration) -> None:
    folder = write_migration("001")
    (folder / "down.sql").unlink()
    error = invalid(folder)
    assert sources(error) == [str(folder)]
    assert "'up.sql' has no matching 'down.sql'" in str(error)


@pytest.mark.parametrize("variant", ["postgres", "mysql", "mssql", "sqlite"])
def test_variant_up_without_down(write_migration: WriteMigration, variant: str, tmp_path: Path) -> None:
    folder = write_migration("001", extra={f"up.{variant}.sql": "SELECT 1;"})
    (folder / "down.sql").unlink()
    (folder / "up.sql").write_text("SELECT 1;")
    error = invalid(folder)
    assert f"'up.{variant}.sql' has no matching 'down.{variant}.sql'" in str(error)


@pytest.mark.parametrize("variant", ["postgres", "mysql", "mssql", "sqlite"])
def test_variant_pairs_with_the_generic_script(write_migration: WriteMigration, variant: str) -> None:
    # a generic up.sql with an engine-specific down (e.g. MySQL's DROP INDEX ... ON table) is what such
    # a shard runs, so it is a valid pair; so is an engine-specific up with the generic down.
    down_only = write_migration("001", extra={f"down.{variant}.sql": "SELECT 2;"})
    assert load_migration(down_only).script_for("down", variant) == (f"down.{variant}.sql", "SELECT 2;")
    up_only = write_migration("002", extra={f"up.{variant}.sql": "SELECT 3;"})
    assert load_migration(up_only).script_for("down", variant) == ("down.sql", up_only.joinpath("down.sql").read_text())


def test_mongo_up_without_down(write_migration: WriteMigration) -> None:
    folder = write_migration("001", extra={"up.mongo.json": '[{"create": "orders"}]'})
    error = invalid(folder)
    assert "'up.mongo.json' has no matching 'down.mongo.json'" in str(error)


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("up.postgress.sql", "unknown script variant 'postgress'"),
        ("down.pg.sql", "unknown script variant 'pg'"),
        ("up.mongo.sql", "MongoDB scripts are JSON"),
        ("up.json", "JSON scripts must be named up.mongo.json"),
        ("up.postgres.json", "JSON scripts must be named up.mongo.json"),
    ],
)
def test_unknown_script_names(write_migration: WriteMigration, name: str, hint: str) -> None:
    folder = write_migration("001", extra={name: "SELECT 1;"})
    error = invalid(folder)
    assert str(folder / name) in sources(error)
    assert hint in str(error)


@pytest.mark.parametrize("name", ["UP.sql", "Down.sql", "up.Postgres.sql", "up.postgres.SQL", "up.MONGO.json"])
def test_script_names_in_the_wrong_case_are_rejected_not_ignored(write_migration: WriteMigration, name: str) -> None:
    # A script silently ignored because of its case would never run anywhere.
    folder = write_migration("001", extra={name: "SELECT 1;"})
    error = invalid(folder)
    assert str(folder / name) in sources(error)
    assert "lower case" in str(error)


def test_bad_json_in_mongo_script(write_migration: WriteMigration) -> None:
    folder = write_migration(
        "001", extra={"up.mongo.json": '[{"create": "orders"', "down.mongo.json": '[{"drop": "orders"}]'}
    )
    error = invalid(folder)
    assert sources(error) == [str(folder / "up.mongo.json")]
    assert "not valid JSON" in str(error)


@pytest.mark.parametrize("text", ["[]", '"create"', "[1, 2]", "[{}]", "42"])
def test_mongo_script_must_be_command_documents(write_migration: WriteMigration, text: str) -> None:
    folder = write_migration("001", extra={"up.mongo.json": text, "down.mongo.json": '{"drop": "orders"}'})
    error = invalid(folder)
    assert sources(error) == [str(folder / "up.mongo.json")]
    assert "MongoDB command documents" in str(error)


def test_mongo_only_migration(write_migration: WriteMigration) -> None:
    folder = write_migration(
        "001", extra={"up.mongo.json": '{"create": "orders"}', "down.mongo.json": '[{"drop": "orders"}]'}
    )
    (folder / "up.sql").unlink()
    (folder / "down.sql").unlink()
    migration = load_migration(folder)
    assert set(migration.scripts) == {"up.mongo.json", "down.mongo.json"}
    assert migration.variants == ("mongo",)


def test_non_utf8_script(write_migration: WriteMigration) -> None:
    folder = write_migration("001")
    (folder / "up.sql").write_bytes(b"INSERT INTO t VALUES ('caf\xe9');")
    error = invalid(folder)
    assert sources(error) == [str(folder / "up.sql")]
    assert "not UTF-8" in str(error)


@pytest.mark.parametrize("name", ["-starts-with-dash", "has space", "x" * 201, "_private"])
def test_invalid_folder_name(write_migration: WriteMigration, name: str) -> None:
    folder = write_migration(name)
    error = invalid(folder)
    assert sources(error) == [str(folder)]
    assert "migration id" in str(error)


# --- migration.yaml ---------------------------------------------------------------------------------------


def yaml_problem(folder: Path, field: str | None) -> InvalidScriptError:
    error = invalid(folder)
    assert [p.field for p in error.problems] == [field]
    assert sources(error) == [str(folder / "migration.yaml")]
    if field:
        assert f"{folder / 'migration.yaml'}: field '{field}'" in str(error)
    return error


def test_unknown_key_in_migration_yaml(write_migration: WriteMigration) -> None:
    error = yaml_problem(write_migration("001", options={"stratgy": "parallel"}), "stratgy")
    assert "unknown key" in str(error)
    assert "strategy" in str(error)  # lists the allowed keys


def test_unknown_strategy(write_migration: WriteMigration) -> None:
    error = yaml_problem(write_migration("001", options={"strategy": "blue_green"}), "strategy")
    assert "sequential, parallel, rolling, canary_first" in str(error)


@pytest.mark.parametrize("value", [0, -3, 2.5, "4", True, False, None])
def test_bad_max_parallelism(write_migration: WriteMigration, value: object) -> None:
    yaml_problem(write_migration("001", options={"max_parallelism": value}), "max_parallelism")


@pytest.mark.parametrize("value", [0, -1, -0.5, "300", True, None, float("inf"), float("nan")])
def test_bad_per_shard_timeout(write_migration: WriteMigration, value: object) -> None:
    yaml_problem(write_migration("001", options={"per_shard_timeout": value}), "per_shard_timeout")


def test_invalid_yaml(write_migration: WriteMigration) -> None:
    folder = write_migration("001")
    (folder / "migration.yaml").write_text("strategy: [parallel\n")
    error = yaml_problem(folder, None)
    assert "not valid YAML" in str(error)


def test_non_utf8_migration_yaml(write_migration: WriteMigration) -> None:
    folder = write_migration("001")
    (folder / "migration.yaml").write_bytes(b"description: caf\xe9\n")
    yaml_problem(folder, None)


@pytest.mark.parametrize("text", ["- strategy: parallel\n", "just text\n"])
def test_migration_yaml_must_be_a_mapping(write_migration: WriteMigration, text: str) -> None:
    folder = write_migration("001")
    (folder / "migration.yaml").write_text(text)
    error = yaml_problem(folder, None)
    assert "mapping" in str(error)


def test_empty_migration_yaml_means_defaults(write_migration: WriteMigration) -> None:
    folder = write_migration("001")
    (folder / "migration.yaml").write_text("# nothing yet\n")
    assert load_migration(folder).options == MigrationOptions()


def test_all_problems_of_a_folder_in_one_error(write_migration: WriteMigration) -> None:
    folder = write_migration(
        "001",
        up="",
        options={"strategy": "nope", "max_parallelism": 0, "per_shard_timeout": -1, "colour": "red"},
        extra={"up.postgress.sql": "SELECT 1;"},
    )
    error = invalid(folder)
    assert len(error.problems) == 6  # empty up, bad variant, 4 option problems
    assert "migration '001' is invalid (6 problems)" in str(error)
    assert {p.field for p in error.problems} >= {"strategy", "max_parallelism", "per_shard_timeout", "colour"}


# --- load_migrations --------------------------------------------------------------------------------------


def test_load_migrations_sorted_and_broken_ones_reported(write_migration: WriteMigration, tmp_path: Path) -> None:
    root = tmp_path / "migrations"
    write_migration("20260301_c")
    write_migration("20260101_a")
    broken = write_migration("20260201_b", up="   ")
    write_migration("20260401_d", options={"strategy": "sideways"})
    (root / ".hidden").mkdir()
    (root / "_drafts").mkdir()
    (root / "notes.txt").write_text("not a migration")
    result = load_migrations(root)
    assert result.root == root
    assert [m.id for m in result.migrations] == ["20260101_a", "20260301_c"]
    assert sorted(result.broken) == ["20260201_b", "20260401_d"]
    assert isinstance(result.broken["20260201_b"], InvalidScriptError)
    assert str(broken / "up.sql") in str(result.broken["20260201_b"])
    assert result.get("20260101_a").id == "20260101_a"
    with pytest.raises(InvalidScriptError) as info:
        result.get("20260401_d")
    assert "strategy" in str(info.value)
    with pytest.raises(MigrationNotFoundError) as missing:
        result.get("nope")
    assert missing.value.code == "shardmigrate.migration_not_found"
    assert "'nope'" in str(missing.value)


def test_load_migrations_sorts_by_id_not_by_creation(write_migration: WriteMigration, tmp_path: Path) -> None:
    for name in ["b", "10", "a", "2", "Z"]:
        write_migration(name)
    assert [m.id for m in load_migrations(tmp_path / "migrations").migrations] == sorted(["b", "10", "a", "2", "Z"])


def test_load_migrations_empty_and_missing_root(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = load_migrations(tmp_path / "empty")
    assert result.migrations == () and dict(result.broken) == {}
    with pytest.raises(MigrationNotFoundError) as info:
        load_migrations(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(info.value)


# --- script_for -------------------------------------------------------------------------------------------


def test_script_file_name() -> None:
    assert script_file_name("up", None) == "up.sql"
    assert script_file_name("down", "mysql") == "down.mysql.sql"
    assert script_file_name("up", "mongo") == "up.mongo.json"


def test_script_for_prefers_the_variant_then_the_generic_file(write_migration: WriteMigration) -> None:
    folder = write_migration(
        "001",
        up="GENERIC UP;",
        down="GENERIC DOWN;",
        extra={
            "up.postgres.sql": "PG UP;",
            "down.postgres.sql": "PG DOWN;",
            "up.mongo.json": '[{"create": "c"}]',
            "down.mongo.json": '[{"drop": "c"}]',
        },
    )
    migration = load_migration(folder)
    assert migration.script_for("up", "postgres") == ("up.postgres.sql", "PG UP;")
    assert migration.script_for("down", "postgres") == ("down.postgres.sql", "PG DOWN;")
    assert migration.script_for("up", "sqlite") == ("up.sql", "GENERIC UP;")
    assert migration.script_for("down", "mysql") == ("down.sql", "GENERIC DOWN;")
    assert migration.script_for("up", "mongo") == ("up.mongo.json", '[{"create": "c"}]')
    assert migration.script_for("down", "mongo") == ("down.mongo.json", '[{"drop": "c"}]')
    assert migration.variants == ("", "mongo", "postgres")


def test_mongo_scripts_only_for_mongo(write_migration: WriteMigration) -> None:
    sql_only = load_migration(write_migration("001"))
    assert sql_only.script_for("up", "mongo") is None
    folder = write_migration("002", extra={"up.mongo.json": '{"create": "c"}', "down.mongo.json": '{"drop": "c"}'})
    (folder / "up.sql").unlink()
    (folder / "down.sql").unlink()
    mongo_only = load_migration(folder)
    assert mongo_only.script_for("up", "postgres") is None
    assert mongo_only.script_for("up", "sqlite") is None


# --- hostile folders and scripts (issue 9) -----------------------------------------------------------------


@pytest.mark.parametrize("which", ["up", "down"])
@pytest.mark.parametrize("text", ["-- nothing to do\n", "/* only a comment */;\n  ;\n", "-- a\n-- b; c\n"])
def test_a_script_without_a_statement_is_rejected_naming_the_file(
    write_migration: WriteMigration, which: str, text: str
) -> None:
    folder = write_migration("001", **{which: text})
    error = invalid(folder)
    assert sources(error) == [str(folder / f"{which}.sql")]
    assert "holds no SQL statement" in str(error)


def test_a_variant_without_a_statement_is_rejected(write_migration: WriteMigration) -> None:
    folder = write_migration("001", extra={"down.mysql.sql": "-- MySQL drops it with the table\n"})
    assert sources(invalid(folder)) == [str(folder / "down.mysql.sql")]


def test_a_script_above_the_size_limit_is_refused_naming_the_file(
    write_migration: WriteMigration, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_provider_shardmigrate.core import scripts

    monkeypatch.setattr(scripts, "MAX_SCRIPT_BYTES", 1000)
    folder = write_migration("001", up="INSERT INTO t VALUES " + ", ".join(["(1)"] * 400) + ";")
    error = invalid(folder)
    assert sources(error) == [str(folder / "up.sql")]
    assert "above the limit of 1,000 bytes" in str(error)


def test_a_long_insert_loads_and_splits_as_one_statement(write_migration: WriteMigration) -> None:
    from airflow_provider_shardmigrate.core.sqltext import split_sql

    rows = ",\n".join(f"({i}, 'name {i}; with a semicolon')" for i in range(1_249))
    migration = load_migration(write_migration("001", up=f"INSERT INTO customers (id, name) VALUES\n{rows};"))
    assert len(split_sql(migration.scripts["up.sql"])) == 1


@pytest.mark.parametrize("name", ["m001\n", "m001 ", "a;b", "it's", 'say"hi"'])
def test_folder_names_with_a_trailing_newline_or_odd_characters_are_refused(
    write_migration: WriteMigration, tmp_path: Path, name: str
) -> None:
    folder = write_migration(name)
    error = invalid(folder)
    assert "migration id" in str(error)
    found = load_migrations(tmp_path / "migrations")
    assert list(found.broken) == [name] and found.migrations == ()


def test_ids_that_differ_only_by_case_are_both_refused_naming_both(
    write_migration: WriteMigration, tmp_path: Path
) -> None:
    write_migration("m010_Orders")
    write_migration("m010_orders")
    write_migration("m011_other")
    found = load_migrations(tmp_path / "migrations")
    assert [m.id for m in found.migrations] == ["m011_other"]
    assert sorted(found.broken) == ["m010_Orders", "m010_orders"]
    for name, error in found.broken.items():
        assert error.code == ErrorCode.INVALID_SCRIPT
        assert "m010_Orders" in str(error) and "m010_orders" in str(error)
        assert "case" in str(error)
        assert [p.source for p in error.problems] == [str(tmp_path / "migrations" / name)]


def outside_target(tmp_path: Path, write_migration: WriteMigration) -> Path:
    return write_migration("elsewhere", root=tmp_path / "outside")


def test_a_symlinked_folder_pointing_outside_the_root_is_refused(
    write_migration: WriteMigration, tmp_path: Path
) -> None:
    root = tmp_path / "migrations"
    write_migration("001_ok")
    (root / "002_linked").symlink_to(outside_target(tmp_path, write_migration), target_is_directory=True)
    found = load_migrations(root)
    assert [m.id for m in found.migrations] == ["001_ok"]
    error = found.broken["002_linked"]
    assert error.code == ErrorCode.INVALID_SCRIPT
    assert str(root / "002_linked") in str(error) and "outside the migrations folder" in str(error)
    assert "allow_symlinks" in str(error)
    allowed = load_migrations(root, allow_symlinks=True)
    assert [m.id for m in allowed.migrations] == ["001_ok", "002_linked"]


@pytest.mark.parametrize("name", ["up.sql", "migration.yaml"])
def test_a_symlinked_file_pointing_outside_the_root_is_refused(
    write_migration: WriteMigration, tmp_path: Path, name: str
) -> None:
    root = tmp_path / "migrations"
    folder = write_migration("001_linked")
    target = tmp_path / "outside.txt"
    target.write_text("CREATE TABLE stolen (id int);" if name == "up.sql" else "description: elsewhere\n")
    (folder / name).unlink(missing_ok=True)
    (folder / name).symlink_to(target)
    error = load_migrations(root).broken["001_linked"]
    assert str(folder / name) in [p.source for p in error.problems]
    assert "outside the migrations folder" in str(error)
    assert [m.id for m in load_migrations(root, allow_symlinks=True).migrations] == ["001_linked"]


def test_symlinks_inside_the_root_are_followed(write_migration: WriteMigration, tmp_path: Path) -> None:
    root = tmp_path / "migrations"
    first = write_migration("001_a")
    second = write_migration("002_b")
    (second / "down.sql").unlink()
    (second / "down.sql").symlink_to(first / "down.sql")
    assert [m.id for m in load_migrations(root).migrations] == ["001_a", "002_b"]
