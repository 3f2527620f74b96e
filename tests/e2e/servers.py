"""Servers the e2e tests start themselves, on loopback and a free port, with their data in a folder of the
run (never the machine's shared servers, which every other test uses):

* :class:`RedisServer` -- the deployment's own Celery broker, so a test can restart it;
* :class:`PostgresInstance` -- a PostgreSQL cluster of its own (``initdb`` + ``postgres`` from
  /usr/lib/postgresql/*/bin, run as the ``postgres`` user when the tests run as root);
* :class:`MariaDbInstance` -- a MariaDB server of its own (``mariadb-install-db`` + ``mariadbd``).

Each is a direct child of the test process in a session of its own, told by the kernel to stop
(``PR_SET_PDEATHSIG``) if the test process dies however it dies; :meth:`ServerProcess.restart` stops it
the way an operator's restart does (a clean, fast shutdown: sessions are cut, open transactions rolled
back) and starts it again on the same port and data. A server that cannot start raises
:class:`ServerError` naming the binary and its log.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import os
import pwd
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.e2e.deployment import free_port, tail

_PR_SET_PDEATHSIG = 1


class ServerError(RuntimeError):
    """A server of the test could not start or stop; the message names it and its log."""


def _preexec(stop_signal: int, user: str | None) -> Callable[[], None]:
    libc = ctypes.CDLL(None, use_errno=True)
    account = pwd.getpwnam(user) if user else None

    def setup() -> None:  # pragma: no cover - runs in the child between fork and exec
        if account is not None:
            os.setgid(account.pw_gid)
            os.setuid(account.pw_uid)
        # After setuid: changing credentials clears the parent-death signal.
        libc.prctl(_PR_SET_PDEATHSIG, stop_signal)

    return setup


class ServerProcess:
    """One server process: ``args`` started in ``folder``, ready when ``probe()`` returns without raising."""

    name = "server"
    #: The signal of a clean, fast shutdown (also what the kernel sends if the test process dies).
    stop_signal = signal.SIGTERM
    user: str | None = None

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log = folder / f"{self.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        #: Called after every start (the deployment records the new pid for its reaper).
        self.on_start: list[Callable[[], None]] = []

    def args(self) -> list[str]:
        raise NotImplementedError

    def probe(self) -> None:
        raise NotImplementedError

    def prepare(self) -> None:
        """One-time set-up of the data folder before the first start."""

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self, timeout: float = 60.0) -> None:
        if self.starts == 0:
            self.prepare()
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.args(),
                cwd=self.folder,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_preexec(self.stop_signal, self.user),
            )
        self.starts += 1
        for callback in self.on_start:
            callback()
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 60.0) -> None:
        end = time.monotonic() + timeout
        last: BaseException | None = None
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise ServerError(f"{self.name} exited with {self.proc.returncode}; log {self.log}:\n{tail(self.log)}")
            try:
                self.probe()
                return
            except Exception as exc:
                last = exc
            if time.monotonic() > end:
                raise ServerError(f"{self.name} on port {self.port} not ready after {timeout:g}s ({last}); {self.log}")
            time.sleep(0.1)

    def stop(self, timeout: float = 30.0) -> None:
        """Clean shutdown (SIGKILL after ``timeout``); waits until the process is gone."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, self.stop_signal)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError, PermissionError):  # children of the server, if any
            os.killpg(self.proc.pid, signal.SIGKILL)

    def restart(self, timeout: float = 60.0) -> None:
        """What an operator's restart does: a clean stop, then a start on the same port and data."""
        self.stop()
        self.start(timeout)

    def remove(self) -> None:
        """Stop and delete the data (the log stays)."""
        self.stop()
        for child in self.folder.iterdir():
            if child != self.log:
                if child.is_dir():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)


class RedisServer(ServerProcess):
    """A Redis of the deployment's own (the Celery broker), persisted like a production broker (AOF, flushed
    at shutdown), so a restart keeps the queued messages."""

    name = "redis"

    def args(self) -> list[str]:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ServerError("redis-server is not installed (Debian package redis-server); the e2e broker needs it")
        return [
            binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.folder),
            "--save",
            "",
            "--appendonly",
            "yes",
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
        ]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def probe(self) -> None:
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=1, socket_timeout=2)
        try:
            client.ping()
        finally:
            client.close()


def _postgres_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(Path(p).parts[-3]))
    if not found:
        raise ServerError("no PostgreSQL server binary under /usr/lib/postgresql/*/bin (Debian package postgresql)")
    return Path(found[-1]).parent


class PostgresInstance(ServerProcess):
    """A PostgreSQL cluster of the test's own: trust auth for ``postgres`` on 127.0.0.1, no fsync."""

    name = "postgres"
    stop_signal = signal.SIGINT  # "fast" shutdown: roll back open transactions, cut the sessions

    def __init__(self, folder: Path) -> None:
        self.user = "postgres" if os.geteuid() == 0 else None
        super().__init__(folder)
        self.bin = _postgres_bin()
        self.data = folder / "data"
        self.sockets = folder / "sockets"

    def _chown(self, path: Path) -> None:
        if self.user:
            account = pwd.getpwnam(self.user)
            os.chown(path, account.pw_uid, account.pw_gid)

    def prepare(self) -> None:
        self.sockets.mkdir(exist_ok=True)
        self.log.touch()
        for path in (self.folder, self.sockets, self.log):
            self._chown(path)
        command = [str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8"]
        done = subprocess.run(
            [*command, "--no-sync"],
            cwd=self.folder,
            capture_output=True,
            text=True,
            preexec_fn=_preexec(signal.SIGTERM, self.user),
            check=False,
            timeout=120,
        )
        if done.returncode != 0:
            raise ServerError(f"initdb failed ({done.returncode}): {done.stdout[-2000:]}{done.stderr[-2000:]}")

    def args(self) -> list[str]:
        return [
            str(self.bin / "postgres"),
            "-D",
            str(self.data),
            "-p",
            str(self.port),
            "-k",
            str(self.sockets),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
            "-c",
            "shared_buffers=16MB",
            "-c",
            "max_connections=40",
        ]

    def connect(self, dbname: str = "postgres", **kwargs: Any) -> Any:
        import psycopg

        kwargs.setdefault("autocommit", True)
        return psycopg.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname=dbname, connect_timeout=5, **kwargs
        )

    def probe(self) -> None:
        self.connect().close()


class MariaDbInstance(ServerProcess):
    """A MariaDB server of the test's own: ``root`` without a password on 127.0.0.1, small InnoDB files."""

    name = "mariadb"

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.data = folder / "data"
        self.socket = folder / "mariadb.sock"
        self._innodb = ["--innodb-log-file-size=8M", "--innodb-buffer-pool-size=32M"]

    def prepare(self) -> None:
        binary = shutil.which("mariadb-install-db")
        if binary is None:
            raise ServerError("mariadb-install-db is not installed (Debian package mariadb-server)")
        done = subprocess.run(
            [
                binary,
                "--no-defaults",
                f"--datadir={self.data}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                *self._user_args(),
                *self._innodb,
            ],
            cwd=self.folder,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        if done.returncode != 0:
            output = done.stdout[-2000:] + done.stderr[-2000:]
            raise ServerError(f"mariadb-install-db failed ({done.returncode}): {output}")

    def _user_args(self) -> list[str]:
        return ["--user=root"] if os.geteuid() == 0 else []

    def args(self) -> list[str]:
        binary = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
        return [
            binary,
            "--no-defaults",
            f"--datadir={self.data}",
            f"--port={self.port}",
            f"--socket={self.socket}",
            f"--pid-file={self.folder / 'mariadb.pid'}",
            "--bind-address=127.0.0.1",
            "--skip-log-bin",
            *self._user_args(),
            *self._innodb,
        ]

    def connect(self, database: str | None = None) -> Any:
        import MySQLdb

        conn = MySQLdb.connect(
            host="127.0.0.1", port=self.port, user="root", passwd="", db=database or "", connect_timeout=5
        )
        conn.autocommit(True)
        return conn

    def probe(self) -> None:
        self.connect().close()
