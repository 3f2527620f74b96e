"""Airflow stopping a running shard task (SIGTERM: the task runner calls ``on_kill``; SIGKILL would follow 5 s
later): a real ``dag.test()`` run on SQLite shards, the signal sent to this process while a shard's long
statement runs. The shard's transaction is rolled back, the task fails by ``AirflowTaskTerminated`` (with its
traceback), its lock is free -- and a lane starts no further shard. tests/engines/test_stop.py shows the
statement cancelled in PostgreSQL and MariaDB."""

from __future__ import annotations

import fcntl
import os
import signal
import threading
from pathlib import Path

import pytest
import yaml

from airflow_provider_shardmigrate.core.topology import parse_topology
from airflow_provider_shardmigrate.dags.migration import build_migration_dag
from tests.conftest import BASE_SCHEMA
from tests.engines.conftest import wait_for

pytestmark = pytest.mark.slow

# Long only where `customers` holds the marker row (one script for the whole fleet); it reads `customers`, so
# it holds the file's lock while it runs, and only the stop can end it.
LONG = (
    "CREATE TABLE stop_effect (id INTEGER);\n"
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < "
    "(SELECT count(*) FROM customers WHERE name = 'slow') * 60000000000) SELECT count(*) FROM n;\n"
)
SLOW = BASE_SCHEMA + "INSERT INTO customers (name) VALUES ('slow');"


def stop_when_in_transaction(path: Path) -> threading.Thread:
    """SIGTERM this process once the shard's migration transaction is open (its journal exists)."""

    def send() -> None:
        wait_for(lambda: Path(f"{path}-journal").exists(), 120, what="the shard's transaction")
        os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def lock_is_free(path: Path) -> bool:
    fd = os.open(path.with_name(path.name + ".shardmigrate-lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("execution", ["per_shard", "lanes"])
def test_a_stopped_shard_task_rolls_back_and_starts_nothing_more(
    execution, sqlite_fleet, write_migration, dag_runner, capfd
):
    paths = [sqlite_fleet.add(shard_id, SLOW if shard_id == "s1" else BASE_SCHEMA) for shard_id in ("s0", "s1", "s2")]
    topology = parse_topology(yaml.safe_load(sqlite_fleet.topology()), "shards.yaml")
    migration = write_migration(
        "095_stopped",
        up=LONG,
        down="DROP TABLE stop_effect;",
        options={
            "strategy": "sequential",
            "execution": execution,
            "per_shard_timeout": 3600,  # only the stop can end s1's statement
            "validate_before_apply": False,
            "stop_on_first_failure": False,  # the stop, not the failure policy, must keep s2 from starting
        },
    )
    sender = stop_when_in_transaction(paths[1])
    run = dag_runner(build_migration_dag(migration, topology))
    sender.join()

    text = "".join(capfd.readouterr())
    assert "AirflowTaskTerminated: task " in text and "was told to stop (SIGTERM)" in text, text[-3000:]
    assert run.state == "failed"
    assert "095_stopped" in sqlite_fleet.history("s0")  # done before the stop
    assert sqlite_fleet.history("s1") == {} and "stop_effect" not in sqlite_fleet.objects("s1")  # rolled back
    assert all(lock_is_free(path) for path in paths)
    shard_tasks = {key: state for key, state in run.tasks.items() if key[0].startswith("shards.")}
    assert "failed" in shard_tasks.values(), shard_tasks
    assert run.report is not None and run.report["shards"]["s0"]["outcome"] == "succeeded"
    s1 = run.report["shards"]["s1"]
    assert s1["outcome"] == "failed" and "without reporting a result" in s1["error_message"]  # see its log
    if execution == "lanes":  # the stopped lane started no further shard
        assert sqlite_fleet.history("s2") == {} and "stop_effect" not in sqlite_fleet.objects("s2")
        assert run.report["shards"]["s2"]["outcome"] == "pending"
    else:  # the stop ended s1's task only; s2's own task ran (stop_on_first_failure is off)
        assert run.report["shards"]["s2"]["outcome"] == "succeeded"
