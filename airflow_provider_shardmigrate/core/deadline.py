"""A per-shard time budget that every engine turns into its database's own timeout mechanism."""

from __future__ import annotations

import time


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expires_at = time.monotonic() + seconds

    def remaining(self) -> float:
        return max(0.0, self.expires_at - time.monotonic())

    def expired(self) -> bool:
        return time.monotonic() >= self.expires_at

    def remaining_ms(self, floor: int = 1) -> int:
        return max(floor, int(self.remaining() * 1000))
