"""Splitting T-SQL scripts (SQL Server shards) into the steps the engine runs: ``GO`` batches, then statements.

SQL Server's own tools (sqlcmd, SSMS) cut a script into *batches* at lines holding only ``GO``; the server
never sees ``GO``. A batch is also the scope of T-SQL's local variables and the whole body of a procedure,
function, trigger or view, so splitting a batch at its semicolons is only safe where the statements stand on
their own. The rules, applied in one linear pass (strings ``'...'``, quoted ``"..."`` and bracketed ``[...]``
identifiers, ``--`` comments and nested ``/* */`` comments are skipped, so nothing inside them counts):

* **Batches.** A line holding only ``GO`` (any case, surrounding blanks and a trailing ``--`` comment allowed)
  ends a batch. ``GO <count>`` (sqlcmd's "run the batch N times") is refused: a migration is a fixed list of
  steps, counted and resumed one by one -- write the repetition as a ``WHILE`` loop.
* **Statements.** Inside a batch, a top-level ``;`` ends a statement, so a non-transactional migration
  counts and resumes statement by statement, as on the other engines. A ``;`` inside ``BEGIN ... END``
  (``TRY``/``CATCH`` included) or ``CASE ... END``, or followed by ``ELSE``, ends nothing.
* **Module definitions.** ``CREATE [OR ALTER] | ALTER`` ``PROCEDURE``/``PROC``/``FUNCTION``/``TRIGGER``/
  ``VIEW`` runs to the end of its batch, as SQL Server reads it (the body is the rest of the batch).
* **Whole batches.** A batch that uses a local variable (``@name``), ``GOTO`` or ``RETURN`` runs whole, as one
  step: its statements share the batch's scope and control flow.

Statements without a ``;`` between them stay one step (the server runs them in one batch); end statements
with ``;`` (or ``GO``) to have them counted one by one. Pure: no database.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

from airflow_provider_shardmigrate.core.errors import InvalidScriptError

#: A batch separator line. Only at a line start in code (never inside a string or comment).
_GO = r"^[ \t]*GO(?:[ \t]+(?P<count>\d+))?[ \t]*(?:--[^\n]*)?$"
_TOKENS = re.compile(
    rf"(?P<go>{_GO})"
    r"|(?P<str>'(?:[^']|'')*(?:'|\Z))"
    r'|(?P<dq>"(?:[^"]|"")*(?:"|\Z))'
    r"|(?P<br>\[(?:[^\]]|\]\])*(?:\]|\Z))"
    r"|(?P<line>--[^\n]*)"
    r"|(?P<block>/\*)"
    r"|(?P<semi>;)"
    r"|(?P<var>@@?[\w#$@]*)"
    r"|(?P<word>[^\W\d][\w$#@]*)"
    r"|(?P<other>[^\s])",
    re.MULTILINE | re.IGNORECASE,
)
_COMMENT_EDGES = re.compile(r"/\*|\*/")

#: Objects whose definition is the rest of the batch.
_MODULES = frozenset({"PROC", "PROCEDURE", "FUNCTION", "TRIGGER", "VIEW"})
#: ``BEGIN`` followed by one of these is not a block.
_NOT_BLOCKS = frozenset({"TRAN", "TRANSACTION", "DISTRIBUTED", "DIALOG", "CONVERSATION"})
#: Words that give the batch control flow its statements cannot be split from.
_WHOLE_BATCH_WORDS = frozenset({"GOTO", "RETURN"})


def _block_comment_end(script: str, start: int) -> int:
    """End of the (nested, as SQL Server nests them) block comment opening at ``start``."""
    depth = 0
    for edge in _COMMENT_EDGES.finditer(script, start):
        depth += 1 if edge.group() == "/*" else -1
        if depth == 0:
            return edge.end()
    return len(script)


def _is_module(head: list[str]) -> bool:
    """``CREATE PROCEDURE``, ``ALTER VIEW``, ``CREATE OR ALTER TRIGGER``..."""
    if len(head) >= 2 and head[0] in ("CREATE", "ALTER") and head[1] in _MODULES:
        return True
    return len(head) >= 4 and head[:3] == ["CREATE", "OR", "ALTER"] and head[3] in _MODULES


@dataclass
class _Batch:
    """The statements of one batch, found while its tokens go by (offsets into the script)."""

    statements: list[tuple[int, int]] = field(default_factory=list)
    #: The batch runs as one step (a local variable, GOTO, RETURN).
    whole: bool = False
    #: Where a module definition starts: it runs to the end of the batch.
    module_at: int | None = None
    # the statement being read
    stmt_start: int | None = None
    last_end: int = 0
    head: list[str] = field(default_factory=list)
    blocks: list[str] = field(default_factory=list)
    pending_begin: bool = False
    #: A top-level ';' that ends the statement -- unless ELSE follows it.
    ended_at: int | None = None

    def code(self, start: int, end: int, word: str | None = None) -> None:
        """A meaningful token at ``start``..``end`` (``word``: its upper-cased text when it is a word)."""
        if self.ended_at is not None:
            if word == "ELSE":
                self.ended_at = None
            else:
                self.close_statement()
        if self.stmt_start is None:
            self.stmt_start = start
        if word is not None and self.module_at is None:
            self._word(word)
        self.last_end = end

    def variable(self) -> None:
        if self.module_at is None:  # a module's parameters and variables belong to its body
            self.whole = True

    def _word(self, word: str) -> None:
        if self.pending_begin:
            self.pending_begin = False
            if word not in _NOT_BLOCKS:
                self.blocks.append("BEGIN")
        if len(self.head) < 4:
            self.head.append(word)
            if _is_module(self.head):
                self.module_at = self.stmt_start
                return
        if word == "BEGIN":
            self.pending_begin = True
        elif word == "CASE":
            self.blocks.append("CASE")
        elif word == "END" and self.blocks:
            self.blocks.pop()
        elif word in _WHOLE_BATCH_WORDS:
            self.whole = True

    def semicolon(self, end: int) -> None:
        if self.module_at is not None:
            return
        if self.pending_begin:  # ``BEGIN;`` is not T-SQL: keep it a block so nothing is cut inside it
            self.pending_begin = False
            self.blocks.append("BEGIN")
        if self.ended_at is not None:  # ';;': the first one ended the statement already
            self.close_statement()
        if self.stmt_start is not None:
            self.last_end = end
            if not self.blocks:
                self.ended_at = end

    def close_statement(self) -> None:
        if self.stmt_start is not None:
            self.statements.append((self.stmt_start, self.ended_at if self.ended_at is not None else self.last_end))
        self.stmt_start, self.ended_at, self.head, self.blocks = None, None, [], []
        self.pending_begin = False

    def steps(self, script: str, end: int) -> list[str]:
        """The batch's steps, the batch ending at ``end``."""
        if self.module_at is not None:
            self.stmt_start, self.ended_at, self.last_end = self.module_at, None, end
        self.close_statement()
        if not self.statements:
            return []
        if self.whole:
            return [script[self.statements[0][0] : self.statements[-1][1]].strip()]
        return [script[start:stop].strip() for start, stop in self.statements]


def _go_problem(script: str, at: int, count: str) -> InvalidScriptError:
    line = script.count("\n", 0, at) + 1
    return InvalidScriptError(
        f"line {line}: 'GO {count}' repeats a batch {count} times (a sqlcmd feature); a migration is a fixed "
        "list of steps -- write the repetition as a WHILE loop, or the batch out N times"
    )


def _scan(script: str) -> list[str]:
    steps: list[str] = []
    batch = _Batch()
    pos = 0
    while True:
        match = _TOKENS.search(script, pos)
        if match is None:
            break
        kind, start, end = match.lastgroup, match.start(), match.end()
        if kind == "go":
            if match.group("count") is not None:
                raise _go_problem(script, start, match.group("count"))
            steps.extend(batch.steps(script, start))
            batch = _Batch()
        elif kind == "block":
            end = _block_comment_end(script, start)
        elif kind == "semi":
            batch.semicolon(end)
        elif kind != "line":
            batch.code(start, end, match.group().upper() if kind == "word" else None)
            if kind == "var" and not match.group().startswith("@@"):
                batch.variable()
        pos = end
    steps.extend(batch.steps(script, len(script)))
    return [step for step in steps if step]


@lru_cache(maxsize=8)
def _split_cached(script: str) -> tuple[str, ...]:
    return tuple(_scan(script))


def split_tsql(script: str) -> list[str]:
    """The steps of a T-SQL script in order (see the module's rules); comment-only parts are dropped.

    Raises InvalidScriptError (naming the line) for ``GO <count>``. Cached by content, like split_sql.
    """
    return list(_split_cached(script))


def has_tsql_statement(script: str) -> bool:
    return bool(_split_cached(script))
