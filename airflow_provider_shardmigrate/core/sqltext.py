"""Splitting SQL scripts into statements with sqlparse (comments, quoted semicolons, dollar quotes,
BEGIN...END bodies), so non-transactional engines can run and count statements one by one."""

from __future__ import annotations


def split_sql(script: str) -> list[str]:
    """Statements of ``script`` in order; statements that are only comments are dropped."""
    import sqlparse

    statements = []
    for statement in sqlparse.split(script):
        if sqlparse.format(statement, strip_comments=True).strip().strip(";").strip():
            statements.append(statement.strip())
    return statements


def preview(statement: str, limit: int = 160) -> str:
    """One line of a statement for error messages and history rows."""
    line = " ".join(statement.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."
