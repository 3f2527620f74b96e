"""Airflow's own ``execution_timeout`` firing while a shard's statement runs (issue 9, bug 9): the task
fails *by the timeout* (with its traceback in the log), the lock is released and the history row tells
the truth -- a real DAG run with ``dag.test()`` on a real SQLite shard."""

from __future__ import annotations

import fcntl
import os
from datetime import timedelta

import pytest
import yaml

from airflow_provider_shardmigrate.core.topology import parse_topology
from airflow_provider_shardmigrate.dags.migration import build_migration_dag

pytestmark = pytest.mark.slow

ENDLESS = (
    "CREATE TABLE first_effect (id INTEGER);\n"
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n;\n"
)


@pytest.mark.parametrize("transactional", [True, False], ids=["transactional", "statement-by-statement"])
def test_execution_timeout_during_a_statement_fails_the_task_by_the_timeout(
    transactional, sqlite_fleet, write_migration, dag_runner, capfd
):
    path = sqlite_fleet.add("s0")
    topology = parse_topology(yaml.safe_load(sqlite_fleet.topology()), "shards.yaml")
    migration = write_migration(
        "090_endless",
        up=ENDLESS,
        down="DROP TABLE first_effect;",
        # the shard's own budget is far away: only Airflow's timeout can stop this statement
        options={"per_shard_timeout": 3600, "transactional": transactional, "validate_before_apply": False},
    )
    dag = build_migration_dag(migration, topology)
    dag.get_task("shards.s0").execution_timeout = timedelta(seconds=2)

    run = dag_runner(dag)

    assert run.tasks[("shards.s0", -1)] == "failed"
    assert run.state == "failed"
    log = capfd.readouterr()
    text = log.out + log.err
    assert "Task failed with exception" in text and "Traceback" in text, text[-3000:]
    assert "AirflowTaskTimeout: Timeout, PID" in text  # the exception the task failed with, not ours
    assert "AirflowTaskTerminated" not in text  # Airflow calls on_kill on a timeout too: it must not replace it
    history = sqlite_fleet.history("s0")
    if transactional:
        assert history == {}  # nothing applied: the transaction rolled back
        assert "first_effect" not in sqlite_fleet.objects("s0")
    else:
        row = history["090_endless"]
        assert (row["status"], row["statements_applied"], row["statements_total"]) == ("failed", 1, 2)
        assert "statement 2 of 2 failed: AirflowTaskTimeout" in row["error"]
    # the lock was released: another process could take it now
    fd = os.open(path.with_name(path.name + ".shardmigrate-lock"), os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)
