"""A stop signal while a shard's statement runs (Airflow stops a task with SIGTERM, SIGKILL 5 s later): the
engine cancels the statement in the database at once -- even where the driver blocks in C until the
statement ends (mysqlclient) -- the handler's exception ends the shard, the history row says how far it got,
and the lock is free. Run against a fresh shard of each engine that cancels (SQLite, PostgreSQL, MariaDB;
SQL Server and MongoDB leave the statement to their in-database deadline).

The handler installed here does what Airflow's task runner does on SIGTERM -- call the operator's
``on_kill``, which raises ``AirflowTaskTerminated`` (operators/_stop.py); tests/dags/test_stop.py runs it
through a real task."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_shardmigrate.core.scripts import load_migration
from airflow_provider_shardmigrate.engines.runner import apply_to_shard
from tests.engines.conftest import EngineShard, wait_for

WriteMigration = Callable[..., Path]


@pytest.fixture
def sigterm_raises() -> Iterator[list[int]]:
    """SIGTERM raises ``AirflowTaskTerminated`` (as ``on_kill`` does under Airflow); yields the signals seen."""
    from airflow.sdk.exceptions import AirflowTaskTerminated

    seen: list[int] = []

    def on_term(signum: int, frame: Any) -> None:
        seen.append(signum)
        raise AirflowTaskTerminated("told to stop (SIGTERM)")

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield seen
    finally:
        signal.signal(signal.SIGTERM, previous)


def long_statement(shard: EngineShard) -> str:
    """Ten minutes of work; on SQLite it also reads a table, so its SHARED lock shows that it runs."""
    if shard.network:
        return shard.sleep(600)
    return f"{shard.sleep(600)}, (SELECT count(*) FROM customers)"


def sleeping(shard: EngineShard) -> bool:
    """Whether the shard's second statement (the long one) is executing."""
    if shard.network or shard.sleeping():  # a server shows it; SQLite: a write transaction's journal
        return shard.sleeping()
    # SQLite, statement by statement: statement 1 is recorded, and a reader holds the file's SHARED lock
    row = shard.history().get("008_stopped")
    if row is None or row["statements_applied"] != 1:
        return False
    probe = sqlite3.connect(shard.path, timeout=0, isolation_level=None)
    try:
        probe.execute("BEGIN EXCLUSIVE")
        probe.execute("ROLLBACK")
        return False
    except sqlite3.OperationalError:  # database is locked: the long SELECT is reading
        return True
    finally:
        probe.close()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("transactional", [True, False], ids=["default", "transactional_false"])
def test_sigterm_cancels_the_statement_in_the_database(
    cancelling_shard: EngineShard, write_migration: WriteMigration, sigterm_raises: list[int], transactional: bool
) -> None:
    from airflow.sdk.exceptions import AirflowTaskTerminated

    shard = cancelling_shard
    migration = load_migration(
        write_migration(
            "008_stopped",
            up=f"CREATE TABLE kept (id INT);\n{long_statement(shard)};\nCREATE TABLE never (id INT);\n",
            down="DROP TABLE kept;",
            # an hour: only the stop can end the 600 s statement while the test waits
            options={"per_shard_timeout": 3600, "transactional": transactional},
        )
    )

    def stop_once_sleeping() -> None:
        wait_for(lambda: sleeping(shard), 60, what="the statement to run")
        os.kill(os.getpid(), signal.SIGTERM)

    sender = threading.Thread(target=stop_once_sleeping, daemon=True)
    sender.start()
    with pytest.raises(AirflowTaskTerminated, match="told to stop"):
        apply_to_shard(shard.shard, migration)
    sender.join()

    assert sigterm_raises == [signal.SIGTERM]
    assert shard.running(shard.sleep_needle) == []  # cancelled in the database, not left to the deadline
    assert "never" not in shard.tables()
    if shard.transactional_ddl and transactional:
        assert "kept" not in shard.tables() and shard.history() == {}
    else:
        row = shard.history()["008_stopped"]
        assert (row["status"], row["statements_applied"], row["statements_total"]) == ("failed", 1, 3)
        assert "statement 2 of 3 failed: AirflowTaskTerminated: told to stop" in row["error"]
        assert "kept" in shard.tables()
    assert not shard.migration_lock_held()
