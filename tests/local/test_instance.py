"""One local Airflow per working folder (airflow_provider_shardmigrate/local/instance.py) and the ``shardmigrate
airflow`` refusals that start nothing: a folder it did not make, a running instance, a taken port."""

from __future__ import annotations

import json
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from airflow_provider_shardmigrate.cli import main
from airflow_provider_shardmigrate.local.deployment import clean_up_run
from airflow_provider_shardmigrate.local.instance import (
    AlreadyRunning,
    InstanceLock,
    load_secrets,
    metadata_db_name,
    write_instance,
)
from airflow_provider_shardmigrate.local.processes import free_port, group_members


def test_one_instance_per_folder_and_the_refusal_names_the_running_one(tmp_path: Path) -> None:
    lock = InstanceLock.acquire(tmp_path)
    write_instance(tmp_path, url="http://127.0.0.1:8123", executor="local", ready=True)
    with pytest.raises(AlreadyRunning) as refused:
        InstanceLock.acquire(tmp_path)
    message = str(refused.value)
    assert "already running" in message and "http://127.0.0.1:8123" in message and "local executor" in message
    lock.release()
    InstanceLock.acquire(tmp_path).release()


def test_secrets_are_private_generated_once_and_kept(tmp_path: Path) -> None:
    first = load_secrets(tmp_path)
    (tmp_path / "simple_auth_manager_passwords.json").write_text(json.dumps({"admin": "kept-password"}))
    second = load_secrets(tmp_path)
    assert (second.fernet_key, second.jwt_secret) == (first.fernet_key, first.jwt_secret)
    assert second.password == "kept-password"
    assert len(first.jwt_secret.encode()) >= 64
    assert stat.S_IMODE((tmp_path / "local-secrets.json").stat().st_mode) == 0o600


def test_each_folder_has_its_own_metadata_database(tmp_path: Path) -> None:
    name = metadata_db_name(tmp_path / "a")
    assert name == metadata_db_name(tmp_path / "a")
    assert name != metadata_db_name(tmp_path / "b")
    # the test fixtures sweep databases named sm_<dead pid>_...: never a user's instance
    assert name.startswith("shardmigrate_airflow_") and not name.startswith("sm_")


def test_clean_up_run_kills_the_groups_a_dead_owner_left_and_only_once(tmp_path: Path) -> None:
    leftover = subprocess.Popen(["bash", "-c", "exec -a 'airflow triggerer' sleep 60"], start_new_session=True)
    try:
        state = tmp_path / "deployment.json"
        state.write_text(json.dumps({"owner_pid": 999999999, "pgids": [leftover.pid], "stopped": False}))
        end = time.monotonic() + 10
        while b"airflow" not in Path(f"/proc/{leftover.pid}/cmdline").read_bytes():
            assert time.monotonic() < end
            time.sleep(0.05)
        done = clean_up_run(state, grace=5.0)
        leftover.wait(timeout=10)
        assert not group_members(leftover.pid)
        assert json.loads(state.read_text())["stopped"] is True
        assert clean_up_run(state) == [] and done == []  # stopped by SIGTERM within the grace: nothing forced
    finally:
        if leftover.poll() is None:
            leftover.kill()


def test_refuses_a_folder_it_did_not_make(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["airflow", "--workdir", str(tmp_path)]) == 2
    assert "was not made by `shardmigrate airflow`" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_refuses_a_running_folder_before_anything_else(tmp_path: Path) -> None:
    workdir = tmp_path / "shardmigrate-airflow"
    lock = InstanceLock.acquire(workdir)
    write_instance(workdir, url="http://127.0.0.1:8124", executor="celery", ready=True)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "airflow_provider_shardmigrate.cli", "airflow", "--workdir", str(workdir)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        lock.release()
    assert done.returncode == 3, done.stdout + done.stderr
    assert "already running" in done.stdout and "http://127.0.0.1:8124" in done.stdout


def test_a_taken_port_is_refused_and_leaves_no_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    workdir = tmp_path / "new"
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        assert main(["airflow", "--workdir", str(workdir), "--port", str(port)]) == 4
    assert f"port {port} on 127.0.0.1 is taken" in capsys.readouterr().out
    assert not workdir.exists()


def test_the_readme_quick_start_has_the_three_commands_and_the_walk_through_fixes_the_shard_as_tested() -> None:
    from airflow_provider_shardmigrate.cli.demo_fleet import LEGACY_FIX_SQL, LEGACY_SHARD

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    quick_start = readme.split("## Quick start", 1)[1].split("```", 2)[1]
    assert [line.split()[1] for line in quick_start.splitlines() if line.startswith("make ")] == [
        "demo",
        "airflow",
        "test",
    ]
    walk_through = readme.split("## See it in the Airflow UI", 1)[1].split("\n## ", 1)[0]
    # the command the README gives is the fix tests/local/test_airflow_command.py applies
    assert f'shardmigrate-airflow/shards/{LEGACY_SHARD}.db "{LEGACY_FIX_SQL}"' in walk_through
