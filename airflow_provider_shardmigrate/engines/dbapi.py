"""What the server engines (PostgreSQL, MySQL/MariaDB) share: cursors that always close and drain,
the history table read through one SELECT, and error text scrubbed of the connection's password.

Each server engine keeps what differs -- its lock, its timeouts, how it maps driver errors (``_guarded``)
and how it creates and writes the history table.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar

from airflow_provider_shardmigrate.core.deadline import Deadline
from airflow_provider_shardmigrate.core.history import HISTORY_COLUMNS, HISTORY_TABLE, HistoryRecord, HistoryStatus
from airflow_provider_shardmigrate.core.status import redact
from airflow_provider_shardmigrate.engines.base import ShardEngine

T = TypeVar("T")

SELECT_HISTORY = f"SELECT {', '.join(HISTORY_COLUMNS)} FROM {HISTORY_TABLE}"


def record_from_row(row: Sequence[Any]) -> HistoryRecord:
    """A history row as the driver returns it; zone-less timestamps are UTC (MySQL DATETIME)."""
    data = dict(zip(HISTORY_COLUMNS, row, strict=True))
    for key in ("applied_at", "rolled_back_at"):
        if isinstance(data[key], datetime) and data[key].tzinfo is None:
            data[key] = data[key].replace(tzinfo=UTC)
    data["status"] = HistoryStatus(data["status"])
    data["description"] = data["description"] or ""
    return HistoryRecord(**data)


class DbApiEngine(ShardEngine):
    """A ShardEngine over one DB-API connection with ``%s`` placeholders."""

    #: One-row query telling whether the history table exists (parameter: its name).
    HISTORY_EXISTS_SQL: ClassVar[str]

    def __init__(self, conn_id: str, shard_id: str) -> None:
        super().__init__(conn_id, shard_id)
        self._secret: str | None = None
        self._history_seen = False

    def _cursor(self) -> Any:
        raise NotImplementedError

    def _guarded(self, action: Callable[[], T], deadline: Deadline | None, what: str) -> T:
        raise NotImplementedError

    def _scrub(self, text: str) -> str:
        return redact(text, self._secret)

    # -- low-level execution -----------------------------------------------------------------------
    def _execute(self, sql: str, params: Sequence[Any] | None = None) -> None:
        cursor = self._cursor()
        try:
            cursor.execute(sql, params)
            if cursor.description:
                cursor.fetchall()  # a statement that returns rows is drained before the next one
        finally:
            cursor.close()  # mysqlclient drains further result sets (CALL) here

    def _fetchone(self, sql: str, params: Sequence[Any] | None = None) -> Any:
        rows = self._fetchall(sql, params)
        return rows[0] if rows else None

    def _fetchall(self, sql: str, params: Sequence[Any] | None = None) -> list[Any]:
        cursor = self._cursor()
        try:
            cursor.execute(sql, params)
            return list(cursor.fetchall()) if cursor.description else []
        finally:
            cursor.close()

    # -- history -----------------------------------------------------------------------------------
    def _history_exists(self) -> bool:
        # Once seen, the table stays for this engine's short life: one catalog query per shard, not per call.
        if not self._history_seen:
            row = self._guarded(
                lambda: self._fetchone(self.HISTORY_EXISTS_SQL, (HISTORY_TABLE,)), None, "looking for the history table"
            )
            self._history_seen = bool(row and row[0])
        return self._history_seen

    def read_history(self, migration_id: str) -> HistoryRecord | None:
        if not self._history_exists():
            return None
        row = self._guarded(
            lambda: self._fetchone(f"{SELECT_HISTORY} WHERE migration_id = %s", (migration_id,)),
            None,
            "reading the history row",
        )
        return record_from_row(row) if row else None

    def list_history(self) -> list[HistoryRecord]:
        if not self._history_exists():
            return []
        rows = self._guarded(
            lambda: self._fetchall(f"{SELECT_HISTORY} ORDER BY migration_id"), None, "reading the history table"
        )
        return [record_from_row(row) for row in rows]
