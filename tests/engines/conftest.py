"""Helpers shared by the engine tests: worker processes, polling, shards."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from airflow_provider_shardmigrate.core.topology import Shard
from tests.server_fixtures import REPO, conn_id_for

T = TypeVar("T")


@pytest.fixture(scope="session", autouse=True)
def _warm_imports() -> None:
    """Import the hooks and drivers once up front, so no timed test pays Airflow's import cost in its deadline."""
    import airflow.providers.mysql.hooks.mysql
    import airflow.providers.postgres.hooks.postgres
    import airflow.providers.sqlite.hooks.sqlite  # noqa: F401

    from airflow_provider_shardmigrate.engines import engine_class

    for conn_type in ("sqlite", "postgres", "mysql"):
        engine_class(conn_type)


def shard(shard_id: str) -> Shard:
    return Shard(shard_id, conn_id_for(shard_id))


def wait_for(probe: Callable[[], T], timeout: float = 15.0, interval: float = 0.05, what: str = "condition") -> T:
    """Poll ``probe`` until it returns something truthy; fail the test after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > end:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def worker_env() -> dict[str, str]:
    """The test process's env (AIRFLOW_HOME, AIRFLOW_CONN_*), with bytecode caching so imports are quick."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.setdefault("PYTHONPYCACHEPREFIX", str(REPO / ".cache" / "pycache"))
    return env


class Workers:
    """Worker processes running ``tests/engines/apply_worker.py``; killed at teardown if still alive."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, migration: Path, shard_id: str, *, name: str = "w", sync: bool = False) -> subprocess.Popen[str]:
        cmd = [
            sys.executable,
            "-m",
            "tests.engines.apply_worker",
            "--migration",
            str(migration),
            "--shard",
            shard_id,
            "--conn-id",
            conn_id_for(shard_id),
        ]
        if sync:
            cmd += ["--ready", str(self.tmp_path / f"{name}.ready"), "--go", str(self.tmp_path / "go")]
        proc = subprocess.Popen(
            cmd, cwd=REPO, env=worker_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.procs.append(proc)
        return proc

    def wait_ready(self, *names: str, timeout: float = 60.0) -> None:
        wait_for(
            lambda: all((self.tmp_path / f"{n}.ready").exists() for n in names),
            timeout,
            what=f"workers {names} to import",
        )

    def go(self) -> None:
        (self.tmp_path / "go").write_text("go")

    @staticmethod
    def result(proc: subprocess.Popen[str], timeout: float = 60.0) -> dict[str, Any]:
        out, err = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, f"worker failed ({proc.returncode}): {err[-3000:]}"
        lines = [line for line in out.splitlines() if line.startswith("{")]
        assert lines, f"worker printed no status: {out[-2000:]} {err[-2000:]}"
        return dict(json.loads(lines[-1]))

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    pool = Workers(tmp_path)
    yield pool
    pool.close()
