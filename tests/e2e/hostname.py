"""``[core] hostname_callable`` of the e2e deployment: a task instance's ``hostname`` is the Celery node name of
the worker that runs it (``e2e-worker-1-<token>@127.0.0.1``), so the two workers of one machine look like the
two machines they stand for in the REST API (``hostname`` of a task instance).

Airflow's default (the machine's FQDN) would give both workers the same name. The Celery worker's pool
processes, the task supervisors they fork and the task processes are all descendants of the worker's main
process, whose command line names the node (``--celery-hostname``, or ``[celeryd: <node>:...]`` once Celery
has retitled it); any other process (scheduler, api-server) keeps the FQDN.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path

_RETITLED = re.compile(r"\[celeryd: (?P<node>[^\s:\]]+)")


def _parent(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rfind(")") + 2 :].split()[1])


def node_of(cmdline: list[str]) -> str | None:
    """The Celery node name a worker process's command line names, if any."""
    if "--celery-hostname" in cmdline:
        index = cmdline.index("--celery-hostname")
        if index + 1 < len(cmdline):
            return cmdline[index + 1]
    found = _RETITLED.search(" ".join(cmdline))
    return found.group("node") if found else None


def worker_hostname() -> str:
    pid, seen = int(Path("/proc/self/stat").read_text().split()[0]), 0
    try:
        while pid > 1 and seen < 32:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
            node = node_of([part.decode(errors="replace") for part in raw.split(b"\0") if part])
            if node:
                return node
            pid, seen = _parent(pid), seen + 1
    except (OSError, ValueError, IndexError):
        pass
    return socket.getfqdn()
