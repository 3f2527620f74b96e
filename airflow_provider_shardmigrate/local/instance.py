"""One long-lived local Airflow in a working folder (``shardmigrate airflow``): at most one runs per folder
(a lock file, held for the instance's life and released by the kernel however it ends), its metadata database
and secrets are kept across starts (runs survive a restart), and a start cleans up after a previous one that
was killed before it could stop (its process groups, from the deployment's state file).

Layout of the working folder::

    .airflow.lock            held (flock) by the running instance
    instance.json            pid, url, executor of the running (or last) instance -- no secret
    deployment.json          the deployment's state (process groups, Redis DB) for the reaper
    airflow-home/            AIRFLOW_HOME: simple_auth_manager_passwords.json (0600), local-secrets.json
                             (Fernet key, JWT secret; 0600), task logs under logs/
    logs/                    one log per process: api-server, scheduler, dag-processor, triggerer, worker-1
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airflow_provider_shardmigrate.local import services
from airflow_provider_shardmigrate.local.deployment import (
    PASSWORDS_FILE,
    STATE_FILE,
    USERNAME,
    clean_up_run,
    write_private,
)
from airflow_provider_shardmigrate.local.processes import pid_alive

LOCK_FILE = ".airflow.lock"
INSTANCE_FILE = "instance.json"
HOME = "airflow-home"
SECRETS_FILE = "local-secrets.json"
DB_PREFIX = "shardmigrate_airflow_"


class AlreadyRunning(RuntimeError):
    """Another instance holds the working folder's lock; the message names it and its URL."""


def metadata_db_name(workdir: Path) -> str:
    """The working folder's metadata database on the local PostgreSQL: one per folder (two clones never share
    one), the same on every start."""
    return DB_PREFIX + hashlib.sha256(str(workdir.resolve()).encode()).hexdigest()[:12]


def read_instance(workdir: Path) -> dict[str, Any]:
    try:
        return dict(json.loads((workdir / INSTANCE_FILE).read_text()))
    except (OSError, ValueError):
        return {}


def describe_running(workdir: Path) -> str:
    info = read_instance(workdir)
    pid, url = info.get("pid"), info.get("url")
    if not pid:
        return f"another `shardmigrate airflow` is starting in {workdir}"
    state = "running" if info.get("ready") else "starting"
    return (
        f"`shardmigrate airflow` is already {state} in {workdir} (pid {pid}, {info.get('executor', '?')} "
        f"executor) at {url} -- open that URL, or stop it first (Ctrl-C in its terminal, or `kill {pid}`)"
    )


@dataclass
class InstanceLock:
    """The working folder's lock, held while the instance lives."""

    path: Path
    fd: int

    @classmethod
    def acquire(cls, workdir: Path) -> InstanceLock:
        workdir.mkdir(parents=True, exist_ok=True)
        path = workdir / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AlreadyRunning(describe_running(workdir)) from None
        return cls(path, fd)

    def release(self) -> None:
        with contextlib.suppress(OSError):
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)


@dataclass
class LocalSecrets:
    password: str
    fernet_key: str
    jwt_secret: str


def load_secrets(home: Path) -> LocalSecrets:
    """The instance's password, Fernet key and JWT secret: kept in files only the owner may read, generated the
    first time (the same Fernet key every start: connections created in the UI stay readable)."""
    home.mkdir(parents=True, exist_ok=True)
    kept: dict[str, str] = {}
    with contextlib.suppress(OSError, ValueError):
        kept = dict(json.loads((home / SECRETS_FILE).read_text()))
    with contextlib.suppress(OSError, ValueError):
        kept["password"] = str(json.loads((home / PASSWORDS_FILE).read_text())[USERNAME])
    if not kept.get("fernet_key") or not kept.get("jwt_secret"):
        from cryptography.fernet import Fernet

        kept["fernet_key"] = kept.get("fernet_key") or Fernet.generate_key().decode()
        kept["jwt_secret"] = kept.get("jwt_secret") or secrets.token_urlsafe(64)
        write_private(
            home / SECRETS_FILE, json.dumps({k: kept[k] for k in ("fernet_key", "jwt_secret")}, indent=2) + "\n"
        )
    return LocalSecrets(kept.get("password") or secrets.token_urlsafe(18), kept["fernet_key"], kept["jwt_secret"])


def clean_up_previous(workdir: Path) -> list[str]:
    """What a previous instance left running when it was killed (SIGKILL: no handler ran) -- its process
    groups -- and its claimed Redis DB. Only called while holding the lock, so that instance is gone."""
    state_file = workdir / STATE_FILE
    try:
        owner = int(json.loads(state_file.read_text()).get("owner_pid") or 0)
    except (OSError, ValueError):
        return []
    if owner and pid_alive(owner) and owner != os.getpid():
        # The lock says no instance runs here: a live pid is a recycled one (or a reaper still at work).
        time.sleep(0.5)
    return clean_up_run(state_file, grace=10.0)


def write_instance(workdir: Path, **info: Any) -> None:
    (workdir / INSTANCE_FILE).write_text(json.dumps({"pid": os.getpid(), **info}, indent=2) + "\n")


def wipe(workdir: Path, keep: tuple[str, ...] = (LOCK_FILE,)) -> None:
    """Delete the working folder's content (but the lock held on it) and its metadata database."""
    with contextlib.suppress(Exception):
        services.drop_database(metadata_db_name(workdir))
    for entry in workdir.iterdir():
        if entry.name in keep:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
