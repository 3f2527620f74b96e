"""The package as users install it: what ``pip install .`` and each extra bring, and a fresh virtualenv with
``.[sqlite]`` alone that builds and runs a real SQLite migration DAG.

Installs go through uv (next to this interpreter; ``make install`` puts it there) with the shared uv cache,
offline first (the cache holds everything ``make install`` installed, and a fresh virtualenv then takes about a
second), online when the cache lacks something. Versions are constrained to requirements.lock, which never adds a
package, so what is resolved is exactly what pyproject.toml declares, at the versions everything else is tested with.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements.lock"
SCENARIO = REPO / "tests" / "packaging_sqlite_dag.py"
UV = Path(sys.executable).with_name("uv")

#: extra -> the Airflow provider and the driver it must bring (normalized names)
EXTRA_PACKAGES = {
    "sqlite": {"apache-airflow-providers-sqlite"},
    "postgres": {"apache-airflow-providers-postgres", "psycopg"},
    "mysql": {"apache-airflow-providers-mysql", "mysqlclient"},
    "mssql": {"apache-airflow-providers-microsoft-mssql", "pymssql"},
    "mongo": {"apache-airflow-providers-mongo", "pymongo"},
}
#: what every install brings: Airflow, the SQL and standard providers, the libraries the package imports
BASE_PACKAGES = {
    "apache-airflow",
    "apache-airflow-providers-common-sql",
    "apache-airflow-providers-standard",
    "pyyaml",
    "sqlparse",
    "rich",
}
#: executor packages: the deployment's choice, never a dependency of the provider (the e2e extra has them)
EXECUTOR_PACKAGES = {"celery", "apache-airflow-providers-celery", "flower"}
_INSTALL_LINE = re.compile(r"^\s*\+ ([A-Za-z0-9_.-]+)(?:==(\S+)| @ )", re.M)


def clean_env() -> dict[str, str]:
    """This process's environment without the test session's Airflow settings and any Python/venv override."""
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AIRFLOW", "PYTHON", "_AIRFLOW")) and key not in ("VIRTUAL_ENV", "CONDA_PREFIX")
    }


def uv(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    assert UV.is_file(), f"uv not found at {UV} (make install puts it next to the project's python)"
    return subprocess.run(
        [str(UV), *args], capture_output=True, text=True, env=clean_env(), cwd=REPO, timeout=timeout, check=False
    )


def pip_install(python: Path, spec: str, *options: str) -> subprocess.CompletedProcess[str]:
    """``uv pip install SPEC`` into ``python``'s environment: offline from the shared cache, else online."""
    command = ["pip", "install", "--python", str(python), spec, "-c", str(LOCK), *options]
    done = uv(*command, "--offline")
    if done.returncode != 0:
        online = uv(*command)
        assert online.returncode == 0, (
            f"uv pip install {spec} failed offline:\n{done.stderr[-3000:]}\nand online:\n{online.stderr[-3000:]}"
        )
        return online
    return done


def new_venv(path: Path) -> Path:
    done = uv("venv", "--quiet", "--python", sys.executable, str(path))
    assert done.returncode == 0, done.stderr
    return path / "bin" / "python"


def resolved(output: str) -> dict[str, str]:
    """name -> version ("local" for the project itself) of the `` + name==version`` lines uv prints."""
    return {name.lower(): version or "local" for name, version in _INSTALL_LINE.findall(output)}


@pytest.fixture(scope="module")
def empty_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtualenv with nothing installed: the target of the dry runs."""
    return new_venv(tmp_path_factory.mktemp("empty-venv") / "venv")


def dry_run(python: Path, extras: str = "") -> dict[str, str]:
    spec = f"{REPO}[{extras}]" if extras else str(REPO)
    done = pip_install(python, spec, "--dry-run")
    packages = resolved(done.stderr + done.stdout)
    assert "airflow-provider-shardmigrate" in packages, done.stderr
    return packages


def test_plain_install_brings_airflow_but_no_executor_and_no_database_driver(empty_venv: Path) -> None:
    packages = dry_run(empty_venv)
    assert set(packages) >= BASE_PACKAGES, BASE_PACKAGES - set(packages)
    assert packages["apache-airflow"].startswith("3.3."), packages["apache-airflow"]
    assert not EXECUTOR_PACKAGES & set(packages), "pip install . pulls an executor"
    family = set().union(*EXTRA_PACKAGES.values())
    assert not family & set(packages), f"pip install . pulls database packages: {family & set(packages)}"


@pytest.mark.parametrize("extra", list(EXTRA_PACKAGES))
def test_each_database_extra_brings_its_provider_and_driver_and_nothing_of_the_others(
    empty_venv: Path, extra: str
) -> None:
    packages = set(dry_run(empty_venv, extra))
    assert EXTRA_PACKAGES[extra] <= packages, f"[{extra}] misses {EXTRA_PACKAGES[extra] - packages}"
    others = set().union(*(wanted for name, wanted in EXTRA_PACKAGES.items() if name != extra))
    assert not others & packages, f"[{extra}] also pulls {others & packages}"
    assert not EXECUTOR_PACKAGES & packages, f"[{extra}] pulls an executor"


def test_all_is_every_database_family_without_an_executor(empty_venv: Path) -> None:
    packages = set(dry_run(empty_venv, "all"))
    family = set().union(*EXTRA_PACKAGES.values())
    assert family <= packages, family - packages
    assert not EXECUTOR_PACKAGES & packages


def test_the_lock_covers_every_extra_and_keeps_celery_below_5_7(empty_venv: Path) -> None:
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert {"sqlite", "postgres", "mysql", "mssql", "mongo", "all", "e2e", "dev"} <= set(extras)
    packages = dry_run(empty_venv, ",".join(extras))
    pinned = dict(re.findall(r"^([a-z0-9][a-z0-9_.-]*)==(\S+)", LOCK.read_text(), re.M))
    del packages["airflow-provider-shardmigrate"]
    missing = {name: version for name, version in packages.items() if pinned.get(name) != version}
    assert not missing, f"requirements.lock is stale (run make lock): not pinned there {missing}"
    major, minor = (int(part) for part in pinned["celery"].split(".")[:2])
    assert (major, minor) < (5, 7), f"celery {pinned['celery']}: 5.7 breaks the Celery provider"
    assert {"apache-airflow-providers-celery", "celery"} <= set(packages), "the e2e tests need the CeleryExecutor"


@pytest.fixture(scope="module")
def sqlite_only_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with ``.[sqlite]`` and nothing else."""
    python = new_venv(tmp_path_factory.mktemp("sqlite-venv") / "venv")
    pip_install(python, f"{REPO}[sqlite]")
    return python


def test_sqlite_extra_alone_builds_and_runs_a_migration_dag(sqlite_only_venv: Path, tmp_path: Path) -> None:
    listed = uv("pip", "list", "--format", "json", "--python", str(sqlite_only_venv))
    assert listed.returncode == 0, listed.stderr
    installed = {package["name"].lower() for package in json.loads(listed.stdout)}
    assert "apache-airflow-providers-sqlite" in installed
    for extra, packages in EXTRA_PACKAGES.items():
        if extra != "sqlite":
            assert not packages & installed, f"[sqlite] installed {packages & installed}"
    assert not EXECUTOR_PACKAGES & installed

    # -I: no PYTHONPATH, no user site, not even the script's folder -- the package comes from the new venv only.
    done = subprocess.run(
        [str(sqlite_only_venv), "-I", str(SCENARIO), str(tmp_path)],
        capture_output=True,
        text=True,
        env=clean_env(),
        cwd=tmp_path,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-5000:]}"
    result = json.loads(done.stdout.strip().splitlines()[-1])
    site_packages = sqlite_only_venv.parent.parent / "lib"
    assert Path(result["package_file"]).is_relative_to(site_packages), result["package_file"]
    assert result["dag_id"] == "shardmigrate__001_add_customer_email"
    assert "shards.shard-0" in result["task_ids"]
    assert result["state"] == "success", done.stderr[-5000:]
    assert result["report"]["shards"]["shard-0"]["outcome"] == "succeeded", result["report"]

    conn = sqlite3.connect(tmp_path / "shard-0.db")
    try:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(customers)")}
        indexes = {row[1] for row in conn.execute("PRAGMA index_list(customers)")}
        history = conn.execute(
            "SELECT status, checksum, statements_applied, statements_total FROM shardmigrate_history "
            "WHERE migration_id = '001_add_customer_email'"
        ).fetchall()
    finally:
        conn.close()
    assert "email" in columns and "idx_customers_email" in indexes
    assert len(history) == 1
    status, checksum, applied, total = history[0]
    assert status == "applied" and str(checksum).startswith("sha256:") and applied == total == 2
