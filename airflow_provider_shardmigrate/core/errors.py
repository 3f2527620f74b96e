"""Stable error codes (docs/contracts.md) and the exceptions that carry them.

Every failure a user can see -- in XCom, in a task log, in the CLI -- carries one of these codes, so
automation can branch on ``.code`` instead of parsing messages.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum


class ErrorCode(StrEnum):
    MIGRATION_FAILED = "shardmigrate.migration_failed"
    MIGRATION_TIMEOUT = "shardmigrate.migration_timeout"
    ROLLBACK_FAILED = "shardmigrate.rollback_failed"
    DRIFT_DETECTED = "shardmigrate.drift_detected"
    INVALID_SCRIPT = "shardmigrate.invalid_script"
    SCHEMA_COMPARISON_FAILED = "shardmigrate.schema_comparison_failed"
    MIGRATION_NOT_FOUND = "shardmigrate.migration_not_found"
    INVALID_TOPOLOGY = "shardmigrate.invalid_topology"
    LOCK_TIMEOUT = "shardmigrate.lock_timeout"
    INVALID_PARAMS = "shardmigrate.invalid_params"
    OUT_OF_ORDER = "shardmigrate.out_of_order"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input, located precisely enough to fix it without guessing."""

    message: str
    source: str | None = None  # file or folder
    field: str | None = None  # dotted path inside the file, e.g. ``shards[2].conn_id``

    def __str__(self) -> str:
        where = ": ".join(part for part in (self.source, f"field '{self.field}'" if self.field else None) if part)
        return f"{where}: {self.message}" if where else self.message


class ShardMigrateError(Exception):
    """Base of every error this package raises on purpose; ``code`` is one of :class:`ErrorCode`."""

    code: ErrorCode = ErrorCode.MIGRATION_FAILED

    def __init__(
        self,
        message: str,
        *,
        code: ErrorCode | None = None,
        shard_id: str | None = None,
        problems: Iterable[Problem] = (),
    ) -> None:
        if code is not None:
            self.code = code
        self.shard_id = shard_id
        self.problems: tuple[Problem, ...] = tuple(problems)
        self.message = message
        super().__init__(self._render())

    def _render(self) -> str:
        head = f"[{self.code}] "
        if self.shard_id:
            head += f"shard '{self.shard_id}': "
        text = head + self.message
        if len(self.problems) > 1 or (self.problems and str(self.problems[0]) != self.message):
            text += "".join(f"\n  - {problem}" for problem in self.problems)
        return text


class InvalidScriptError(ShardMigrateError):
    code = ErrorCode.INVALID_SCRIPT


class InvalidTopologyError(ShardMigrateError):
    code = ErrorCode.INVALID_TOPOLOGY


class MigrationFailedError(ShardMigrateError):
    code = ErrorCode.MIGRATION_FAILED


class MigrationTimeoutError(ShardMigrateError):
    code = ErrorCode.MIGRATION_TIMEOUT


class LockTimeoutError(ShardMigrateError):
    code = ErrorCode.LOCK_TIMEOUT


class RollbackFailedError(ShardMigrateError):
    code = ErrorCode.ROLLBACK_FAILED


class DriftDetectedError(ShardMigrateError):
    code = ErrorCode.DRIFT_DETECTED


class SchemaComparisonFailedError(ShardMigrateError):
    code = ErrorCode.SCHEMA_COMPARISON_FAILED


class MigrationNotFoundError(ShardMigrateError):
    code = ErrorCode.MIGRATION_NOT_FOUND


class InvalidParamsError(ShardMigrateError):
    """A trigger's ``conf`` the DAG does not accept (a misspelled Param must never run real DDL)."""

    code = ErrorCode.INVALID_PARAMS


class OutOfOrderError(ShardMigrateError):
    """A shard lacks a migration that must come first (an earlier id of the folder, or one in ``depends_on``)."""

    code = ErrorCode.OUT_OF_ORDER


def raise_if_problems(problems: list[Problem], error: type[ShardMigrateError], summary: str) -> None:
    """Raise ``error`` listing *all* problems at once, so a user fixes a file in one pass."""
    if problems:
        message = str(problems[0]) if len(problems) == 1 else f"{summary} ({len(problems)} problems)"
        raise error(message, problems=problems)
