"""The end-to-end tests' Airflow deployment: the package's local deployment
(airflow_provider_shardmigrate/local/deployment.py, the same code ``make airflow`` runs) plus what only the
tests need.

:class:`Deployment` here is the package's CeleryExecutor deployment with a throwaway metadata database, and:

* ``own_redis=True``: a ``redis-server`` of the deployment's own as the broker (tests/e2e/servers.py, on a free
  port with its data in the output folder), so a fault test may restart it; otherwise a DB number claimed
  empty on the local Redis;
* every run's files under ``test-output/e2e/<timestamp>-<pid>[-label]/`` (:func:`new_output_dir`), and a later
  run sweeps the runs whose owner process is gone (their process groups, metadata DB, shard databases);
* the shard databases a test created (``shard_databases``), MariaDB ones included, dropped by the reaper if
  the test process dies before its teardown (:func:`drop_test_databases`, the deployment's clean-up hook).

Fault injection (tests/e2e/test_faults.py): :meth:`Deployment.kill_component` SIGKILLs a component's whole
process tree, :meth:`Deployment.stop_component` / :meth:`Deployment.start_component` restart one,
:meth:`Deployment.component_of` says which component runs a task's pid, and :meth:`Deployment.register_server`
records a server a test started so the reaper stops it too.

Usable without pytest (``bench/bench_e2e_rollout.py``): failures raise :class:`DeploymentError`.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_provider_shardmigrate.local import services
from airflow_provider_shardmigrate.local.api import TERMINAL_RUN_STATES, AirflowApi, ApiError
from airflow_provider_shardmigrate.local.deployment import (
    STATE_FILE,
    USERNAME,
    Component,
    DeploymentError,
    clean_up_run,
)
from airflow_provider_shardmigrate.local.deployment import Deployment as LocalDeployment
from airflow_provider_shardmigrate.local.processes import ancestors, free_port, pid_alive, process_tree, tail
from airflow_provider_shardmigrate.local.services import (
    PG_HOST,
    PG_PORT,
    PG_USER,
    REDIS_HOST,
    REDIS_PORT,
    claim_redis_db,
    pg_admin,
    release_redis_db,
)

if TYPE_CHECKING:
    from tests.e2e.servers import RedisServer

__all__ = [
    "OUTPUT_ROOT",
    "PG_HOST",
    "PG_PORT",
    "PG_USER",
    "REDIS_HOST",
    "REDIS_PORT",
    "REPO",
    "TERMINAL_RUN_STATES",
    "USERNAME",
    "AirflowApi",
    "ApiError",
    "Component",
    "Deployment",
    "DeploymentError",
    "ancestors",
    "check_servers",
    "claim_redis_db",
    "clean_up_run",
    "drop_test_databases",
    "free_port",
    "new_output_dir",
    "pg_admin",
    "process_tree",
    "release_redis_db",
    "sweep_stale_runs",
    "tail",
]

REPO = Path(__file__).resolve().parents[2]
OUTPUT_ROOT = REPO / "test-output" / "e2e"
CLEANUP_HOOK = f"{__name__}:drop_test_databases"


def new_output_dir(label: str = "") -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = OUTPUT_ROOT / f"{stamp}-{os.getpid()}{'-' + label if label else ''}"
    path.mkdir(parents=True, exist_ok=False)
    return path


def check_servers(*, redis_needed: bool = True) -> None:
    """Raise DeploymentError naming the server that is missing (PostgreSQL or, when used, the local Redis)."""
    try:
        services.check_servers(redis_needed=redis_needed)
    except services.ServiceError as exc:
        raise DeploymentError(str(exc)) from None


def drop_test_databases(state: dict[str, Any]) -> list[str]:
    """The reaper's clean-up hook: the MariaDB shard databases of a run whose test process died (the package
    drops its PostgreSQL ones itself)."""
    done: list[str] = []
    databases = (state.get("shard_databases") or {}).get("mysql") or []
    if databases:
        with contextlib.suppress(Exception):
            from tests.server_fixtures import MySqlServer

            server = MySqlServer()
            for database in databases:
                server.drop_database(database)
                done.append(f"dropped {database}")
    return done


def sweep_stale_runs() -> list[str]:
    """Clean up after earlier runs whose owner process is gone (killed before it could stop its deployment)."""
    done: list[str] = []
    if not OUTPUT_ROOT.exists():
        return done
    for state_file in OUTPUT_ROOT.glob(f"*/{STATE_FILE}"):
        try:
            owner = int(json.loads(state_file.read_text()).get("owner_pid", 0))
        except (OSError, ValueError):
            continue
        if not pid_alive(owner):
            done += clean_up_run(state_file)
    return done


@dataclass
class Deployment(LocalDeployment):
    """The e2e deployment: CeleryExecutor, two workers, a throwaway metadata DB (see the module docstring)."""

    cleanup_hook: str | None = CLEANUP_HOOK
    reaper_cwd: Path | None = REPO
    #: Run a Redis of the deployment's own as the broker (restartable by a test) instead of a DB number on
    #: the local shared Redis.
    own_redis: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        self.redis: RedisServer | None = None

    def environment(self) -> dict[str, str]:
        env = super().environment()
        env.setdefault("PYTHONPYCACHEPREFIX", str(REPO / ".cache" / "pycache"))
        return env

    def _before_start(self) -> None:
        import sys

        swept = sweep_stale_runs()
        if swept:
            print(f"[e2e] cleaned up after earlier runs: {', '.join(swept)}", file=sys.stderr)

    def _check_servers(self) -> None:
        check_servers(redis_needed=not self.own_redis)

    def _start_broker(self) -> None:
        if not self.own_redis:
            super()._start_broker()
            return
        from tests.e2e.servers import RedisServer, ServerError

        self.redis = RedisServer(self.output_dir / "redis")
        self.register_server(self.redis)
        try:
            self.redis.start()
        except ServerError as exc:
            raise DeploymentError(f"the deployment's own Redis did not start: {exc}") from None

    def _broker_known(self) -> bool:
        return self.redis is not None or super()._broker_known()

    @property
    def broker_url(self) -> str:
        if self.redis is not None:
            return self.redis.url
        return super().broker_url

    def _restart_broker(self) -> bool:
        if self.redis is not None and (self.redis.proc is None or self.redis.proc.poll() is not None):
            self.redis.start()
            return True
        return False

    def _stop_extras(self) -> None:
        if self.redis is not None:
            with contextlib.suppress(Exception):
                self.redis.remove()
