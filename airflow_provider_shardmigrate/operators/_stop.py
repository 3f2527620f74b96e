"""What a shard-running task does when Airflow stops it.

Airflow 3 stops a running task (marked failed or success, cleared, its heartbeat refused) with SIGTERM, whose
handler only calls the operator's ``on_kill``, and SIGKILL five seconds later. By then the engine's stop
watcher (engines/stop.py) has asked the database to cancel the statement; raising here lets the per-shard
protocol roll the shard back or record how far it got, release its lock and end the task by the stop -- a
lane starts no further shard -- instead of leaving it to the SIGKILL.
"""

from __future__ import annotations

import sys


class StopsOnKill:
    """Mixin for operators that work on shards: ``on_kill`` raises ``AirflowTaskTerminated``."""

    task_id: str

    def on_kill(self) -> None:
        from airflow.sdk.exceptions import AirflowTaskTerminated, AirflowTaskTimeout

        if isinstance(sys.exc_info()[1], AirflowTaskTimeout):
            # Airflow also calls on_kill while its execution_timeout's exception propagates: that exception
            # already stops the task (and keeps its retry semantics).
            return
        raise AirflowTaskTerminated(f"task {self.task_id} was told to stop (SIGTERM)")
