"""Splitting SQL scripts into statements, so engines can run and count statements one by one.

sqlparse's lexer and its statement-splitting rules (comments, quoted semicolons, PostgreSQL dollar
quotes, ``BEGIN ... END`` bodies of triggers and procedures) decide where a statement ends -- but
without sqlparse's *grouping* (``sqlparse.parse``), which is what refused a single 1,249-row INSERT
(its 10,000-token limit), grew super-linearly and kept a Python object per token (1.9 GB for 50 MB).
Here only offsets are kept: time is linear in the script's length and memory is the statements'
text plus a constant. ``bench/bench_split.py`` measures both.

Every path -- loading a migration, ``shardmigrate validate``, the engines -- splits with
:func:`split_sql`, so a script that validates is a script the engines can run. SQL Server shards are the
exception: their scripts are T-SQL, cut at ``GO`` lines into batches first (core/tsql.py, used the same way
by loading, ``validate`` and the SQL Server engine).
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache
from typing import Any, NamedTuple

#: Script files larger than this are refused when a migration is loaded (core/scripts.py): splitting
#: costs 0.6-0.9 s per MB (sqlparse's lexer is pure Python; bench/bench_split.py), every shard task
#: splits its script again before it takes the shard's lock, and the DAG file reads every script at
#: each parse. Bulk data loads beyond this belong in a database tool (COPY, LOAD DATA), not a migration.
MAX_SCRIPT_BYTES = 64 * 1024 * 1024


class _Span(NamedTuple):
    start: int
    end: int
    meaningful: bool  # holds something besides whitespace, comments and ';'


def _splitter() -> Any:
    """A sqlparse StatementSplitter that keeps offsets instead of a Token object per token."""
    from sqlparse import tokens as T
    from sqlparse.engine.statement_splitter import StatementSplitter

    ends_statement_ws = (T.Whitespace, T.Comment.Single)  # what may follow ';' inside the same statement
    inert = (T.Whitespace, T.Newline, T.Comment.Single, T.Comment.Multiline)

    class OffsetSplitter(StatementSplitter):  # type: ignore[misc]
        """``StatementSplitter.process`` (sqlparse 0.6) with the same level rules, tracking offsets.

        The level bookkeeping (parentheses, CREATE ... BEGIN ... END, DECLARE, IF/CASE/LOOP nesting,
        ``BEGIN;`` as a transaction) is sqlparse's own ``_change_splitlevel``; only the loop that
        collected tokens is restated here, and tests/core/test_sqltext.py pins its behaviour.
        """

        def spans(self, stream: Iterator[tuple[Any, str]]) -> Iterator[_Span]:
            start = pos = 0
            meaningful = False
            for ttype, value in stream:
                if self.consume_ws and ttype not in ends_statement_ws:
                    yield _Span(start, pos, meaningful)
                    self._reset()  # type: ignore[no-untyped-call]
                    start, meaningful = pos, False
                self.level += self._change_splitlevel(ttype, value)  # type: ignore[no-untyped-call]
                pos += len(value)
                semicolon = ttype is T.Punctuation and value == ";"
                if not meaningful and not semicolon and ttype not in T.Whitespace and ttype not in T.Comment:
                    meaningful = True
                if semicolon:
                    self._seen_begin = False
                    if self.level <= 0 and "BEGIN" not in self._block_stack:
                        self.consume_ws = True
                elif ttype is T.Keyword and value.split()[0] == "GO":
                    self.consume_ws = True
                elif ttype not in inert and not (ttype is T.Keyword and value.upper() == "BEGIN"):
                    self._seen_begin = False
            if pos > start:
                yield _Span(start, pos, meaningful)

    return OffsetSplitter()  # type: ignore[no-untyped-call]


@lru_cache(maxsize=1)
def lexer() -> Any:
    """sqlparse's lexer with its own rules, plus shortcuts tried first for the tokens bulk data is made of.

    sqlparse tries its ~60 token rules in order at every position, so a ``,`` or a number in a
    100,000-row INSERT is reached after some fifty failed attempts. Each shortcut below is, at any
    position where it matches, the first of sqlparse's own rules that matches there (no earlier rule
    can match a ``,``, ``(``, ``)``, a digit or a quote), so the token stream is exactly sqlparse's
    (tests/core/test_sqltext.py compares them); it halves the time of data-heavy scripts.
    """
    from sqlparse import keywords
    from sqlparse import tokens as T
    from sqlparse.lexer import Lexer

    shortcuts = [
        (r"[,()]", T.Punctuation),
        (r"(?=\d)-?0x[\dA-F]+", T.Number.Hexadecimal),
        (r"(?=\d)-?\d+(\.\d+)?E-?\d+", T.Number.Float),
        (r"(?=\d)(?![_A-ZÀ-Ü])-?(\d+(\.\d*)|\.\d+)(?![_A-ZÀ-Ü])", T.Number.Float),
        (r"(?=\d)(?![_A-ZÀ-Ü])-?\d+(?![_A-ZÀ-Ü])", T.Number.Integer),
        # sqlparse's quoted-text rules ('(''|\\'|[^'])*' and its "..." and `...` twins) repeat a group per
        # character, and Python's regex engine keeps a backtracking record per repetition: 150 bytes per
        # character of a long literal. These match the same text (the first match found is the same:
        # backtracking into a run of plain characters can never end the literal) a run at a time.
        (r"'(?:''|\\'|[^'\\]+|\\)*'", T.String.Single),
        (r'"(?:""|\\"|[^"\\]+|\\)*"', T.String.Symbol),
        (r"`(?:``|[^`]+)*`", T.Name),
    ]
    instance = Lexer()
    instance.default_initialization()  # type: ignore[no-untyped-call]  # sqlparse's keyword tables and rules
    instance.set_SQL_REGEX([*shortcuts, *keywords.SQL_REGEX])  # type: ignore[no-untyped-call]
    return instance


def iter_statements(script: str) -> Iterator[str]:
    """Statements of ``script`` in order, one at a time; statements that are only comments are dropped."""
    for span in _splitter().spans(lexer().get_tokens(script)):
        if span.meaningful:
            yield script[span.start : span.end].strip()


def has_statement(script: str) -> bool:
    """Whether ``script`` holds at least one statement; stops at the first one."""
    return next(iter_statements(script), None) is not None


@lru_cache(maxsize=8)
def _split_cached(script: str) -> tuple[str, ...]:
    return tuple(iter_statements(script))


def split_sql(script: str) -> list[str]:
    """Statements of ``script`` in order; statements that are only comments are dropped.

    Cached by the script's content (a few scripts per process): a process applying one migration to
    many shards, or loading it and then running it, splits each script once.
    """
    return list(_split_cached(script))


def split_cache_info() -> Any:
    return _split_cached.cache_info()


def preview(statement: str, limit: int = 160) -> str:
    """One line of a statement for error messages and history rows."""
    line = " ".join(statement.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."
