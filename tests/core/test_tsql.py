"""Splitting T-SQL scripts (SQL Server shards) into steps: GO batches, then statements (core/tsql.py)."""

from __future__ import annotations

import pytest

from airflow_provider_shardmigrate.core.errors import InvalidScriptError
from airflow_provider_shardmigrate.core.tsql import has_tsql_statement, split_tsql


def test_semicolons_end_statements_as_elsewhere() -> None:
    assert split_tsql("CREATE TABLE a (id int);\nCREATE TABLE b (id int);\nDROP TABLE c") == [
        "CREATE TABLE a (id int);",
        "CREATE TABLE b (id int);",
        "DROP TABLE c",
    ]


@pytest.mark.parametrize(
    "separator",
    ["GO", "go", "Go", "  GO  ", "\tGO", "GO -- end of the first batch", "GO--x", "gO\t"],
    ids=["upper", "lower", "mixed", "blanks", "tab", "comment", "comment-no-space", "tab-after"],
)
def test_a_line_holding_only_go_separates_batches(separator: str) -> None:
    script = f"CREATE TABLE a (id int)\n{separator}\nCREATE TABLE b (id int)\n"
    assert split_tsql(script) == ["CREATE TABLE a (id int)", "CREATE TABLE b (id int)"]


def test_go_at_the_start_and_end_and_repeated_gives_no_empty_steps() -> None:
    assert split_tsql("GO\nGO\nSELECT 1;\nGO\n\nGO\n-- trailing\nGO") == ["SELECT 1;"]


@pytest.mark.parametrize(
    "script",
    [
        "SELECT 1 GO",  # not alone on its line
        "SELECT 1\nGO SELECT 2",  # something after it
        "SELECT 1\nGOTO done",
        "SELECT 1\nGO;",  # a semicolon: not sqlcmd's separator
        "SELECT 1\nGOING",
    ],
)
def test_go_that_is_not_alone_on_its_line_separates_nothing(script: str) -> None:
    assert len(split_tsql(script)) == 1


@pytest.mark.parametrize(
    "script",
    [
        "SELECT 'one\nGO\nstill the literal';\nSELECT 2;",
        "SELECT N'it''s\nGO\n';\nSELECT 2;",
        'SELECT "quoted\nGO\nname";\nSELECT 2;',
        "SELECT [bracketed\nGO\n]]name];\nSELECT 2;",
        "SELECT 1 /* a comment\nGO\n*/;\nSELECT 2;",
        "SELECT 1 /* nested /* comment\nGO\n */ still inside\nGO\n*/;\nSELECT 2;",
    ],
    ids=["string", "n-string", "dq-identifier", "bracket", "block-comment", "nested-comment"],
)
def test_go_inside_strings_identifiers_and_comments_is_text(script: str) -> None:
    steps = split_tsql(script)
    assert len(steps) == 2 and steps[1] == "SELECT 2;"
    assert "GO" in steps[0]


def test_go_after_a_line_comment_line_still_separates() -> None:
    assert split_tsql("SELECT 1 -- a comment 'with a quote\nGO\nSELECT 2") == ["SELECT 1", "SELECT 2"]


def test_go_with_a_count_is_refused_naming_the_line() -> None:
    with pytest.raises(InvalidScriptError) as caught:
        split_tsql("INSERT INTO t DEFAULT VALUES;\nGO 3\n")
    assert "line 2" in caught.value.message and "GO 3" in caught.value.message and "WHILE" in caught.value.message
    assert caught.value.code == "shardmigrate.invalid_script"


@pytest.mark.parametrize(
    "text",
    [
        "INSERT INTO t VALUES ('a;b');",
        "INSERT INTO t VALUES (N'it''s; fine');",
        'CREATE TABLE "odd;name" (id int);',
        "CREATE TABLE [odd;name]]x] (id int);",
        "SELECT 1 /* a; comment */;",
        "SELECT 1 /* nested /* ; */ ; */;",
        "INSERT INTO t VALUES ('C:\\');",  # no backslash escapes in T-SQL
    ],
)
def test_semicolons_in_strings_identifiers_and_comments_end_nothing(text: str) -> None:
    assert split_tsql(f"{text}\nSELECT 2;") == [text, "SELECT 2;"]


def test_comment_only_parts_are_dropped() -> None:
    assert split_tsql("-- header; comment\n/* only */;\nGO\n;;\nCREATE TABLE a (id int);\n-- trailing") == [
        "CREATE TABLE a (id int);"
    ]


@pytest.mark.parametrize("script", ["", "  \n", "-- nothing", "/* at /* all */ */", "GO\ngo\n", ";;;"])
def test_nothing_to_run(script: str) -> None:
    assert split_tsql(script) == [] and not has_tsql_statement(script)


def test_begin_end_blocks_and_try_catch_stay_whole() -> None:
    guard = "IF NOT EXISTS (SELECT 1 FROM sys.tables WHERE name = 'x') BEGIN CREATE TABLE x (id int); END;"
    trycatch = "BEGIN TRY INSERT INTO t VALUES (1); INSERT INTO t VALUES (2); END TRY BEGIN CATCH THROW; END CATCH;"
    nested = "WHILE 1 = 0 BEGIN IF 1 = 1 BEGIN SELECT 1; END; SELECT 2; END;"
    assert split_tsql(f"{guard}\n{trycatch}\n{nested}\nSELECT 3;") == [guard, trycatch, nested, "SELECT 3;"]


def test_if_else_is_one_statement() -> None:
    statement = "IF 1 = 1\n    DROP TABLE a;\nELSE\n    DROP TABLE b;"
    assert split_tsql(f"{statement}\nSELECT 3;") == [statement, "SELECT 3;"]


def test_case_end_does_not_close_a_block() -> None:
    block = "BEGIN UPDATE t SET x = CASE WHEN y = 1 THEN 'a;' ELSE 'b' END; SELECT 1; END;"
    assert split_tsql(f"{block}\nSELECT 2;") == [block, "SELECT 2;"]


def test_transaction_statements_are_statements_not_blocks() -> None:
    assert split_tsql("BEGIN TRANSACTION;\nCREATE TABLE a (id int);\nCOMMIT;") == [
        "BEGIN TRANSACTION;",
        "CREATE TABLE a (id int);",
        "COMMIT;",
    ]
    assert split_tsql("BEGIN TRAN; SELECT 1; COMMIT TRAN;") == ["BEGIN TRAN;", "SELECT 1;", "COMMIT TRAN;"]


@pytest.mark.parametrize(
    "head",
    [
        "CREATE PROCEDURE p AS",
        "CREATE PROC p AS",
        "ALTER PROCEDURE p AS",
        "CREATE OR ALTER PROCEDURE p @x int AS",
        "CREATE FUNCTION f() RETURNS int AS BEGIN DECLARE @x int = 1;",
        "CREATE TRIGGER tr ON t AFTER INSERT AS",
        "create or alter trigger tr on t after insert as",
    ],
)
def test_a_module_definition_runs_to_the_end_of_its_batch(head: str) -> None:
    body = f"{head}\n    SELECT 1;\n    SELECT 2;\n"
    if "FUNCTION" in head:
        body = f"{head}\n    RETURN @x;\nEND;\n"
    steps = split_tsql(f"CREATE TABLE t (id int);\nGO\n{body}GO\nSELECT 3;")
    assert steps == ["CREATE TABLE t (id int);", body.strip(), "SELECT 3;"]


def test_a_module_after_other_statements_of_its_batch_still_runs_to_the_batch_end() -> None:
    steps = split_tsql("SET ANSI_NULLS ON;\nCREATE VIEW v AS SELECT 1 AS x;\nSELECT 2;")
    assert steps == ["SET ANSI_NULLS ON;", "CREATE VIEW v AS SELECT 1 AS x;\nSELECT 2;"]


@pytest.mark.parametrize(
    "batch",
    [
        "DECLARE @n int = 5; UPDATE t SET x = @n; SELECT @n;",
        "DECLARE @t TABLE (id int); INSERT INTO @t VALUES (1); SELECT * FROM @t;",
        "IF (SELECT COUNT(*) FROM t) > 0 RETURN; DROP TABLE t;",
        "GOTO done; DROP TABLE t; done: SELECT 1;",
    ],
    ids=["variable", "table-variable", "return", "goto"],
)
def test_a_batch_with_variables_or_jumps_is_one_step(batch: str) -> None:
    assert split_tsql(f"SELECT 0;\nGO\n{batch}\nGO\nSELECT 9;") == ["SELECT 0;", batch, "SELECT 9;"]


def test_system_functions_are_not_variables() -> None:
    assert split_tsql("SELECT @@ROWCOUNT; SELECT @@TRANCOUNT;") == ["SELECT @@ROWCOUNT;", "SELECT @@TRANCOUNT;"]


def test_statements_without_semicolons_stay_one_step() -> None:
    assert split_tsql("CREATE TABLE a (id int)\nCREATE TABLE b (id int)\n") == [
        "CREATE TABLE a (id int)\nCREATE TABLE b (id int)"
    ]


def test_leading_semicolon_of_a_cte_is_dropped() -> None:
    assert split_tsql(";WITH c AS (SELECT 1 AS x) SELECT x FROM c;") == ["WITH c AS (SELECT 1 AS x) SELECT x FROM c;"]


def test_unterminated_string_keeps_the_rest_as_text() -> None:
    assert split_tsql("SELECT 'open;\nGO\nSELECT 2;") == ["SELECT 'open;\nGO\nSELECT 2;"]


def test_splitting_is_linear_and_cached() -> None:
    from airflow_provider_shardmigrate.core import tsql

    script = "INSERT INTO t VALUES (1, N'a;b', [c;d]);\n" * 20_000 + "GO\nSELECT 1;\n"
    steps = split_tsql(script)
    assert len(steps) == 20_001 and steps[-1] == "SELECT 1;"
    before = tsql._split_cached.cache_info().hits
    again = split_tsql(script)
    again.append("mutated")
    assert split_tsql(script) == steps and tsql._split_cached.cache_info().hits == before + 2


def test_the_rich_contract_migration_has_three_steps() -> None:
    from tests.engines.conftest import MsSqlShard

    steps = split_tsql(MsSqlShard.rich_up)
    assert len(steps) == 3 and steps[2].startswith("CREATE TRIGGER orders_note") and steps[2].endswith("END;")
