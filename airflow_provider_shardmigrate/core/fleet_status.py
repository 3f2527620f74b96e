"""The fleet's schema lifecycle at a glance: the shard x migration matrix (docs/contracts.md, fleet status).

Each shard's history table says, per migration, ``applied``, ``baselined``, ``failed``, ``running``,
``rolled_back`` -- or nothing (``not_applied``). The matrix keeps one character per migration per shard, so
10,000 shards x 50 migrations stay a compact XCom the UI reads without opening a shard connection. The
``shardmigrate status`` command and the ``shardmigrate_status`` DAG build it from the same function.

Pure: ids, shards and what each shard's history said in; the matrix out.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from airflow_provider_shardmigrate.core.history import HOLDS, NOT_APPLIED, HistoryRecord, HistoryStatus
from airflow_provider_shardmigrate.core.status import redact
from airflow_provider_shardmigrate.core.topology import Shard

UNREADABLE = "unreadable"
#: One character per state, as the matrix's rows spell them.
LEGEND: dict[str, str] = {
    "A": HistoryStatus.APPLIED.value,
    "B": HistoryStatus.BASELINED.value,
    "F": HistoryStatus.FAILED.value,
    "R": HistoryStatus.RUNNING.value,
    "X": HistoryStatus.ROLLED_BACK.value,
    "-": NOT_APPLIED,
    "?": UNREADABLE,
}
_LETTER = {state: letter for letter, state in LEGEND.items()}
_HOLDING = frozenset(_LETTER[status.value] for status in HOLDS)
#: Errors are clipped in the matrix (the full text is in the task log / the CLI's table).
MAX_ERROR = 300

#: Exit codes of ``shardmigrate status``.
EXIT_COMPLETE, EXIT_INCOMPLETE, EXIT_UNREADABLE = 0, 1, 2


@dataclass(frozen=True)
class ShardHistory:
    """What reading one shard's history gave: its engine, and its rows or why they could not be read."""

    engine: str | None
    rows: tuple[HistoryRecord, ...] = ()
    error: str | None = None  # ``[code] message`` when the shard could not be read


@dataclass(frozen=True)
class ShardRow:
    id: str
    active: bool
    engine: str | None
    row: str
    error: str | None

    @property
    def readable(self) -> bool:
        return self.error is None

    def complete(self) -> bool:
        """Every migration applied or baselined."""
        return self.readable and all(letter in _HOLDING for letter in self.row)


def letters(migration_ids: Sequence[str], rows: Sequence[HistoryRecord]) -> str:
    """One character per migration (in ``migration_ids`` order) for a shard with these history rows."""
    by_id = {row.migration_id: row for row in rows}
    return "".join(_LETTER[by_id[mid].status.value] if mid in by_id else _LETTER[NOT_APPLIED] for mid in migration_ids)


@dataclass(frozen=True)
class FleetStatus:
    generated_at: datetime
    migrations: tuple[str, ...]
    shards: tuple[ShardRow, ...]

    @property
    def complete(self) -> bool:
        """Every active shard has every migration applied or baselined."""
        return all(shard.complete() for shard in self.shards if shard.active)

    def counts(self) -> dict[str, dict[str, int]]:
        """Per migration, how many shards (every row of the matrix) are in each state; states with none left out."""
        counts: dict[str, Counter[str]] = {mid: Counter() for mid in self.migrations}
        for shard in self.shards:
            for mid, letter in zip(self.migrations, shard.row, strict=True):
                counts[mid][LEGEND[letter]] += 1
        return {mid: dict(counter) for mid, counter in counts.items()}

    @property
    def exit_code(self) -> int:
        """2 when an active shard could not be read, 1 when an active shard lacks a migration, else 0."""
        if any(not shard.readable for shard in self.shards if shard.active):
            return EXIT_UNREADABLE
        return EXIT_COMPLETE if self.complete else EXIT_INCOMPLETE

    def to_xcom(self) -> dict[str, Any]:
        """The contract shape (docs/contracts.md): the summary fields, then the rows."""
        return {
            "generated_at": self.generated_at.astimezone(UTC).isoformat(),
            "migrations": list(self.migrations),
            "shards": [
                {"id": s.id, "active": s.active, "engine": s.engine, "row": s.row, "error": s.error}
                for s in self.shards
            ],
            "legend": dict(LEGEND),
            "counts": self.counts(),
            "complete": self.complete,
        }


def _row(shard: Shard, migration_ids: Sequence[str], read: ShardHistory | None) -> ShardRow:
    if read is None:
        return ShardRow(shard.id, shard.active, None, _LETTER[UNREADABLE] * len(migration_ids), "not read")
    if read.error is not None:
        error = redact(read.error)
        error = error if len(error) <= MAX_ERROR else error[: MAX_ERROR - 3] + "..."
        return ShardRow(shard.id, shard.active, read.engine, _LETTER[UNREADABLE] * len(migration_ids), error)
    return ShardRow(shard.id, shard.active, read.engine, letters(migration_ids, read.rows), None)


def fleet_status(
    migration_ids: Sequence[str],
    shards: Sequence[Shard],
    reads: Mapping[str, ShardHistory],
    *,
    generated_at: datetime | None = None,
) -> FleetStatus:
    """The matrix of ``shards`` (topology order, inactive ones included) x ``migration_ids`` (folder order).

    Rows of migrations that are not in the folder (any more) are not shown; a shard missing from ``reads`` is
    unreadable.
    """
    return FleetStatus(
        generated_at=generated_at or datetime.now(UTC),
        migrations=tuple(migration_ids),
        shards=tuple(_row(shard, migration_ids, reads.get(shard.id)) for shard in shards),
    )
