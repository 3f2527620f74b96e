"""Reading task-instance timestamps from the REST API: intervals, overlap, latencies."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any


def ts(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


@dataclass(frozen=True)
class Interval:
    """One task instance's run: [start, end] with its shard label and state."""

    task_id: str
    map_index: int
    label: str
    state: str
    start: datetime
    end: datetime
    scheduled: datetime | None
    queued: datetime | None

    @classmethod
    def of(cls, ti: dict[str, Any]) -> Interval:
        start, end = ts(ti["start_date"]), ts(ti["end_date"])
        assert start is not None and end is not None, f"task {ti['task_id']}[{ti['map_index']}] has no start/end: {ti}"
        return cls(
            task_id=ti["task_id"],
            map_index=ti["map_index"],
            label=ti.get("rendered_map_index") or ti["task_id"].rsplit(".", 1)[-1],
            state=ti["state"],
            start=start,
            end=end,
            scheduled=ts(ti.get("scheduled_when")),
            queued=ts(ti.get("queued_when")),
        )

    def overlaps(self, other: Interval) -> bool:
        return self.start < other.end and other.start < self.end


def intervals(tis: Iterable[dict[str, Any]], prefix: str = "shards.") -> list[Interval]:
    """Intervals of the task instances that ran (skipped/not-started ones without a start are left out)."""
    return [Interval.of(ti) for ti in tis if ti["task_id"].startswith(prefix) and ti["start_date"] and ti["end_date"]]


def max_concurrent(spans: Sequence[Interval]) -> int:
    """Most intervals open at one instant (an interval ending exactly when another starts does not overlap)."""
    events = sorted([(s.start, 1) for s in spans] + [(s.end, -1) for s in spans], key=lambda e: (e[0], e[1]))
    peak = current = 0
    for _, delta in events:
        current += delta
        peak = max(peak, current)
    return peak


def seconds(a: datetime, b: datetime) -> float:
    return (b - a).total_seconds()


def summary(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"n": len(values), "median": statistics.median(values), "p95": p95, "max": ordered[-1]}


def start_latencies(spans: Sequence[Interval]) -> dict[str, list[float]]:
    """Per-task latencies: scheduled -> start and queued -> start, in seconds."""
    return {
        "scheduled_to_start": [seconds(s.scheduled, s.start) for s in spans if s.scheduled],
        "queued_to_start": [seconds(s.queued, s.start) for s in spans if s.queued],
    }
