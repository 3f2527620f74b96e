"""The fleet pool: bounded concurrency, and a shard that hangs is abandoned, not waited for forever.

The introspector here is a stand-in callable (the pool takes any), so the behaviour of the pool itself
is what is tested; the real introspectors are tested against real databases in test_engines.py.
"""

from __future__ import annotations

import threading
import time

import pytest

from airflow_provider_shardmigrate.core.errors import SchemaComparisonFailedError
from airflow_provider_shardmigrate.core.schema import Schema
from airflow_provider_shardmigrate.core.topology import DriftDepth, Shard, parse_topology
from airflow_provider_shardmigrate.engines import introspect as introspect_module
from airflow_provider_shardmigrate.engines.introspect import detect_drift, introspect_fleet

SHARDS = [Shard(f"s{i}", f"s{i}") for i in range(10)]


def test_concurrency_is_bounded():
    lock = threading.Lock()
    running = 0
    peak = 0

    def slow(shard: Shard, depth: DriftDepth, *, timeout: float) -> Schema:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.05)
        with lock:
            running -= 1
        return Schema.build("sqlite", depth, ())

    began = time.monotonic()
    schemas, errors = introspect_fleet(SHARDS, DriftDepth.TABLES_ONLY, max_workers=3, introspect=slow)
    assert set(schemas) == {s.id for s in SHARDS} and not errors
    assert 1 < peak <= 3
    assert time.monotonic() - began < 10 * 0.05  # really concurrent


def test_errors_are_collected_per_shard():
    def flaky(shard: Shard, depth: DriftDepth, *, timeout: float) -> Schema:
        if shard.id == "s3":
            raise SchemaComparisonFailedError("connection refused", shard_id=shard.id)
        if shard.id == "s4":
            raise RuntimeError("an introspector bug, password=hunter2")
        return Schema.build("sqlite", depth, ())

    schemas, errors = introspect_fleet(SHARDS, DriftDepth.TABLES_ONLY, introspect=flaky)
    assert set(errors) == {"s3", "s4"} and len(schemas) == 8
    assert errors["s3"].code == "shardmigrate.schema_comparison_failed"
    assert "hunter2" not in errors["s4"].message


def test_a_hanging_shard_is_abandoned_and_the_rest_still_run(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(introspect_module, "_ABANDON_SLACK", 0.3)
    release = threading.Event()

    def hang_on_s0(shard: Shard, depth: DriftDepth, *, timeout: float) -> Schema:
        if shard.id == "s0":
            release.wait(30)  # a server that ignores its statement timeout
        return Schema.build("sqlite", depth, ())

    began = time.monotonic()
    try:
        schemas, errors = introspect_fleet(
            SHARDS, DriftDepth.TABLES_ONLY, timeout=0.5, max_workers=1, introspect=hang_on_s0
        )
    finally:
        release.set()
    assert time.monotonic() - began < 5
    assert list(errors) == ["s0"] and "timed out after 0.5s" in errors["s0"].message
    assert len(schemas) == 9  # a fresh worker took over the queue


def test_detect_drift_uses_topology_defaults():
    topology = parse_topology(
        {
            "shards": [{"id": "a", "conn_id": "a"}, {"id": "b", "conn_id": "b"}, {"id": "c", "conn_id": "c"}],
            "drift": {"baseline": "b", "depth": "full"},
        }
    )
    seen: list[tuple[str, DriftDepth]] = []

    def record(shard: Shard, depth: DriftDepth, *, timeout: float) -> Schema:
        seen.append((shard.id, depth))
        return Schema.build("sqlite", depth, ())

    report = detect_drift(topology, introspect=record)
    assert report.baseline == "b" and report.depth is DriftDepth.FULL
    assert report.shards_compared == ("a", "c")
    assert sorted(seen) == [("a", DriftDepth.FULL), ("b", DriftDepth.FULL), ("c", DriftDepth.FULL)]
