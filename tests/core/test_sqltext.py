"""Splitting SQL scripts into statements (non-transactional engines count statements one by one)."""

from __future__ import annotations

import pytest

from airflow_provider_shardmigrate.core.sqltext import preview, split_sql


def test_simple_statements_in_order() -> None:
    assert split_sql("CREATE TABLE a (id int);\nCREATE TABLE b (id int);\nDROP TABLE c") == [
        "CREATE TABLE a (id int);",
        "CREATE TABLE b (id int);",
        "DROP TABLE c",
    ]


def test_dollar_quoted_function_body_is_one_statement() -> None:
    script = """
CREATE FUNCTION touch() RETURNS trigger AS $$
BEGIN
  NEW.updated_at := now();
  RETURN NEW;
END;
$$ LANGUAGE plpgsql;
CREATE FUNCTION two() RETURNS int AS $body$ SELECT 1; SELECT 2; $body$ LANGUAGE sql;
SELECT 3;
"""
    statements = split_sql(script)
    assert len(statements) == 3
    assert statements[0].startswith("CREATE FUNCTION touch()")
    assert "RETURN NEW;" in statements[0] and statements[0].endswith("LANGUAGE plpgsql;")
    assert "SELECT 1; SELECT 2;" in statements[1]
    assert statements[2] == "SELECT 3;"


@pytest.mark.parametrize(
    "trigger",
    [
        # SQLite
        "CREATE TRIGGER t AFTER INSERT ON customers BEGIN "
        "UPDATE customers SET name = 'x;y' WHERE id = NEW.id; INSERT INTO log VALUES (1); END;",
        # MySQL, with a nested END IF
        "CREATE TRIGGER t BEFORE INSERT ON c FOR EACH ROW BEGIN "
        "IF NEW.x < 0 THEN SET NEW.x = 0; END IF; SET NEW.y = 1; END;",
    ],
)
def test_begin_end_trigger_body_is_one_statement(trigger: str) -> None:
    statements = split_sql(trigger + "\nCREATE INDEX i ON c (n);")
    assert statements == [trigger, "CREATE INDEX i ON c (n);"]


def test_semicolons_in_strings_identifiers_and_comments() -> None:
    script = """INSERT INTO t VALUES ('a;b', 'it''s; fine');
CREATE TABLE "odd;name" (id int);
/* a block; comment */ SELECT 2;
"""
    statements = split_sql(script)
    assert len(statements) == 3
    assert statements[0] == "INSERT INTO t VALUES ('a;b', 'it''s; fine');"
    assert statements[1] == 'CREATE TABLE "odd;name" (id int);'
    assert statements[2].endswith("SELECT 2;")


def test_comment_only_statements_are_dropped() -> None:
    script = """-- header comment; with a semicolon
CREATE TABLE a (id int);
/* only a comment */;
-- trailing comment
"""
    statements = split_sql(script)
    assert len(statements) == 1
    assert "CREATE TABLE a (id int);" in statements[0]


@pytest.mark.parametrize("script", ["", "   \n", "-- nothing\n/* at all */", ";;;"])
def test_nothing_to_run(script: str) -> None:
    assert split_sql(script) == []


def test_preview() -> None:
    assert preview("CREATE  TABLE\n  a (\n id int\n)") == "CREATE TABLE a ( id int )"
    long = "SELECT " + "x, " * 100
    clipped = preview(long, limit=40)
    assert len(clipped) == 40 and clipped.endswith("...")
    assert preview("SELECT 1", limit=8) == "SELECT 1"
