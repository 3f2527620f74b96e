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


# --- statements of any length, files of many MB (issue 9, bug 3) -------------------------------------------

ROW = "(12345, 'name; with a semicolon', 'it''s', 3.14, NULL)"


def insert_of(rows: int) -> str:
    return "INSERT INTO t (a, b, c, d, e) VALUES\n" + ",\n".join([ROW] * rows) + ";"


def test_one_insert_of_thousands_of_rows_is_one_statement() -> None:
    # 1,249 rows (about 70,000 tokens) broke sqlparse.parse's 10,000-token grouping limit
    big = insert_of(1_249)
    assert split_sql(big + "\nCREATE INDEX i ON t (a);") == [big, "CREATE INDEX i ON t (a);"]


def test_a_long_statement_is_kept_whole_in_bounded_memory() -> None:
    import tracemalloc

    big = insert_of(4_000)  # ~220 KB, ~70,000 tokens in one statement (each used to be a Token object)
    tracemalloc.start()
    try:
        statements = split_sql(big + "\nSELECT 1;")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert statements == [big, "SELECT 1;"]
    # no per-token objects are kept: the statements themselves plus a small constant share
    assert peak < 3 * len(big), f"peak {peak} bytes for a {len(big)}-byte statement"


def test_iter_statements_streams_and_stops_early() -> None:
    from airflow_provider_shardmigrate.core.sqltext import has_statement, iter_statements

    script = "-- header\n/* nothing */ ;\nSELECT 1;\n" + insert_of(10)
    first = next(iter_statements(script))
    assert first.endswith("SELECT 1;")
    assert has_statement(script)
    assert not has_statement("-- only\n/* comments */;\n  ;\n")


def test_split_results_are_cached_by_content_and_safe_to_mutate() -> None:
    script = "CREATE TABLE a (id int);\nCREATE TABLE b (id int);"
    first = split_sql(script)
    first.append("DROP TABLE everything;")  # a caller mutating its list must not poison the cache
    assert split_sql(script) == ["CREATE TABLE a (id int);", "CREATE TABLE b (id int);"]
    from airflow_provider_shardmigrate.core import sqltext

    before = sqltext.split_cache_info().hits
    split_sql(str(script))
    assert sqltext.split_cache_info().hits == before + 1


def test_mysql_block_bodies_with_declare_and_loops_stay_whole() -> None:
    procedure = (
        "CREATE PROCEDURE fill() BEGIN DECLARE i INT DEFAULT 0; WHILE i < 3 DO INSERT INTO t VALUES (i); "
        "SET i = i + 1; END WHILE; END;"
    )
    assert split_sql(procedure + "\nSELECT 1;") == [procedure, "SELECT 1;"]


def test_transaction_begin_is_its_own_statement() -> None:
    assert split_sql("BEGIN;\nCREATE TABLE a (id int);\nCOMMIT;") == ["BEGIN;", "CREATE TABLE a (id int);", "COMMIT;"]


TOKEN_CORPUS = [
    insert_of(50),
    r"INSERT INTO t VALUES (-1, 0x1F, 1.5E-3, .5, 1., 12abc, 'a''b', 'c\'d', N'x', (1,(2)));",
    "SELECT a,b FROM t WHERE x IN (1,2) AND y = '1;2' -- c,1\n/* 3,4 */ ORDER BY 1 DESC;",
    "CREATE FUNCTION f() RETURNS int AS $$ SELECT 1, 2; $$ LANGUAGE sql; SELECT $1, $tag$ ( $tag$;",
    "CREATE TRIGGER t BEFORE INSERT ON c FOR EACH ROW BEGIN IF NEW.x < 0 THEN SET NEW.x = 0; END IF; END;",
    """SELECT x::int, arr[1], [bracket name], `back,tick`, "dq,name", 1+2, 3.14.15, '' , '''';""",
    "unterminated 'string, (paren 12",
]


@pytest.mark.parametrize("script", TOKEN_CORPUS)
def test_the_lexer_shortcuts_yield_exactly_sqlparses_tokens(script: str) -> None:
    from sqlparse import lexer as default

    from airflow_provider_shardmigrate.core.sqltext import lexer

    assert list(lexer().get_tokens(script)) == list(default.tokenize(script))


@pytest.mark.parametrize("quote", ["'", '"', "`"])
def test_the_quoted_text_shortcuts_match_what_sqlparse_matches(quote: str) -> None:
    """Every text over the quote, a backslash and a letter up to 7 characters long lexes the same."""
    import itertools

    from sqlparse import lexer as default

    from airflow_provider_shardmigrate.core.sqltext import lexer

    for length in range(1, 8):
        for chars in itertools.product((quote, "\\", "a"), repeat=length):
            text = quote + "".join(chars)
            assert list(lexer().get_tokens(text)) == list(default.tokenize(text)), repr(text)


def test_a_long_literal_is_lexed_in_bounded_memory() -> None:
    import tracemalloc

    literal = "'" + "x;y " * 100_000 + "'"  # 400 KB in one string literal
    tracemalloc.start()
    try:
        statements = split_sql(f"INSERT INTO t VALUES ({literal});")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert statements == [f"INSERT INTO t VALUES ({literal});"]
    assert peak < 4 * len(literal), f"peak {peak} bytes for a {len(literal)}-byte literal"
