"""A StatsD server for the e2e deployment: a UDP socket on loopback that keeps every metric line Airflow's
statsd logger sends, so tests can check the provider's metrics reach the deployment's metrics pipeline."""

from __future__ import annotations

import socket
import threading
import time


class StatsdListener:
    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="e2e-statsd", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                data, _ = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.lines.extend(line for line in data.decode("utf-8", "replace").splitlines() if line)

    def matching(self, prefix: str) -> list[str]:
        with self._lock:
            return [line for line in self.lines if line.startswith(prefix)]

    def wait_for(self, prefix: str, count: int = 1, timeout: float = 30.0) -> list[str]:
        end = time.monotonic() + timeout
        while True:
            found = self.matching(prefix)
            if len(found) >= count or time.monotonic() > end:
                return found
            time.sleep(0.2)

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        self._thread.join(timeout=2)
