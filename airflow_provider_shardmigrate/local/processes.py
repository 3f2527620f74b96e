"""Processes of a local deployment: each component runs in a session (and process group) of its own, is told by
the kernel to stop when its parent dies (``PR_SET_PDEATHSIG``), and is stopped by signalling its whole group.
What is running is read from /proc (Linux)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether ``port`` can be bound on ``host`` (what a server about to start there needs)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


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


def child_setup() -> None:  # pragma: no cover - runs in the child between fork and exec
    """The child is already a session leader (``start_new_session``); ask the kernel to SIGTERM it when
    its parent dies, however it dies."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stat_fields() -> Iterable[tuple[int, list[str]]]:
    """(pid, the fields of /proc/<pid>/stat after the command name) of every live (non-zombie) process."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...; comm may contain spaces/parentheses: split after the last ')'.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and fields[0] != "Z":
            yield int(entry.name), fields


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``."""
    return [pid for pid, fields in _stat_fields() if int(fields[2]) == pgid]


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return b""


def group_is_airflow(pgid: int) -> bool:
    """Guard against a recycled id: only a group whose live members run airflow is ours to kill (its leader
    may be gone while its children -- a Celery pool process, a task supervisor -- are still there)."""
    for pid in group_members(pgid):
        line = cmdline(pid)
        if b"airflow" in line or b"celery" in line:  # Celery retitles its processes
            return True
    return False


def signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def parents() -> dict[int, int]:
    """pid -> parent pid of every live (non-zombie) process."""
    return {pid: int(fields[1]) for pid, fields in _stat_fields()}


def process_tree(root: int) -> list[int]:
    """``root`` and all its live descendants, whatever their process group (task processes have their own)."""
    table = parents()
    tree, frontier = [], [root] if root in table else []
    while frontier:
        pid = frontier.pop()
        tree.append(pid)
        frontier.extend(child for child, parent in table.items() if parent == pid)
    return tree


def ancestors(pid: int) -> list[int]:
    """``pid`` and its parents up to init."""
    table = parents()
    chain = []
    while pid in table and pid not in chain:
        chain.append(pid)
        pid = table[pid]
    return chain


def start_times() -> dict[int, int]:
    """pid -> start time (clock ticks since boot) of every live process: a pid with the same start time is
    the same process (not a recycled id)."""
    return {pid: int(fields[19]) for pid, fields in _stat_fields() if len(fields) > 19}


def snapshot(roots: Iterable[int]) -> dict[int, int]:
    """Every live process in the trees of ``roots`` and in their process groups, with its start time."""
    table, times = parents(), start_times()
    groups = set(roots)
    found: set[int] = set()
    frontier = [pid for pid in table if pid in groups or pgid_of(pid) in groups]
    while frontier:
        pid = frontier.pop()
        if pid in found:
            continue
        found.add(pid)
        frontier.extend(child for child, parent in table.items() if parent == pid and child not in found)
    return {pid: times[pid] for pid in found if pid in times}


def pgid_of(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def still_alive(processes: dict[int, int]) -> list[int]:
    """The processes of a :func:`snapshot` that still run (same pid, same start time)."""
    times = start_times()
    return sorted(pid for pid, began in processes.items() if times.get(pid) == began)


def kill_all(processes: dict[int, int]) -> list[int]:
    """SIGKILL the processes of a :func:`snapshot` that still run; returns them."""
    left = still_alive(processes)
    for pid in left:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    return left


def stop_groups(pgids: Iterable[int], grace: float) -> list[int]:
    """SIGTERM every group, wait up to ``grace`` seconds for all their members to go, SIGKILL the groups that
    still have members; returns those."""
    groups = [pgid for pgid in pgids if group_members(pgid)]
    for pgid in groups:
        signal_group(pgid, signal.SIGTERM)
    end = time.monotonic() + grace
    while time.monotonic() < end and any(group_members(pgid) for pgid in groups):
        time.sleep(0.2)
    forced = [pgid for pgid in groups if group_members(pgid)]
    for pgid in forced:
        signal_group(pgid, signal.SIGKILL)
    return forced
