"""A real Airflow 3.3 deployment on this machine, on loopback only, for the end-to-end tests and benchmarks.

What :class:`Deployment` starts (every process in its own session/process group, stdout+stderr to a log file
under the run's output folder):

* a metadata database of its own on the local PostgreSQL (``sm_<pid>_e2emeta``; created, ``db migrate``d,
  dropped at the end -- and swept by later sessions if this one was killed),
* ``airflow api-server`` on 127.0.0.1 and a free port, SimpleAuthManager with a user whose password the
  harness writes into the passwords file (so it is never printed),
* ``scheduler --skip-serve-logs``, ``dag-processor``, ``triggerer --skip-serve-logs``,
* two ``celery worker --skip-serve-logs`` with distinct hostnames, CeleryExecutor with the result backend
  on the metadata database and a queue name unique to the run; the broker is either a Redis of the
  deployment's own (``own_redis=True``: a ``redis-server`` on a free port with its data in the output folder,
  tests/e2e/servers.py, so a test may restart it) or the local Redis (a DB number claimed empty for the run).

Fault injection (tests/e2e/test_faults.py): :meth:`Deployment.kill_component` SIGKILLs a component's whole
process tree (a Celery worker with its pool, task supervisors and task processes, which Airflow puts in
process groups of their own), :meth:`Deployment.stop_component` / :meth:`Deployment.start_component`
restart one (the scheduler), :meth:`Deployment.component_of` says which component runs a task's pid, and
:meth:`Deployment.register_server` records a server a test started so the reaper stops it too.

One JWT secret (86 bytes) for every process; ``execution_api_server_url`` and ``[api] base_url`` explicit.
Tuning from research/airflow-fanout-overhead.md that is safe here: ``scheduler_idle_sleep_time=0.2`` (the
scheduler reacts to a freed slot in ~0.1 s instead of ~0.9 s) and ``[workers] min_heartbeat_interval=1``
(no 5 s executor-slot tail after a task ends), and more worker slots than any test's max_parallelism.
Bytecode stays on (``PYTHONDONTWRITEBYTECODE`` dropped, ``PYTHONPYCACHEPREFIX`` kept).

Stopping SIGTERMs every process group, waits, SIGKILLs leftovers, drops the metadata database and empties
the claimed Redis DB; it runs at most once and is also registered with ``atexit``. Each child gets
``PR_SET_PDEATHSIG`` so it is told to stop even if the test process is SIGKILLed, and a later harness
kills the groups of an earlier run whose owner process is gone (their ids are in ``deployment.json``).

Usable without pytest (``bench/bench_e2e_rollout.py``): failures raise :class:`DeploymentError`.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from tests.e2e.servers import RedisServer

REPO = Path(__file__).resolve().parents[2]
OUTPUT_ROOT = REPO / "test-output" / "e2e"
PG_HOST = os.environ.get("SHARDMIGRATE_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("SHARDMIGRATE_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("SHARDMIGRATE_TEST_PG_USER", "postgres")
REDIS_HOST = os.environ.get("SHARDMIGRATE_TEST_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("SHARDMIGRATE_TEST_REDIS_PORT", "6379"))
USERNAME = "admin"
TERMINAL_RUN_STATES = frozenset({"success", "failed"})
_REDIS_OWNER_KEY = "shardmigrate:e2e:owner"
_STATE_FILE = "deployment.json"
_PR_SET_PDEATHSIG = 1


class DeploymentError(RuntimeError):
    """The deployment could not start (or a component died); the message names the component and its log."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def new_output_dir(label: str = "") -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = OUTPUT_ROOT / f"{stamp}-{os.getpid()}{'-' + label if label else ''}"
    path.mkdir(parents=True, exist_ok=False)
    return path


def tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return "\n".join(text[-lines:])


def _libc() -> Any:
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


_LIBC = _libc()


def _child_setup() -> None:  # pragma: no cover - runs in the child between fork and exec
    """The child is already a session leader (``start_new_session``); ask the kernel to SIGTERM it when
    the test process dies, however it dies."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``, read from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...; comm may contain spaces/parentheses: split after the last ')'.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def _group_is_airflow(pgid: int) -> bool:
    """Guard against a recycled id: only a group whose live members run airflow is ours to kill (its leader
    may be gone while its children -- a Celery pool process, a task supervisor -- are still there)."""
    for pid in _group_members(pgid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if b"airflow" in cmdline or b"celery" in cmdline:  # Celery retitles its processes
            return True
    return False


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _parents() -> dict[int, int]:
    """pid -> parent pid of every live (non-zombie) process, from /proc."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 1 and fields[0] != "Z":
            parents[int(entry.name)] = int(fields[1])
    return parents


def process_tree(root: int) -> list[int]:
    """``root`` and all its live descendants, whatever their process group (task processes have their own)."""
    parents = _parents()
    tree, frontier = [], [root] if root in parents else []
    while frontier:
        pid = frontier.pop()
        tree.append(pid)
        frontier.extend(child for child, parent in parents.items() if parent == pid)
    return tree


def ancestors(pid: int) -> list[int]:
    """``pid`` and its parents up to init."""
    parents = _parents()
    chain = []
    while pid in parents and pid not in chain:
        chain.append(pid)
        pid = parents[pid]
    return chain


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return b""


# -- PostgreSQL / Redis helpers ---------------------------------------------------------------------------
def pg_admin() -> Any:
    import psycopg

    return psycopg.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", autocommit=True, connect_timeout=5
    )


def check_servers(*, redis_needed: bool = True) -> None:
    """Raise DeploymentError naming the server that is missing (PostgreSQL or, when used, the local Redis)."""
    try:
        pg_admin().close()
    except Exception as exc:
        raise DeploymentError(
            f"PostgreSQL is not reachable at {PG_HOST}:{PG_PORT} (user {PG_USER}): {type(exc).__name__}: {exc}. "
            "The e2e deployment keeps its metadata DB there: start it with `make services`."
        ) from None
    if not redis_needed:
        return
    import redis

    try:
        redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_connect_timeout=3).ping()
    except Exception as exc:
        raise DeploymentError(
            f"Redis is not reachable at {REDIS_HOST}:{REDIS_PORT}: {type(exc).__name__}: {exc}. The e2e deployment "
            "uses it as the Celery broker: start it (e.g. `redis-server --daemonize yes --bind 127.0.0.1`)."
        ) from None


def claim_redis_db(owner: str) -> int:
    """An empty Redis DB number (1..15) claimed for this run with an owner key (SET NX)."""
    import redis

    for number in range(15, 0, -1):
        client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=number, socket_connect_timeout=3)
        if client.set(_REDIS_OWNER_KEY, owner, nx=True, ex=12 * 3600):
            if client.dbsize() == 1:
                return number
            client.delete(_REDIS_OWNER_KEY)  # the DB holds someone else's keys: leave it alone
    raise DeploymentError(f"no empty Redis DB (1..15) at {REDIS_HOST}:{REDIS_PORT} to use as this run's broker")


def release_redis_db(number: int, owner: str) -> None:
    import redis

    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=number, socket_connect_timeout=3)
    if client.get(_REDIS_OWNER_KEY) == owner.encode():
        client.flushdb()


def clean_up_run(state_file: Path, grace: float = 0.0) -> list[str]:
    """Stop the process groups of the run ``state_file`` describes (SIGTERM, ``grace`` seconds, SIGKILL), drop
    its metadata DB, empty its Redis DB and mark it stopped. For runs whose owner died without stopping."""
    done: list[str] = []
    try:
        state = json.loads(state_file.read_text())
    except (OSError, ValueError):
        return done
    if state.get("stopped"):
        return done
    groups = [pgid for pgid in state.get("pgids", []) if _group_is_airflow(pgid)]
    if groups and grace > 0:
        for pgid in groups:
            _signal_group(pgid, signal.SIGTERM)
        end = time.monotonic() + grace
        while time.monotonic() < end and any(_group_members(pgid) for pgid in groups):
            time.sleep(0.5)
    for pgid in groups:
        if _group_members(pgid):
            _signal_group(pgid, signal.SIGKILL)
            done.append(f"killed group {pgid}")
    databases = state.get("shard_databases") or {}
    for database in [state.get("metadata_db"), *databases.get("postgres", [])]:
        if database:
            with contextlib.suppress(Exception), pg_admin() as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
                done.append(f"dropped {database}")
    if databases.get("mysql"):
        with contextlib.suppress(Exception):
            from tests.server_fixtures import MySqlServer

            server = MySqlServer()
            for database in databases["mysql"]:
                server.drop_database(database)
                done.append(f"dropped {database}")
    if state.get("redis_db") is not None and state.get("redis_owner"):
        with contextlib.suppress(Exception):
            release_redis_db(int(state["redis_db"]), str(state["redis_owner"]))
    for server in state.get("servers", []):
        # Only a process whose command line still names the server's folder (guard against a recycled pid).
        pid, marker = int(server.get("pid") or 0), str(server.get("marker") or "")
        if pid and marker and marker.encode() in _cmdline(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
            done.append(f"killed server {pid}")
    state["stopped"] = True
    state_file.write_text(json.dumps(state, indent=2))
    return done


def sweep_stale_runs() -> list[str]:
    """Clean up after earlier runs whose owner process is gone (killed before it could stop its deployment)."""
    done: list[str] = []
    if not OUTPUT_ROOT.exists():
        return done
    for state_file in OUTPUT_ROOT.glob(f"*/{_STATE_FILE}"):
        try:
            owner = int(json.loads(state_file.read_text()).get("owner_pid", 0))
        except (OSError, ValueError):
            continue
        if not _pid_alive(owner):
            done += clean_up_run(state_file)
    return done


def _reap(owner_pid: int, state_file: Path) -> None:  # pragma: no cover - runs in the reaper process
    """The reaper: wait for the owner (the test process) to go away, then clean up after it unless it stopped
    the deployment itself. Covers SIGKILL of pytest, where neither atexit nor fixture teardown runs."""
    while _pid_alive(owner_pid):
        time.sleep(1.0)
    clean_up_run(state_file, grace=15.0)


# -- the deployment ---------------------------------------------------------------------------------------
@dataclass
class Component:
    name: str
    args: list[str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    #: Stopped or killed on purpose (a fault test): check_alive() does not report it.
    down: bool = False

    @property
    def pgid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None


@dataclass
class Deployment:
    """A CeleryExecutor Airflow deployment over ``dags_folder`` whose processes get ``extra_env`` (the shard
    connections as ``AIRFLOW_CONN_*``)."""

    output_dir: Path
    dags_folder: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    workers: int = 2
    worker_concurrency: int = 4
    tuned: bool = True
    #: Shard databases the caller created for this run ({"postgres": [...], "mysql": [...]}): dropped by the
    #: reaper if the test process dies without its teardown (the caller drops them normally).
    shard_databases: dict[str, list[str]] = field(default_factory=dict)
    run_token: str = field(default_factory=lambda: secrets.token_hex(4))
    #: Run a Redis of the deployment's own as the broker (restartable by a test) instead of a DB number on
    #: the local shared Redis.
    own_redis: bool = False

    def __post_init__(self) -> None:
        self.home = self.output_dir / "airflow-home"
        self.logs = self.output_dir / "logs"
        self.home.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.metadata_db = f"sm_{os.getpid()}_e2emeta{self.run_token}"
        self.queue = f"shardmigrate_e2e_{os.getpid()}_{self.run_token}"
        self.password = secrets.token_urlsafe(18)
        self.redis_db: int | None = None
        self.redis: RedisServer | None = None
        self.components: list[Component] = []
        self._servers: list[Any] = []
        self.worker_hostnames = [f"e2e-worker-{i + 1}-{self.run_token}@127.0.0.1" for i in range(self.workers)]
        self._redis_owner = f"{os.getpid()}:{self.run_token}"
        self._reaper: subprocess.Popen[bytes] | None = None
        self._created_db = False
        self._stopped = False
        self._token: str | None = None
        self._env: dict[str, str] | None = None

    # -- configuration ----------------------------------------------------------------------------------
    def environment(self) -> dict[str, str]:
        """The environment of every Airflow process: the caller's, minus its AIRFLOW* settings, plus ours
        (computed once: every process gets the same secrets and ports)."""
        if self._env is not None:
            return dict(self._env)
        from cryptography.fernet import Fernet

        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # bytecode on: every task process imports Airflow
        env.setdefault("PYTHONPYCACHEPREFIX", str(REPO / ".cache" / "pycache"))
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        sql = f"postgresql+psycopg2://{PG_USER}@{PG_HOST}:{PG_PORT}/{self.metadata_db}"
        passwords = self.home / "simple_auth_manager_passwords.json"
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",  # unpaused through the API
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                "AIRFLOW__CORE__PARALLELISM": "32",
                "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "64",
                "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
                "AIRFLOW__CORE__AUTH_MANAGER": (
                    "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
                ),
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USERNAME}:admin",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": sql,
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(self.port),
                "AIRFLOW__API__BASE_URL": self.url,
                "AIRFLOW__API__WORKERS": "1",
                # 86 bytes: above the 64-byte minimum for HMAC-SHA512 (no InsecureKeyLengthWarning).
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),
                "AIRFLOW__CELERY__BROKER_URL": self.broker_url,
                "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{self.metadata_db}",
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.worker_concurrency),
                "AIRFLOW__OPERATORS__DEFAULT_QUEUE": self.queue,
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
                "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.home / "logs"),
                # Never served (--skip-serve-logs everywhere); free ports anyway so nothing can clash.
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            }
        )
        if self.tuned:
            env["AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME"] = "0.2"
            env["AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL"] = "1"
        env.update(self.extra_env)
        if self.redis_db is not None or self.redis is not None:  # complete only once the broker is known
            self._env = env
        return dict(env)

    @property
    def broker_url(self) -> str:
        if self.redis is not None:
            return self.redis.url
        return f"redis://{REDIS_HOST}:{REDIS_PORT}/{self.redis_db}"

    def _airflow(self, *args: str) -> list[str]:
        return [str(Path(sys.executable).parent / "airflow"), *args]

    # -- lifecycle --------------------------------------------------------------------------------------
    def start(self, timeout: float = 300.0, expect_dags: Iterable[str] = ()) -> None:
        """Create the metadata DB, migrate it, start every component and wait until all are ready and
        ``expect_dags`` are parsed (then unpause them). Stops everything again if anything fails."""
        atexit.register(self.stop)
        try:
            self._start(timeout, list(expect_dags))
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout: float, expect_dags: list[str]) -> None:
        deadline = time.monotonic() + timeout
        swept = sweep_stale_runs()
        if swept:
            print(f"[e2e] cleaned up after earlier runs: {', '.join(swept)}", file=sys.stderr)
        check_servers(redis_needed=not self.own_redis)
        if self.own_redis:
            from tests.e2e.servers import RedisServer, ServerError

            self.redis = RedisServer(self.output_dir / "redis")
            self.register_server(self.redis)
            try:
                self.redis.start()
            except ServerError as exc:
                raise DeploymentError(f"the deployment's own Redis did not start: {exc}") from None
        else:
            self.redis_db = claim_redis_db(self._redis_owner)
        with pg_admin() as conn:
            conn.execute(f'CREATE DATABASE "{self.metadata_db}"')
        self._created_db = True
        (self.home / "simple_auth_manager_passwords.json").write_text(json.dumps({USERNAME: self.password}))
        self._write_state()
        self._start_reaper()
        env = self.environment()
        migrate_log = self.logs / "db-migrate.log"
        with migrate_log.open("wb") as out:
            done = subprocess.run(
                self._airflow("db", "migrate"),
                env=env,
                cwd=self.home,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=max(30.0, deadline - time.monotonic()),
                check=False,
            )
        if done.returncode != 0:
            raise DeploymentError(
                f"`airflow db migrate` failed ({done.returncode}); log {migrate_log}:\n{tail(migrate_log)}"
            )
        self.components = [
            Component(
                "api-server",
                self._airflow("api-server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"),
                self.logs / "api-server.log",
            ),
            Component("scheduler", self._airflow("scheduler", "--skip-serve-logs"), self.logs / "scheduler.log"),
            Component("dag-processor", self._airflow("dag-processor"), self.logs / "dag-processor.log"),
            Component("triggerer", self._airflow("triggerer", "--skip-serve-logs"), self.logs / "triggerer.log"),
        ]
        for index, hostname in enumerate(self.worker_hostnames, start=1):
            self.components.append(
                Component(
                    f"worker-{index}",
                    self._airflow(
                        "celery",
                        "worker",
                        "--skip-serve-logs",
                        "--celery-hostname",
                        hostname,
                        "--queues",
                        self.queue,
                        "--concurrency",
                        str(self.worker_concurrency),
                    ),
                    self.logs / f"worker-{index}.log",
                )
            )
        for component in self.components:
            self._spawn(component)
        self._write_state()
        self._wait_ready(deadline)
        if expect_dags:
            self.wait_for_dags(expect_dags, deadline=deadline)

    def _spawn(self, component: Component) -> None:
        with component.log.open("ab") as out:
            component.proc = subprocess.Popen(
                component.args,
                env=self.environment(),
                cwd=self.home,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_child_setup,
            )
        component.down = False

    # -- fault injection --------------------------------------------------------------------------------
    def component(self, name: str) -> Component:
        for component in self.components:
            if component.name == name:
                return component
        raise KeyError(f"no component {name!r}; have {[c.name for c in self.components]}")

    def component_of(self, pid: int) -> Component | None:
        """The component whose process tree holds ``pid`` (a task process: which worker runs it)."""
        chain = set(ancestors(pid))
        return next((c for c in self.components if c.proc is not None and c.proc.pid in chain), None)

    def kill_component(self, name: str, timeout: float = 30.0) -> list[int]:
        """SIGKILL the component's whole process tree at once -- its process group and every descendant in
        another group (Airflow gives each task process a group of its own) -- like a machine losing the
        process: nothing runs a handler. Returns the pids killed; waits until they are gone."""
        component = self.component(name)
        assert component.proc is not None and component.pgid is not None
        component.down = True
        killed: set[int] = set()
        end = time.monotonic() + timeout
        while True:
            pids = set(process_tree(component.proc.pid)) | set(_group_members(component.pgid))
            pids |= {pid for root in killed for pid in process_tree(root)}
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            killed |= pids
            with contextlib.suppress(subprocess.TimeoutExpired):
                component.proc.wait(timeout=0.2)
            if time.monotonic() > end:
                raise DeploymentError(f"{name}: processes {sorted(pids)} still alive {timeout:g}s after SIGKILL")
        return sorted(killed)

    def stop_component(self, name: str, timeout: float = 60.0) -> float:
        """Stop a component the way an operator does (SIGTERM to its group, wait until every process of the
        group is gone); returns how long it took."""
        component = self.component(name)
        assert component.proc is not None and component.pgid is not None
        component.down = True
        began = time.monotonic()
        _signal_group(component.pgid, signal.SIGTERM)
        try:
            component.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise DeploymentError(f"{name} still running {timeout:g}s after SIGTERM; log {component.log}") from None
        while _group_members(component.pgid):
            if time.monotonic() - began > timeout:
                raise DeploymentError(f"{name}: group {component.pgid} still has {_group_members(component.pgid)}")
            time.sleep(0.1)
        return time.monotonic() - began

    def start_component(self, name: str) -> None:
        """Start a stopped or killed component again (same command line, same log file, appended)."""
        component = self.component(name)
        if component.proc is not None and component.proc.poll() is None:
            raise DeploymentError(f"{name} is still running (pid {component.proc.pid})")
        with component.log.open("ab") as out:
            out.write(f"\n===== [e2e] {name} started again at {datetime.now().isoformat()} =====\n".encode())
        self._spawn(component)
        self._write_state()

    def ensure_up(self, timeout: float = 120.0) -> list[str]:
        """Start again whatever a fault test left stopped (a component, the own Redis) and wait until all is
        healthy, so one failed fault test does not fail the tests after it; returns what it started."""
        started = []
        if self.redis is not None and (self.redis.proc is None or self.redis.proc.poll() is not None):
            self.redis.start()
            started.append("redis")
        for component in self.components:
            if component.down and component.proc is not None and component.proc.poll() is not None:
                self.start_component(component.name)
                started.append(component.name)
        self.wait_healthy(timeout)
        return started

    def wait_healthy(self, timeout: float = 120.0) -> None:
        """Wait until the api-server reports every component healthy and every Celery worker answers."""
        self._wait_ready(time.monotonic() + timeout)

    def register_server(self, server: Any) -> None:
        """Record a server a test started (tests/e2e/servers.py) so the reaper kills it if the test process
        dies before stopping it (the server's folder in its command line guards against a recycled pid)."""
        self._servers.append(server)
        server.on_start.append(self._write_state)
        self._write_state()

    def _start_reaper(self) -> None:
        log = (self.logs / "reaper.log").open("ab")
        self._reaper = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.e2e.deployment",
                "--reap",
                str(os.getpid()),
                str(self.output_dir / _STATE_FILE),
            ],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    def _write_state(self) -> None:
        state = {
            "owner_pid": os.getpid(),
            "metadata_db": self.metadata_db if self._created_db else None,
            "shard_databases": self.shard_databases,
            "redis_db": self.redis_db,
            "redis_owner": self._redis_owner,
            "queue": self.queue,
            "url": self.url,
            "pgids": [c.pgid for c in self.components if c.pgid],
            "servers": [{"pid": s.pid, "marker": str(s.folder)} for s in self._servers if s.pid],
            "logs": {c.name: str(c.log) for c in self.components},
            "stopped": self._stopped,
        }
        (self.output_dir / _STATE_FILE).write_text(json.dumps(state, indent=2))

    def check_alive(self) -> None:
        for component in self.components:
            if component.down:
                continue
            if component.proc is not None and component.proc.poll() is not None:
                raise DeploymentError(
                    f"{component.name} exited with {component.proc.returncode}; log {component.log}:\n"
                    f"{tail(component.log)}"
                )

    def _wait(self, what: str, probe: Callable[[], Any], deadline: float, interval: float = 0.5) -> Any:
        last: Any = None
        while True:
            self.check_alive()
            try:
                value = probe()
            except (httpx.HTTPError, OSError) as exc:
                value, last = None, exc
            if value:
                return value
            if value is not None:
                last = value
            if time.monotonic() > deadline:
                raise DeploymentError(
                    f"timed out waiting for {what} (last: {last!r}); logs in {self.logs}:\n" + self.describe_logs()
                )
            time.sleep(interval)

    def _wait_ready(self, deadline: float) -> None:
        def health() -> Any:
            response = httpx.get(f"{self.url}/api/v2/monitor/health", timeout=5)
            if response.status_code != 200:
                return False
            data = response.json()
            parts = {
                name: (data.get(name) or {}).get("status")
                for name in ("metadatabase", "scheduler", "triggerer", "dag_processor")
            }
            return True if all(s == "healthy" for s in parts.values()) else parts or False

        self._wait("api-server health: metadatabase, scheduler, triggerer, dag_processor healthy", health, deadline)
        self._wait(f"celery workers {self.worker_hostnames} to answer a ping", self._workers_answer, deadline, 1.0)

    def _workers_answer(self) -> Any:
        from celery import Celery

        app = Celery(broker=self.broker_url)
        try:
            replies = app.control.ping(timeout=1.0) or []
        except Exception as exc:  # the broker restarting (a fault test): try again
            raise OSError(f"celery ping through {self.broker_url}: {type(exc).__name__}: {exc}") from exc
        finally:
            app.close()
        seen = {name for reply in replies for name in reply}
        missing = set(self.worker_hostnames) - seen
        return True if not missing else sorted(seen) or False

    def wait_for_dags(
        self, dag_ids: Iterable[str], *, deadline: float | None = None, timeout: float = 180.0, unpause: bool = True
    ) -> None:
        """Wait until the dag-processor has serialized every DAG in ``dag_ids`` (failing early with the
        import error of a broken DAG file), then unpause them."""
        wanted = set(dag_ids)
        api = self.api()
        end = deadline if deadline is not None else time.monotonic() + timeout

        def parsed() -> Any:
            known = {d["dag_id"] for d in api.paginate("/api/v2/dags", "dags")}
            missing = wanted - known
            if not missing:
                return True
            errors = list(api.paginate("/api/v2/importErrors", "import_errors"))
            if errors and time.monotonic() > end - 1:
                return {"missing": sorted(missing), "import_errors": errors}
            return sorted(missing) or False

        self._wait(f"DAGs {sorted(wanted)} to be parsed", parsed, end, 1.0)
        if unpause:
            for dag_id in sorted(wanted):
                api.request("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False}, expect=200)

    def stop(self, timeout: float = 30.0) -> list[str]:
        """Stop every component (SIGTERM its group, wait, SIGKILL leftovers), drop the metadata DB, empty the
        Redis DB. Idempotent; returns what had to be forced."""
        if self._stopped:
            return []
        self._stopped = True
        forced: list[str] = []
        running = [c for c in self.components if c.proc is not None]
        for component in running:
            _signal_group(component.pgid or 0, signal.SIGTERM)
        end = time.monotonic() + timeout
        for component in running:
            assert component.proc is not None and component.pgid is not None
            with contextlib.suppress(subprocess.TimeoutExpired):
                component.proc.wait(timeout=max(0.1, end - time.monotonic()))
            while _group_members(component.pgid) and time.monotonic() < end:
                time.sleep(0.2)
        for component in running:
            assert component.proc is not None and component.pgid is not None
            if component.proc.poll() is None or _group_members(component.pgid):
                forced.append(component.name)
                _signal_group(component.pgid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    component.proc.wait(timeout=10)
        if self._created_db:
            with contextlib.suppress(Exception), pg_admin() as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.metadata_db}" WITH (FORCE)')
                self._created_db = False
        if self.redis_db is not None:
            with contextlib.suppress(Exception):
                release_redis_db(self.redis_db, self._redis_owner)
        if self.redis is not None:
            with contextlib.suppress(Exception):
                self.redis.remove()
        with contextlib.suppress(OSError):
            self._write_state()
        if self._reaper is not None and self._reaper.poll() is None:
            self._reaper.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._reaper.wait(timeout=5)
        if forced:
            print(f"[e2e] SIGKILLed after {timeout:g}s: {', '.join(forced)}", file=sys.stderr)
        return forced

    def leftovers(self) -> list[int]:
        """Processes of our groups still alive (must be none after stop())."""
        return [pid for c in self.components if c.pgid for pid in _group_members(c.pgid)]

    # -- access -----------------------------------------------------------------------------------------
    def token(self) -> str:
        if self._token is None:
            response = httpx.post(
                f"{self.url}/auth/token", json={"username": USERNAME, "password": self.password}, timeout=30
            )
            if response.status_code not in (200, 201):
                raise DeploymentError(f"POST /auth/token answered {response.status_code}: {response.text[:300]}")
            self._token = str(response.json()["access_token"])
        return self._token

    def api(self) -> AirflowApi:
        return AirflowApi(self.url, self.token())

    def log_files(self) -> dict[str, Path]:
        files = {c.name: c.log for c in self.components}
        files["db-migrate"] = self.logs / "db-migrate.log"
        files["task logs"] = self.home / "logs"
        return files

    def describe_logs(self, lines: int = 15) -> str:
        parts = [f"e2e output folder: {self.output_dir}"]
        for name, path in self.log_files().items():
            parts.append(f"  {name}: {path}")
        for component in self.components:
            parts.append(f"--- last {lines} lines of {component.name} ({component.log}) ---")
            parts.append(tail(component.log, lines))
        return "\n".join(parts)


class ApiError(AssertionError):
    pass


class AirflowApi:
    """A small REST v2 client (Bearer token) with pagination and run helpers."""

    def __init__(self, url: str, token: str | None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.Client(base_url=url, headers=headers, timeout=30)

    def request(
        self, method: str, path: str, *, expect: int | tuple[int, ...] | None = None, **kwargs: Any
    ) -> httpx.Response:
        response = self.client.request(method, path, **kwargs)
        wanted = (expect,) if isinstance(expect, int) else expect
        if wanted is not None and response.status_code not in wanted:
            raise ApiError(f"{method} {path} -> {response.status_code} (expected {wanted}): {response.text[:1000]}")
        return response

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None}, expect=200).json()

    def paginate(
        self,
        path: str,
        key: str,
        *,
        page_size: int = 100,
        params: dict[str, Any] | None = None,
        pages: list[int] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Every item of a list endpoint, ``page_size`` at a time (the API caps ``limit`` at 100); ``pages``
        collects the size of each page fetched."""
        offset = 0
        while True:
            query = {k: v for k, v in (params or {}).items() if v is not None}
            data = self.get(path, limit=page_size, offset=offset, **query)
            items = data[key]
            if pages is not None:
                pages.append(len(items))
            yield from items
            offset += len(items)
            if not items or offset >= data["total_entries"]:
                return

    # -- runs -------------------------------------------------------------------------------------------
    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None, run_id: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"logical_date": None, "conf": conf or {}}
        if run_id:
            body["dag_run_id"] = run_id
        return dict(self.request("POST", f"/api/v2/dags/{dag_id}/dagRuns", json=body, expect=200).json())

    def run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return dict(self.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}"))

    def wait_run(
        self, dag_id: str, run_id: str, timeout: float = 180.0, *, alive: Callable[[], None] | None = None
    ) -> dict[str, Any]:
        """Poll the run until it is success/failed; fail with its task states after ``timeout``."""
        end = time.monotonic() + timeout
        while True:
            run = self.run(dag_id, run_id)
            if run["state"] in TERMINAL_RUN_STATES:
                return run
            if alive is not None:
                alive()
            if time.monotonic() > end:
                states = {(t["task_id"], t["map_index"]): t["state"] for t in self.task_instances(dag_id, run_id)}
                raise ApiError(f"run {dag_id}/{run_id} still {run['state']} after {timeout:g}s; tasks: {states}")
            time.sleep(0.5)

    def task_instances(
        self, dag_id: str, run_id: str, *, page_size: int = 100, pages: list[int] | None = None
    ) -> list[dict[str, Any]]:
        return list(
            self.paginate(
                f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances",
                "task_instances",
                page_size=page_size,
                pages=pages,
            )
        )

    def xcom(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1, key: str = "return_value") -> Any:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}"
        data = self.request("GET", path, params={"map_index": map_index}, expect=200).json()
        value = data["value"]
        return json.loads(value) if isinstance(value, str) and value[:1] in "{[" else value


if __name__ == "__main__":  # pragma: no cover
    if len(sys.argv) == 4 and sys.argv[1] == "--reap":
        _reap(int(sys.argv[2]), Path(sys.argv[3]))
    else:
        sys.exit("usage: python -m tests.e2e.deployment --reap OWNER_PID STATE_FILE")
