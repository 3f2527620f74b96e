"""Fixtures for MongoDB shard databases: a wire-protocol emulator by default, a real mongod when asked.

By default the session starts ``nx-27017`` (PyPI: a MongoDB wire-protocol server over SQLite, in the ``dev``
extra) on a free loopback port, with one SQLite file per database under a temporary folder, and stops it at
the end. pymongo talks to it as to a mongod: connection handshake, server selection, commands, cursors,
unique ``_id`` (duplicate-key errors, code 11000), indexes, collections. What it does not do -- validators,
``maxTimeMS``, errors for a missing or existing namespace, server-side JavaScript, transactions, ... -- is
listed (and checked) by tests/engines/test_mongo_emulator.py; tests of such behaviour are marked
``needs_real_mongod`` and are skipped (reported as not run, with the reason) against the emulator.

``SHARDMIGRATE_TEST_MONGO_URL`` (``mongodb://user:pw@127.0.0.1:27018/?authSource=admin``) points the same
tests at a real mongod instead (``make test-mongo`` starts the compose file's MongoDB for it); then every
test runs, and the server being unreachable fails the session's first MongoDB test, naming it.

Each shard is a database ``sm_<pid>_<n>`` on that server, registered with Airflow as ``AIRFLOW_CONN_<ID>``
(``conn_type`` ``mongo``, ``schema`` = the database) and dropped when the test ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

import pytest

from tests.server_fixtures import _new_database_name, conn_id_for, topology_yaml

T = TypeVar("T")

MONGO_URL = os.environ.get("SHARDMIGRATE_TEST_MONGO_URL", "").strip()
HISTORY = "shardmigrate_history"
LOCKS = "shardmigrate_locks"
#: The base schema every shard starts with, like the SQL fleets' ``customers`` table with three rows.
BASE_CUSTOMERS = [{"_id": 1, "name": "ada"}, {"_id": 2, "name": "grace"}, {"_id": 3, "name": "linus"}]
#: Why a test is not run against the emulator comes after this (the skip reason).
NEEDS_REAL = "needs a real mongod (set SHARDMIGRATE_TEST_MONGO_URL, e.g. `make test-mongo`)"


def needs_real_mongod(reason: str, *, replica_set: bool = False) -> pytest.MarkDecorator:
    """Mark a MongoDB test whose property the emulator cannot show (the fixture ``mongo_server`` skips it)."""
    return pytest.mark.needs_real_mongod(reason=reason, replica_set=replica_set)


def _poll(probe: Callable[[], T], timeout: float, what: str) -> T:
    end = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > end:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.05)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class MongoServer:
    """The session's MongoDB server (the emulator, or the real mongod of ``SHARDMIGRATE_TEST_MONGO_URL``)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        real: bool,
        login: str | None = None,
        password: str | None = None,
        options: dict[str, str] | None = None,
        process: subprocess.Popen[bytes] | None = None,
        log: Path | None = None,
    ) -> None:
        self.host, self.port, self.real = host, port, real
        self.login, self.password = login, password
        self.options = dict(options or {})
        self.process = process
        self.log = log
        self.created: set[str] = set()
        self.replica_set = False

    @property
    def name(self) -> str:
        return (
            f"mongod at {self.host}:{self.port}" if self.real else f"the nx-27017 emulator at {self.host}:{self.port}"
        )

    def client(self, **kwargs: Any) -> Any:
        import pymongo

        kwargs.setdefault("serverSelectionTimeoutMS", 5000)
        if self.login:
            kwargs.setdefault("username", self.login)
            kwargs.setdefault("password", self.password)
        return pymongo.MongoClient(host=self.host, port=self.port, tz_aware=True, **self.options, **kwargs)

    def probe(self) -> BaseException | None:
        client = self.client(serverSelectionTimeoutMS=2000)
        try:
            hello = client.admin.command("hello")
            self.replica_set = bool(hello.get("setName"))
        except Exception as exc:
            return exc
        finally:
            client.close()
        return None

    def create_database(self) -> str:
        name = _new_database_name()
        self.created.add(name)
        return name

    def drop_database(self, name: str) -> None:
        client = self.client()
        try:
            client.drop_database(name)
        finally:
            client.close()
        self.created.discard(name)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _real_server(url: str) -> MongoServer:
    parts = urlsplit(url)
    options = dict(parse_qsl(parts.query))
    return MongoServer(
        parts.hostname or "127.0.0.1",
        parts.port or 27017,
        real=True,
        login=parts.username,
        password=parts.password,
        options=options,
    )


def _emulator(root: Path) -> MongoServer:
    try:
        import nx_27017  # noqa: F401
    except ImportError:
        pytest.fail("the MongoDB engine tests need the nx-27017 emulator: pip install nx-27017 (the dev extra has it)")
    port = _free_port()
    log = root / "nx-27017.log"
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from nx_27017.nx_27017 import main; main()",
            "--data-dir",
            str(root / "data"),
            "--host",
            "127.0.0.1",
            "-p",
            str(port),
            "--pid-file",
            str(root / "nx.pid"),
            "--log-file",
            str(log),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    (root / "data").mkdir(exist_ok=True)
    return MongoServer("127.0.0.1", port, real=False, process=process, log=log)


@pytest.fixture(scope="session")
def mongo_server() -> Iterator[MongoServer]:
    """The emulator (started here, on a free loopback port) or the real mongod of SHARDMIGRATE_TEST_MONGO_URL."""
    root = Path(tempfile.mkdtemp(prefix="shardmigrate-mongo-"))
    server = _real_server(MONGO_URL) if MONGO_URL else _emulator(root)
    try:
        if server.real:
            problem = server.probe()
            if problem is not None:
                pytest.fail(
                    f"{server.name} (SHARDMIGRATE_TEST_MONGO_URL) is not reachable: {type(problem).__name__}: {problem}"
                )
        else:

            def up() -> bool:
                if server.process is not None and server.process.poll() is not None:
                    pytest.fail(f"{server.name} exited with {server.process.returncode}; see {server.log}")
                return server.probe() is None

            _poll(up, 60, f"{server.name} to answer")
        yield server
    finally:
        for name in sorted(server.created):
            with contextlib.suppress(Exception):
                server.drop_database(name)
        server.stop()


@pytest.fixture(autouse=True)
def _real_mongod_only(request: pytest.FixtureRequest) -> None:
    """Skip (report as not run) a ``needs_real_mongod`` test unless a real mongod serves the session."""
    marker = request.node.get_closest_marker("needs_real_mongod")
    if marker is None:
        return
    server: MongoServer = request.getfixturevalue("mongo_server")
    reason = marker.kwargs.get("reason", "")
    if not server.real:
        pytest.skip(f"{NEEDS_REAL}: {reason}")
    if marker.kwargs.get("replica_set") and not server.replica_set:
        pytest.skip(f"needs a mongod replica set (transactions), {server.name} is standalone: {reason}")


class MongoFleet:
    """MongoDB shard databases with Airflow connections (``AIRFLOW_CONN_*``) pointing at them."""

    kind = "mongo"

    def __init__(self, server: MongoServer, monkeypatch: pytest.MonkeyPatch) -> None:
        self.server = server
        self.monkeypatch = monkeypatch
        self.databases: dict[str, str] = {}
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self.server.client()
        return self._client

    def add(
        self,
        shard_id: str,
        customers: list[dict[str, Any]] | None = None,
        *,
        conn_id: str | None = None,
        password: str | None = None,
        port: int | None = None,
    ) -> str:
        """Create the shard's database with the base ``customers`` collection, register its connection."""
        database = self.server.create_database()
        self.databases[shard_id] = database
        documents = BASE_CUSTOMERS if customers is None else customers
        if port is None:
            self.client[database]["customers"].insert_many([dict(doc) for doc in documents])
        conn_id = conn_id or conn_id_for(shard_id)
        self.monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", self.conn_env(shard_id, password, port))
        return database

    def conn_env(self, shard_id: str, password: str | None = None, port: int | None = None) -> str:
        spec: dict[str, Any] = {
            "conn_type": "mongo",
            "host": self.server.host,
            "port": port or self.server.port,
            "schema": self.databases[shard_id],
        }
        login, secret = self.server.login, self.server.password
        if password:  # a connection holding a password (the tests check it never shows)
            login, secret = login or "shardmigrate", password
        if login:
            spec.update(login=login, password=secret)
        if self.server.options:
            spec["extra"] = dict(self.server.options)
        return json.dumps(spec)

    def topology(self, shard_ids: list[str] | None = None, *, inactive: tuple[str, ...] = ()) -> str:
        return topology_yaml(shard_ids or list(self.databases), inactive=inactive)

    def db(self, shard_id: str) -> Any:
        return self.client[self.databases[shard_id]]

    def server_now_ms(self) -> int:
        now = self.client.admin.command("hello")["localTime"]
        return int(now.timestamp() * 1000)

    def tables(self, shard_id: str) -> set[str]:
        return set(self.db(shard_id).list_collection_names())

    def indexes(self, shard_id: str) -> set[str]:
        db = self.db(shard_id)
        names = set()
        for collection in db.list_collection_names():
            names |= {spec["name"] for spec in db[collection].list_indexes() if spec["name"] != "_id_"}
        return names

    def objects(self, shard_id: str) -> set[str]:
        """Collections and their (non-``_id``) indexes."""
        return self.tables(shard_id) | self.indexes(shard_id)

    def history(self, shard_id: str) -> dict[str, dict[str, Any]]:
        return {doc["_id"]: doc for doc in self.db(shard_id)[HISTORY].find()}

    def lease(self, shard_id: str) -> dict[str, Any] | None:
        doc: dict[str, Any] | None = self.db(shard_id)[LOCKS].find_one({"_id": "migration"})
        return doc

    @contextmanager
    def hold_migration_lock(self, shard_id: str, owner: str = "another-process") -> Iterator[None]:
        """A valid lease of another owner (like a concurrent migration), removed on exit."""
        locks = self.db(shard_id)[LOCKS]
        locks.insert_one({"_id": "migration", "owner": owner, "expires_at_ms": self.server_now_ms() + 3_600_000})
        try:
            yield
        finally:
            locks.delete_one({"_id": "migration", "owner": owner})

    def drop_all(self) -> None:
        for database in self.databases.values():
            with contextlib.suppress(Exception):
                self.server.drop_database(database)
        self.databases.clear()
        if self._client is not None:
            self._client.close()
            self._client = None


@pytest.fixture
def mongo_fleet(mongo_server: MongoServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[MongoFleet]:
    fleet = MongoFleet(mongo_server, monkeypatch)
    yield fleet
    fleet.drop_all()


class CommandRecorder:
    """Every command pymongo sends while ``recording`` (pymongo's own command monitoring), as
    ``(database, command name, command document)``: what the engine really sent, whatever the server does."""

    def __init__(self) -> None:
        from pymongo import monitoring

        recorder = self

        class Listener(monitoring.CommandListener):
            def started(self, event: Any) -> None:
                if recorder.recording:
                    recorder.sent.append((event.database_name, event.command_name, dict(event.command)))

            def succeeded(self, event: Any) -> None:
                return None

            def failed(self, event: Any) -> None:
                return None

        self.sent: list[tuple[str, str, dict[str, Any]]] = []
        self.recording = False
        monitoring.register(Listener())  # applies to every client created afterwards; idle unless recording

    def named(self, *names: str) -> list[dict[str, Any]]:
        return [command for _, name, command in self.sent if name in names]


_RECORDER: list[CommandRecorder] = []


@pytest.fixture
def mongo_commands() -> Iterator[CommandRecorder]:
    """The commands sent during the test (a pymongo listener registered once per session)."""
    if not _RECORDER:
        _RECORDER.append(CommandRecorder())
    recorder = _RECORDER[0]
    recorder.sent.clear()
    recorder.recording = True
    yield recorder
    recorder.recording = False
