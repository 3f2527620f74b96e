"""The local deployment's process handling (airflow_provider_shardmigrate/local/processes.py) on real processes:
snapshots of a process tree and its groups, stopping groups (SIGTERM, then SIGKILL for what ignores it), killing
orphans, ports."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from airflow_provider_shardmigrate.local.processes import (
    free_port,
    group_is_airflow,
    group_members,
    kill_all,
    port_is_free,
    snapshot,
    still_alive,
    stop_groups,
)


@pytest.fixture
def spawned() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def _spawn(procs: list[subprocess.Popen[bytes]], script: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(["bash", "-c", script], start_new_session=True)
    procs.append(proc)
    return proc


def _wait(probe: object, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not probe():  # type: ignore[operator]
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


def test_snapshot_holds_the_tree_and_the_groups_of_its_descendants(spawned: list[subprocess.Popen[bytes]]) -> None:
    # a child in a session of its own (like a task process): found through the tree, not the group
    proc = _spawn(spawned, "sleep 60 & setsid sleep 61 & wait")
    _wait(lambda: len(snapshot([proc.pid])) == 3)
    seen = snapshot([proc.pid])
    assert proc.pid in seen and len(seen) == 3
    assert kill_all(seen) == sorted(seen)
    _wait(lambda: not still_alive(seen))
    assert still_alive(seen) == []


def test_stop_groups_sigterms_then_kills_what_ignores_it(spawned: list[subprocess.Popen[bytes]]) -> None:
    polite = _spawn(spawned, "sleep 60")
    stubborn = _spawn(spawned, "trap '' TERM; sleep 60 & wait")
    _wait(lambda: len(group_members(stubborn.pid)) == 2)
    forced = stop_groups([polite.pid, stubborn.pid], grace=1.0)
    assert forced == [stubborn.pid]
    _wait(lambda: not group_members(stubborn.pid) and not group_members(polite.pid))


def test_only_groups_running_airflow_count_as_ours(spawned: list[subprocess.Popen[bytes]]) -> None:
    other = _spawn(spawned, "sleep 60")
    ours = _spawn(spawned, "exec -a 'airflow scheduler' sleep 60")
    _wait(lambda: group_is_airflow(ours.pid))
    assert not group_is_airflow(other.pid)


def test_port_is_free_until_something_listens() -> None:
    port = free_port()
    assert port_is_free(port)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", port))
        server.listen()
        assert not port_is_free(port)
    assert port_is_free(port)
