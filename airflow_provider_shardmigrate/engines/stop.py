"""Cancel the shard's statement in the database the moment the process is told to stop.

Airflow stops a running task (marked failed or success in the UI, cleared, its heartbeat refused) with
SIGTERM, then SIGKILL five seconds later; Ctrl-C sends SIGINT to the CLI. Python runs a signal's handler in
the main thread only once the current C call returns -- and a database driver blocked on a statement
(mysqlclient, psycopg2, pymssql) returns only when the statement ends, so the handler, and anything it asks
for, would wait for the whole DDL (or until SIGKILL, after which a MySQL/MariaDB statement in flight may still
complete on the server without its history row counting it).

:class:`StopWatcher` puts a socket behind :func:`signal.set_wakeup_fd`: the interpreter's C-level handler
writes the signal's number there at once, whatever the main thread is doing, and a watcher thread asks the
engine to cancel its statement (``ShardEngine.cancel``: PostgreSQL's cancel request, MySQL/MariaDB ``KILL
QUERY`` from a second connection, SQLite's interrupt). The statement then fails in the database, the Python
handler runs (the operators' ``on_kill`` raises ``AirflowTaskTerminated``), and the per-shard protocol rolls
back or records how far the shard got, and releases its lock, before the SIGKILL.

Only in the main thread (the only one that can set the wakeup fd), and only for signals that have a Python
handler (for the others the interpreter writes nothing: the default SIGTERM ends the process at once).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
from types import TracebackType
from typing import Any

log = logging.getLogger(__name__)

#: The signals that mean "stop": Airflow's SIGTERM, and SIGINT (Ctrl-C, or the first step of Airflow's
#: escalation when it starts from SIGINT).
STOP_SIGNALS = frozenset(int(s) for s in (signal.SIGTERM, signal.SIGINT))
#: How long leaving the block waits for a cancel in progress (a MySQL cancel opens a connection, bounded
#: by its own connect timeout).
JOIN_TIMEOUT_S = 10.0


class StopWatcher:
    """``with StopWatcher(engine):`` -- while inside, SIGTERM/SIGINT cancels ``engine``'s statement at once."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine
        self._thread: threading.Thread | None = None
        self._read: socket.socket | None = None
        self._write: socket.socket | None = None
        self._previous = -1
        #: The signal that asked to stop, once one did (tests and logs read it).
        self.stopped_by: int | None = None

    def __enter__(self) -> StopWatcher:
        if threading.current_thread() is not threading.main_thread():
            return self
        if not any(callable(signal.getsignal(signum)) for signum in STOP_SIGNALS):
            return self
        self._read, self._write = socket.socketpair()
        self._write.setblocking(False)  # the interpreter requires a non-blocking wakeup fd
        try:
            self._previous = signal.set_wakeup_fd(self._write.fileno(), warn_on_full_buffer=False)
        except (ValueError, OSError) as exc:  # not the main interpreter, or the fd refused
            log.debug("no stop watcher: %s", exc)
            self._close_sockets()
            return self
        self._thread = threading.Thread(target=self._watch, name=f"shardmigrate-stop-{self._engine.shard_id}")
        self._thread.daemon = True
        self._thread.start()
        return self

    def _watch(self) -> None:
        assert self._read is not None
        while True:
            try:
                data = self._read.recv(64)
            except OSError:
                return
            if not data:  # the block ended
                return
            self._forward(data)
            stops = [signum for signum in data if signum in STOP_SIGNALS]
            if stops and self.stopped_by is None:
                self.stopped_by = stops[0]
                self._cancel(stops[0])

    def _forward(self, data: bytes) -> None:
        """Whoever had the wakeup fd before (an event loop) still hears every signal."""
        if self._previous >= 0:
            with contextlib.suppress(OSError):
                os.write(self._previous, data)

    def _cancel(self, signum: int) -> None:
        name = signal.Signals(signum).name
        cancel = getattr(self._engine, "cancel", None)
        if cancel is None:
            return
        log.warning("shard %s: %s received; cancelling the statement in the database", self._engine.shard_id, name)
        try:
            cancel()
        except Exception as exc:  # the statement then runs until its in-database deadline, as before
            log.warning("shard %s: could not cancel the statement: %s", self._engine.shard_id, exc)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._thread is None:
            return
        signal.set_wakeup_fd(self._previous)
        assert self._write is not None
        with contextlib.suppress(OSError):
            self._write.shutdown(socket.SHUT_WR)  # the watcher reads the end and leaves
        self._thread.join(JOIN_TIMEOUT_S)
        self._thread = None
        self._close_sockets()

    def _close_sockets(self) -> None:
        for sock in (self._read, self._write):
            if sock is not None:
                sock.close()
        self._read = self._write = None
