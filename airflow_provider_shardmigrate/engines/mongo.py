"""MongoDB shards, through the pymongo client of Airflow's official ``MongoHook``.

A shard is the database the Airflow connection's ``schema`` names. Scripts are ``up.mongo.json`` /
``down.mongo.json``: JSON arrays of database command documents (docs/contracts.md), run one by one.

Why it is built this way:

* **No transactional DDL.** MongoDB cannot run ``createIndexes``/``collMod``/``renameCollection`` and a history
  write in one transaction, so the engine says ``transactional_ddl = False`` and the runner uses the
  statement-by-statement protocol: a ``running`` record, ``statements_applied`` after every command, then
  ``applied``; a re-run resumes after the last command that completed.
* **Connecting is inside the shard's time budget.** The hook's client gets ``connectTimeoutMS`` and
  ``serverSelectionTimeoutMS`` from what is left of the deadline, a socket timeout a little beyond the
  longest command the server bounds, and a heartbeat listener: the engine waits for the client's first
  server check, so a refused connection or an unknown host fails at once (``migration_failed``) instead of
  after the whole server-selection timeout, and a server that never answers ends in ``migration_timeout``.
* **Deadline in the server.** Every command carries ``maxTimeMS`` = what is left of ``per_shard_timeout``
  (our own bookkeeping a fixed bound), so mongod stops the command itself (``MaxTimeMSExpired``).
* **Lock.** MongoDB has no session lock, so the lock is a *lease*: the document ``{_id: "migration"}`` in
  ``shardmigrate_locks`` (the unique ``_id`` makes taking it atomic) with its owner and an expiry read from
  the server's clock. A thread renews it while the migration runs; another process takes it over only once
  it has expired (a killed worker's lease runs out after :attr:`MongoEngine.lease_seconds`). It is deleted
  on every way out. Waiting processes leave a ``waiter:<owner>`` document there while they wait.
* **History** lives in the collection ``shardmigrate_history``: one document per migration, ``_id`` = the
  migration id, with the fields of the SQL history table.
* **Read-only sessions** (drift, ``shardmigrate history``) refuse every command that is not a read before it
  is sent: MongoDB has no read-only session, so this is enforced by the engine, not the server.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, ClassVar, NoReturn

from airflow_provider_shardmigrate.core.deadline import Deadline
from airflow_provider_shardmigrate.core.errors import (
    InvalidScriptError,
    LockTimeoutError,
    MigrationFailedError,
    MigrationTimeoutError,
    ShardMigrateError,
)
from airflow_provider_shardmigrate.core.history import HISTORY_COLUMNS, HISTORY_TABLE, HistoryRecord, HistoryStatus
from airflow_provider_shardmigrate.core.scripts import MONGO_COMMANDS
from airflow_provider_shardmigrate.core.sqltext import preview
from airflow_provider_shardmigrate.core.status import redact
from airflow_provider_shardmigrate.engines.base import DEFAULT_OPEN_TIMEOUT_S, ShardEngine
from airflow_provider_shardmigrate.engines.dbapi import one_line

log = logging.getLogger(__name__)

LOCKS_COLLECTION = "shardmigrate_locks"
#: ``_id`` of the lease document (one migration lock per shard database).
LOCK_ID = "migration"
#: Bound (ms) for our own bookkeeping commands, which must still run after the deadline passed.
BOOKKEEPING_TIMEOUT_MS = 30_000
#: A socket read may wait this much longer than the longest command the server bounds (client backstop).
SOCKET_SLACK_MS = 5_000
#: Pause between two attempts at a held lease.
_LOCK_POLL_SECONDS = 0.2
#: Server codes for a command stopped by its time limit: MaxTimeMSExpired, LockTimeout, ExceededTimeLimit.
_TIMEOUT_CODES = frozenset({50, 24, 262})
_DUPLICATE_KEY = 11000
_NAMESPACE_EXISTS = 48
#: Commands a read-only session may send.
_READ_COMMANDS = frozenset(
    {"find", "count", "aggregate", "distinct", "listCollections", "listIndexes", "hello", "ping"}
)
#: Client options the engine sets (the connection's own value is kept when it asks for less).
_BOUNDED_OPTIONS = ("connectTimeoutMS", "serverSelectionTimeoutMS", "socketTimeoutMS")


class MongoCommand(dict[str, Any]):
    """One command document of a script; shown as compact JSON in messages and history rows."""

    def __str__(self) -> str:
        from bson import json_util

        return str(json_util.dumps(self, separators=(",", ":")))

    @property
    def name(self) -> str:
        return next(iter(self))


class _CommandFailed(Exception):
    """A command the server answered ``ok: 1`` but with write errors (a duplicate key, a failed validation)."""

    def __init__(self, code: int | None, message: str) -> None:
        super().__init__(f"[{code}] {message}" if code is not None else message)
        self.code = code


def _heartbeats() -> Any:
    """A pymongo heartbeat listener that remembers how the client's first server check ended."""
    from pymongo import monitoring

    class FirstHeartbeat(monitoring.ServerHeartbeatListener):
        def __init__(self) -> None:
            self.done = threading.Event()
            self.error: BaseException | None = None

        def started(self, event: Any) -> None:
            return None

        def succeeded(self, event: Any) -> None:
            self.done.set()

        def failed(self, event: Any) -> None:
            if not self.done.is_set():
                self.error = event.reply
            self.done.set()

    return FirstHeartbeat()


def _ran_out_of_time(exc: BaseException) -> bool:
    """Whether a failed connection attempt ran out of time (rather than being refused or misaddressed)."""
    from pymongo.errors import ExecutionTimeout, NetworkTimeout, ServerSelectionTimeoutError

    if isinstance(exc, NetworkTimeout | ExecutionTimeout | TimeoutError):
        return True
    if isinstance(exc, ServerSelectionTimeoutError):  # its text lists each server's last error
        return "timed out" in str(exc).split("(configured timeouts")[0].lower()
    return False


def bounded_options(extras: Mapping[str, Any], deadline: Deadline, *, read_only: bool) -> dict[str, Any]:
    """The connection's client options with the engine's time bounds: connect and server selection within
    what is left of ``deadline`` (less when the connection asks for less), and a socket timeout a little
    beyond the longest command the server itself bounds."""
    budget = deadline.remaining_ms()
    longest = budget if read_only else max(int(deadline.seconds * 1000), BOOKKEEPING_TIMEOUT_MS)
    wanted = {
        "connectTimeoutMS": budget,
        "serverSelectionTimeoutMS": budget,
        "socketTimeoutMS": longest + SOCKET_SLACK_MS,
    }
    options = {key: value for key, value in extras.items() if key.lower() not in {o.lower() for o in wanted}}
    for key, bound in wanted.items():
        configured = next((v for k, v in extras.items() if k.lower() == key.lower()), None)
        try:
            asked = int(float(str(configured))) if configured is not None else 0
        except ValueError:
            asked = 0
        options[key] = min(bound, asked) if asked > 0 else bound
    return options


def record_from_document(doc: Mapping[str, Any]) -> HistoryRecord:
    data: dict[str, Any] = {column: doc.get(column) for column in HISTORY_COLUMNS}
    data["migration_id"] = str(doc.get("migration_id") or doc["_id"])
    data["status"] = HistoryStatus(data["status"])
    data["description"] = data["description"] or ""
    for key in ("statements_applied", "statements_total"):
        data[key] = int(data[key] or 0)
    for key in ("applied_at", "rolled_back_at"):
        value = data[key]
        if isinstance(value, datetime) and value.tzinfo is None:
            data[key] = value.replace(tzinfo=UTC)
    return HistoryRecord(**data)


def document_from_record(record: HistoryRecord) -> dict[str, Any]:
    return {"_id": record.migration_id, **dict(zip(HISTORY_COLUMNS, record.as_row(), strict=True))}


def _owner_token() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class MongoCatalog:
    """What introspection reads from a shard (engines/introspect_mongo.py), each read bounded by the
    session's deadline through ``maxTimeMS``."""

    def __init__(self, engine: MongoEngine) -> None:
        self._engine = engine

    def list_collections(self) -> list[dict[str, Any]]:
        db = self._engine.db
        return list(db.list_collections(maxTimeMS=self._engine.bookkeeping_ms()))

    def list_indexes(self, collection: str) -> list[dict[str, Any]]:
        return self._drain(collection, {"listIndexes": collection})

    def _drain(self, collection: str, command: dict[str, Any]) -> list[dict[str, Any]]:
        """Every document of a command's cursor (``getMore`` until it is exhausted), each call bounded."""
        db = self._engine.db
        reply = db.command({**command, "maxTimeMS": self._engine.bookkeeping_ms()})
        cursor = reply["cursor"]
        documents: list[dict[str, Any]] = list(cursor.get("firstBatch") or [])
        while cursor.get("id"):
            more = {"getMore": cursor["id"], "collection": collection, "maxTimeMS": self._engine.bookkeeping_ms()}
            cursor = db.command(more)["cursor"]
            documents.extend(cursor.get("nextBatch") or [])
        return documents


class _Lease:
    """Renews the lease document while the migration runs; notices when it was lost."""

    def __init__(self, engine: MongoEngine, token: str) -> None:
        self.engine = engine
        self.token = token
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"shardmigrate-lease-{engine.shard_id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=BOOKKEEPING_TIMEOUT_MS / 1000 + 1)

    def _run(self) -> None:
        interval = max(0.05, self.engine.lease_seconds / 3)
        while not self._stop.wait(interval):
            try:
                if not self.engine.renew_lease(self.token):
                    self.lost = "another process took the lease over after it expired"
                    return
            except Exception as exc:  # a blip: the next renewal tries again before the lease runs out
                log.warning("shard %s: renewing the migration lease failed: %s", self.engine.shard_id, exc)


class MongoEngine(ShardEngine):
    variant = "mongo"
    transactional_ddl = False
    FAMILY = "MongoDB"
    #: How long a lease lasts without renewal (renewed every third of it while the lock is held).
    lease_seconds: ClassVar[float] = 30.0

    def __init__(self, conn_id: str, shard_id: str) -> None:
        super().__init__(conn_id, shard_id)
        self._client: Any = None
        self._db: Any = None
        self._secret: str | None = None
        self._session: Deadline | None = None
        self._lease: _Lease | None = None
        self.read_only = False
        #: ``host:port`` and database, for messages (never the password).
        self.address = "?"
        self.database = "?"

    # -- the connection ----------------------------------------------------------------------------
    def open(self, deadline: Deadline | None = None, *, read_only: bool = False) -> None:
        deadline = deadline if deadline is not None else Deadline(DEFAULT_OPEN_TIMEOUT_S)
        self.read_only = read_only
        self._session = deadline
        heartbeat = _heartbeats()
        self._client = self._connect(deadline, heartbeat)
        try:
            self._await_server(deadline, heartbeat)
        except BaseException:
            self.close()
            raise

    def _connect(self, deadline: Deadline, heartbeat: Any) -> Any:
        """``MongoHook.get_conn()`` with the engine's time bounds, labels and listener in the hook's options."""
        from airflow.providers.mongo.hooks.mongo import MongoHook

        try:
            hook = MongoHook(mongo_conn_id=self.conn_id)
        except Exception as exc:
            raise MigrationFailedError(
                f"cannot read Airflow connection '{self.conn_id}': {type(exc).__name__}: {exc}", shard_id=self.shard_id
            ) from None
        connection = hook.connection
        self._secret = connection.password or None
        self.address = f"{connection.host or 'localhost'}:{connection.port or 27017}"
        self.database = str(connection.schema or "")
        if not self.database:
            raise MigrationFailedError(
                f"connection '{self.conn_id}' names no database (set the connection's schema to the shard's database)",
                shard_id=self.shard_id,
            )
        extras = bounded_options(hook.extras, deadline, read_only=self.read_only)
        extras.setdefault("appname", f"{self.session_label}:{self.shard_id}"[:128])
        extras.update(tz_aware=True, event_listeners=[heartbeat])
        hook.extras = extras
        try:
            return hook.get_conn()
        except Exception as exc:  # a malformed host or option: the driver's error may carry the URI
            raise self._unreachable(exc, deadline) from None

    def _await_server(self, deadline: Deadline, heartbeat: Any) -> None:
        """Wait for the client's first server check (bounded by connectTimeoutMS), then say hello."""
        heartbeat.done.wait(deadline.remaining())
        if heartbeat.error is not None:
            raise self._unreachable(heartbeat.error, deadline)
        try:
            self._client[self.database].command({"ping": 1, "maxTimeMS": deadline.remaining_ms()})
        except Exception as exc:
            raise self._unreachable(exc, deadline) from None
        self._db = self._client[self.database]

    def _unreachable(self, exc: BaseException, deadline: Deadline) -> ShardMigrateError:
        detail = self._scrub(one_line(exc))
        where = (
            f"{self.FAMILY} at {self.address}, database '{self.database}' (Airflow connection '{self.conn_id}', "
            f"shard '{self.shard_id}')"
        )
        if deadline.expired() or _ran_out_of_time(exc):
            return MigrationTimeoutError(
                f"{where} did not answer in time (time budget {deadline.seconds:g}s): {detail}", shard_id=self.shard_id
            )
        return MigrationFailedError(f"cannot connect to {where}: {detail}", shard_id=self.shard_id)

    def close(self) -> None:
        client, self._client, self._db = self._client, None, None
        if client is None:
            return
        try:
            client.close()
        except Exception as exc:  # a dead connection must not mask the shard's real outcome
            log.debug("shard %s: closing the client failed: %s", self.shard_id, exc)

    @property
    def db(self) -> Any:
        if self._db is None:
            raise RuntimeError("engine used outside its 'with' block")
        return self._db

    @property
    def conn(self) -> MongoCatalog:
        """What introspection reads through (engines/introspect.py hands ``engine.conn`` to the introspector)."""
        return MongoCatalog(self)

    def bookkeeping_ms(self) -> int:
        """``maxTimeMS`` of our own commands: what is left of a read-only session, else a fixed bound."""
        if self.read_only and self._session is not None:
            return self._session.remaining_ms()
        return BOOKKEEPING_TIMEOUT_MS

    def _scrub(self, text: str) -> str:
        return redact(text, self._secret)

    # -- running commands --------------------------------------------------------------------------
    def _send(self, command: Mapping[str, Any], max_time_ms: int, *, admin: bool = False) -> dict[str, Any]:
        """Send one command with ``maxTimeMS``; write errors in an ``ok: 1`` reply raise :class:`_CommandFailed`."""
        name = next(iter(command))
        if self.read_only and name not in _READ_COMMANDS:
            raise MigrationFailedError(
                f"read-only session: refusing to send '{preview(str(name))}' to MongoDB", shard_id=self.shard_id
            )
        document = dict(command)
        document["maxTimeMS"] = min(int(document.get("maxTimeMS") or max_time_ms), max_time_ms)
        database = self._client.admin if admin else self.db
        reply: dict[str, Any] = database.command(document)
        errors = reply.get("writeErrors") or ([reply["writeConcernError"]] if reply.get("writeConcernError") else [])
        if errors:
            first = errors[0]
            raise _CommandFailed(first.get("code"), str(first.get("errmsg", first)))
        return reply

    def _execute(self, command: Mapping[str, Any] | str, max_time_ms: int = BOOKKEEPING_TIMEOUT_MS) -> dict[str, Any]:
        """Send one command (a document, or its JSON text) outside the protocol; read-only sessions refuse writes."""
        if isinstance(command, str):
            if self.read_only:
                raise MigrationFailedError(
                    f"read-only session: refusing to send {preview(command)!r}", shard_id=self.shard_id
                )
            command = self.split(command)[0]
        reply: dict[str, Any] = self._guarded(lambda: self._send(command, max_time_ms), None, "running a command")
        return reply

    def _guarded(self, action: Callable[[], Any], deadline: Deadline | None, what: str, *, lock: bool = False) -> Any:
        from pymongo.errors import PyMongoError

        try:
            return action()
        except ShardMigrateError:
            raise
        except (PyMongoError, _CommandFailed) as exc:
            self._raise_mapped(exc, deadline, what, lock=lock)

    def _raise_mapped(self, exc: BaseException, deadline: Deadline | None, what: str, *, lock: bool) -> NoReturn:
        from pymongo.errors import ConnectionFailure, NetworkTimeout, OperationFailure

        code = getattr(exc, "code", None)
        detail = self._scrub(one_line(exc))
        if (code in _TIMEOUT_CODES or isinstance(exc, NetworkTimeout)) and deadline is not None:
            stopped = "MongoDB stopped the command" if code in _TIMEOUT_CODES else "MongoDB did not answer"
            raise MigrationTimeoutError(
                f"per_shard_timeout of {deadline.seconds:g}s exceeded while {what}; {stopped} ({detail})",
                shard_id=self.shard_id,
            ) from None
        if isinstance(exc, ConnectionFailure):
            raise MigrationFailedError(
                f"lost the connection to MongoDB at {self.address}, database '{self.database}' while {what}: {detail}",
                shard_id=self.shard_id,
            ) from None
        if isinstance(exc, OperationFailure) and exc.details:
            name = exc.details.get("codeName") or ""
            text = " ".join(str(exc.details.get("errmsg", detail)).split())
            detail = f"[{code}{' ' + name if name else ''}] {self._scrub(text)}"
        raise MigrationFailedError(f"{what}: {detail}", shard_id=self.shard_id) from None

    def _qualified(self, step: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
        """The command as sent, and whether it runs on ``admin``: ``renameCollection`` takes collection names
        relative to the shard's database in scripts, and full namespaces on the admin database."""
        command = dict(step)
        if next(iter(command)) != "renameCollection":
            return command, False
        prefix = f"{self.database}."
        for key in ("renameCollection", "to"):
            name = str(command.get(key, ""))
            command[key] = name if name.startswith(prefix) else prefix + name
        return command, True

    # -- history -----------------------------------------------------------------------------------
    def ensure_history_table(self) -> None:
        def create() -> None:
            try:
                self._send({"create": HISTORY_TABLE}, self.bookkeeping_ms())
            except Exception as exc:
                if getattr(exc, "code", None) != _NAMESPACE_EXISTS:
                    raise

        self._guarded(create, None, "creating the history collection")

    def read_history(self, migration_id: str) -> HistoryRecord | None:
        doc = self._guarded(
            lambda: self.db[HISTORY_TABLE].find_one({"_id": migration_id}, max_time_ms=self.bookkeeping_ms()),
            None,
            "reading the history record",
        )
        return record_from_document(doc) if doc else None

    def list_history(self) -> list[HistoryRecord]:
        docs = self._guarded(
            lambda: list(self.db[HISTORY_TABLE].find({}, max_time_ms=self.bookkeeping_ms()).sort("_id", 1)),
            None,
            "reading the history collection",
        )
        return [record_from_document(doc) for doc in docs]

    def save_history(self, record: HistoryRecord) -> None:
        update = {"q": {"_id": record.migration_id}, "u": document_from_record(record), "upsert": True}
        self._guarded(
            lambda: self._send({"update": HISTORY_TABLE, "updates": [update]}, self.bookkeeping_ms()),
            None,
            "writing the history record",
        )

    # -- the lease ---------------------------------------------------------------------------------
    def server_time_ms(self, max_time_ms: int) -> int:
        """The server's clock (``hello.localTime``): every process judges a lease's expiry by the same clock."""
        reply = self._send({"hello": 1}, max_time_ms)
        now = reply.get("localTime")
        if not isinstance(now, datetime):
            now = datetime.now(UTC)
        elif now.tzinfo is None:
            now = now.replace(tzinfo=UTC)
        return int(now.timestamp() * 1000)

    def _try_lease(self, token: str, deadline: Deadline) -> bool:
        """Take the lease if nobody holds it or it expired; False when another owner's lease is still valid."""
        bound = max(1, min(deadline.remaining_ms(), BOOKKEEPING_TIMEOUT_MS))
        now = self.server_time_ms(bound)
        lease = {
            "owner": token,
            "shard_id": self.shard_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "acquired_at": datetime.now(UTC),
            "expires_at_ms": now + int(self.lease_seconds * 1000),
        }
        take = {"q": {"_id": LOCK_ID, "expires_at_ms": {"$lt": now}}, "u": {"$set": lease}, "upsert": True}
        try:
            self._send({"update": LOCKS_COLLECTION, "updates": [take]}, bound)
        except _CommandFailed as exc:
            if exc.code == _DUPLICATE_KEY:
                return False  # the document exists and has not expired: the upsert collided with it
            raise
        return True

    def renew_lease(self, token: str) -> bool:
        """Push the lease's expiry forward; False when the document is no longer ours."""
        bound = max(1, int(self.lease_seconds * 1000 / 3))
        expires = self.server_time_ms(bound) + int(self.lease_seconds * 1000)
        renew = {"q": {"_id": LOCK_ID, "owner": token}, "u": {"$set": {"expires_at_ms": expires}}}
        reply = self._send({"update": LOCKS_COLLECTION, "updates": [renew]}, bound)
        return int(reply.get("n", 0)) > 0

    def _holder(self) -> str:
        try:
            doc = self.db[LOCKS_COLLECTION].find_one({"_id": LOCK_ID}, max_time_ms=BOOKKEEPING_TIMEOUT_MS) or {}
        except Exception:  # only for the message
            return ""
        return f", held by {doc['owner']}" if doc.get("owner") else ""

    def _wait_for_lease(self, token: str, deadline: Deadline) -> None:
        waiter = f"waiter:{token}"
        waiting = False
        try:
            while not self._try_lease(token, deadline):
                if not waiting:  # visible to operators (and tests) while we wait
                    marker = {"_id": waiter, "waiting_for": LOCK_ID, "shard_id": self.shard_id}
                    self._send({"insert": LOCKS_COLLECTION, "documents": [marker]}, BOOKKEEPING_TIMEOUT_MS)
                    waiting = True
                if deadline.expired():
                    raise LockTimeoutError(
                        f"another migration holds the lock on database '{self.database}' at {self.address} "
                        f"(waited {deadline.seconds:g}s): lease '{LOCK_ID}' in {LOCKS_COLLECTION}{self._holder()}",
                        shard_id=self.shard_id,
                    )
                time.sleep(min(_LOCK_POLL_SECONDS, deadline.remaining()))
        finally:
            if waiting:
                self._quietly(
                    lambda: self._send(
                        {"delete": LOCKS_COLLECTION, "deletes": [{"q": {"_id": waiter}, "limit": 1}]},
                        BOOKKEEPING_TIMEOUT_MS,
                    )
                )

    def _quietly(self, action: Callable[[], Any]) -> None:
        try:
            action()
        except Exception as exc:  # the lease expires on its own; this must not hide the shard's outcome
            log.warning("shard %s: releasing the migration lease failed: %s", self.shard_id, exc)

    @contextmanager
    def migration_lock(self, deadline: Deadline) -> Iterator[None]:
        token = _owner_token()
        self._guarded(lambda: self._wait_for_lease(token, deadline), deadline, "taking the migration lock", lock=True)
        lease = _Lease(self, token)
        self._lease = lease
        lease.start()
        try:
            yield
        finally:
            lease.stop()
            self._lease = None
            release = {"q": {"_id": LOCK_ID, "owner": token}, "limit": 1}
            self._quietly(
                lambda: self._send({"delete": LOCKS_COLLECTION, "deletes": [release]}, BOOKKEEPING_TIMEOUT_MS)
            )

    def _check_lease(self) -> None:
        if self._lease is not None and self._lease.lost:
            raise MigrationFailedError(
                f"lost the migration lock on database '{self.database}': {self._lease.lost}; stopping before the "
                "next command",
                shard_id=self.shard_id,
            )

    # -- running -----------------------------------------------------------------------------------
    def split(self, script: str) -> list[MongoCommand]:
        """The command documents of a script (Extended JSON: ``{"$date": ...}`` and friends become BSON types)."""
        from bson import json_util

        try:
            parsed = json_util.loads(script, json_options=json_util.JSONOptions(tz_aware=True, tzinfo=UTC))
        except ValueError as exc:
            raise InvalidScriptError(f"not a valid MongoDB script: {exc}", shard_id=self.shard_id) from None
        commands = [parsed] if isinstance(parsed, dict) else parsed
        if not isinstance(commands, list) or not all(isinstance(c, dict) and c for c in commands):
            raise InvalidScriptError("a MongoDB script is a JSON list of command documents", shard_id=self.shard_id)
        unknown = [next(iter(c)) for c in commands if next(iter(c)) not in MONGO_COMMANDS]
        if unknown:
            raise InvalidScriptError(f"unknown MongoDB command(s): {', '.join(unknown)}", shard_id=self.shard_id)
        return [MongoCommand(command) for command in commands]

    def run_in_transaction(self, steps: list[Any], record: HistoryRecord, deadline: Deadline) -> None:
        raise MigrationFailedError(
            "MongoDB cannot run DDL and the history write in one transaction (transactional_ddl is False)",
            shard_id=self.shard_id,
        )

    def run_step(self, step: Any, deadline: Deadline) -> None:
        """One command, with ``maxTimeMS`` = what is left of the deadline (the server stops it there)."""
        self._check_lease()
        if deadline.expired():
            raise MigrationTimeoutError(f"per_shard_timeout of {deadline.seconds:g}s exceeded", shard_id=self.shard_id)
        command, admin = self._qualified(step)
        self._guarded(
            lambda: self._send(command, deadline.remaining_ms(), admin=admin),
            deadline,
            f"running {preview(str(step))}",
        )

    def query_scalar(self, query: str, deadline: Deadline) -> Any:
        """A canary validation: a read command's first value (``n`` of ``count``, first field of the first
        document of a cursor), None when it returns nothing."""
        command = self._read_command(query)
        reply = self._guarded(
            lambda: self._send(command, deadline.remaining_ms()), deadline, "running the validation query"
        )
        if "cursor" in reply:
            batch = reply["cursor"].get("firstBatch") or []
            return next(iter(batch[0].values()), None) if batch else None
        return reply.get("n", reply.get("values"))

    def _read_command(self, query: str) -> dict[str, Any]:
        from bson import json_util

        try:
            command = json_util.loads(query, json_options=json_util.JSONOptions(tz_aware=True, tzinfo=UTC))
        except ValueError as exc:
            raise InvalidScriptError(
                f"canary_validation on a MongoDB shard must be a JSON command: {exc}", shard_id=self.shard_id
            ) from None
        if (
            not isinstance(command, dict)
            or not command
            or next(iter(command)) not in ("find", "count", "aggregate", "distinct")
        ):
            raise InvalidScriptError(
                "canary_validation on a MongoDB shard must be a find, count, aggregate or distinct command document",
                shard_id=self.shard_id,
            )
        return command
