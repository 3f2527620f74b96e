"""The interface every engine implements, shaped for all five databases.

The per-shard protocol (engines/runner.py) is written once against this interface. An engine only
knows how *its* database locks, keeps the history row, runs a step inside or outside a transaction,
and enforces the deadline server-side; it never decides what to do.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from types import TracebackType
from typing import Any, ClassVar, Self

from airflow_provider_shardmigrate.core.deadline import Deadline
from airflow_provider_shardmigrate.core.history import HistoryRecord

#: One unit of work: a SQL statement for SQL engines, a command document for MongoDB.
Step = Any

#: Time budget (seconds) for connecting when an engine is opened without a deadline (``with engine:``).
DEFAULT_OPEN_TIMEOUT_S = 30.0


class ShardEngine(ABC):
    """Database talk for one shard.

    ``with engine.connected(deadline) as engine:`` opens the connection inside the shard's time budget (the
    runner, the CLI, introspection); ``with engine:`` opens it within :data:`DEFAULT_OPEN_TIMEOUT_S`.
    """

    #: Script variant this engine runs (``up.<variant>.sql``; MongoDB: ``mongo``).
    variant: ClassVar[str]
    #: Whether DDL and the history row can commit in one transaction.
    transactional_ddl: ClassVar[bool]

    def __init__(self, conn_id: str, shard_id: str) -> None:
        self.conn_id = conn_id
        self.shard_id = shard_id
        #: Prefix of the session's name where the database shows one (PostgreSQL ``application_name``).
        self.session_label = "shardmigrate"

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @contextmanager
    def connected(self, deadline: Deadline, *, read_only: bool = False) -> Iterator[Self]:
        """The engine, connected within ``deadline``, closed on exit."""
        self.open(deadline, read_only=read_only)
        try:
            yield self
        finally:
            self.close()

    @abstractmethod
    def open(self, deadline: Deadline | None = None, *, read_only: bool = False) -> None:
        """Connect within ``deadline`` (default: :data:`DEFAULT_OPEN_TIMEOUT_S`).

        A database that cannot be reached in time raises MigrationTimeoutError, one that refuses the
        connection MigrationFailedError, both naming the shard and never the password. ``read_only``
        sessions refuse writes and bound every statement by what is left of ``deadline``.
        """

    @abstractmethod
    def close(self) -> None: ...

    def cancel(self) -> None:
        """Stop the statement in flight; called from another thread when the process is told to stop
        (engines/stop.py). Engines that cannot leave it to their in-database deadline (this default)."""
        return None

    @abstractmethod
    def ensure_history_table(self) -> None: ...

    @abstractmethod
    def read_history(self, migration_id: str) -> HistoryRecord | None:
        """The row for ``migration_id``; None when absent or when the history table does not exist yet."""

    def read_history_rows(self, migration_ids: Sequence[str]) -> dict[str, HistoryRecord]:
        """The rows of ``migration_ids`` that exist, by migration id (the order check reads a migration's row
        and those of the migrations it needs at once). Engines override it with one query."""
        rows = (self.read_history(migration_id) for migration_id in dict.fromkeys(migration_ids))
        return {row.migration_id: row for row in rows if row is not None}

    @abstractmethod
    def list_history(self) -> list[HistoryRecord]: ...

    @abstractmethod
    def save_history(self, record: HistoryRecord) -> None:
        """Insert or replace the row, committed on return."""

    @abstractmethod
    def migration_lock(self, deadline: Deadline) -> AbstractContextManager[None]:
        """Hold the shard's migration lock; wait at most the deadline, else raise LockTimeoutError."""

    @abstractmethod
    def split(self, script: str) -> list[Step]: ...

    @abstractmethod
    def run_in_transaction(self, steps: list[Step], record: HistoryRecord, deadline: Deadline) -> None:
        """Run every step and save ``record`` in one transaction: all of it commits, or none of it."""

    @abstractmethod
    def run_step(self, step: Step, deadline: Deadline) -> None:
        """Run one step on its own (committed on return), interrupted server-side at the deadline."""

    @abstractmethod
    def query_scalar(self, query: str, deadline: Deadline) -> Any:
        """First column of the first row of a read-only query (canary validation); None for no row."""
