"""Splitting SQL scripts into statements with sqlparse (comments, quoted semicolons, dollar quotes,
BEGIN...END bodies), so non-transactional engines can run and count statements one by one."""

from __future__ import annotations


def split_sql(script: str) -> list[str]:
    """Statements of ``script`` in order; statements that are only comments are dropped.

    One sqlparse pass: the tokens that split the script also tell whether a statement holds anything
    but whitespace, comments and its semicolon.
    """
    import sqlparse
    from sqlparse import tokens

    statements = []
    for statement in sqlparse.parse(script):
        meaningful = any(
            not token.is_whitespace and token.ttype not in tokens.Comment and not token.match(tokens.Punctuation, ";")
            for token in statement.flatten()  # type: ignore[no-untyped-call]
        )
        if meaningful:
            statements.append(str(statement).strip())
    return statements


def preview(statement: str, limit: int = 160) -> str:
    """One line of a statement for error messages and history rows."""
    line = " ".join(statement.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."
