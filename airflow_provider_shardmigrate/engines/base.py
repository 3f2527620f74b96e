"""The interface every engine implements, shaped for all five databases.

The per-shard protocol (engines/runner.py) is written once against this interface. An engine only
knows how *its* database locks, keeps the history row, runs a step inside or outside a transaction,
and enforces the deadline server-side; it never decides what to do.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any, ClassVar

from airflow_provider_shardmigrate.core.deadline import Deadline
from airflow_provider_shardmigrate.core.history import HistoryRecord

#: One unit of work: a SQL statement for SQL engines, a command document for MongoDB.
Step = Any


class ShardEngine(ABC):
    """Database talk for one shard. Use as a context manager: the connection lives inside ``with``."""

    #: Airflow connection types this engine serves.
    conn_types: ClassVar[tuple[str, ...]]
    #: Script variant this engine runs (``up.<variant>.sql``; MongoDB: ``mongo``).
    variant: ClassVar[str]
    #: Whether DDL and the history row can commit in one transaction.
    transactional_ddl: ClassVar[bool]

    def __init__(self, conn_id: str, shard_id: str) -> None:
        self.conn_id = conn_id
        self.shard_id = shard_id

    def __enter__(self) -> ShardEngine:
        self.open()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @abstractmethod
    def open(self) -> None:
        """Connect; raise a ShardMigrateError naming the shard when the database cannot be reached."""

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def ensure_history_table(self) -> None: ...

    @abstractmethod
    def read_history(self, migration_id: str) -> HistoryRecord | None:
        """The row for ``migration_id``; None when absent or when the history table does not exist yet."""

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
