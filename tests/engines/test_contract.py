"""The engine contract: what every engine must do, run against a real shard of each (``engine_shard``,
tests/engines/conftest.py) -- SQLite files, the local PostgreSQL and MariaDB. No mocks of the database.

Where engines legitimately differ, the test branches on a declared capability (``transactional_ddl``) or
on a spelling the shard fixture provides (a sleep statement, an error code), never on the engine's name.
Timing: tests wait for states (a worker blocked, a lock held), never for a time; pytest-timeout bounds
the ones that used to hang.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from airflow_provider_shardmigrate.core.deadline import Deadline
from airflow_provider_shardmigrate.core.errors import MigrationTimeoutError, SchemaComparisonFailedError
from airflow_provider_shardmigrate.core.scripts import load_migration
from airflow_provider_shardmigrate.core.topology import DriftDepth
from airflow_provider_shardmigrate.engines import CONNECTION_TYPES, engine_class, engine_for
from airflow_provider_shardmigrate.engines.runner import apply_to_shard, rollback_shard
from tests.engines.conftest import EngineShard, SilentServer, Workers, hung_shard, wait_for, worker_env
from tests.server_fixtures import REPO, topology_yaml

WriteMigration = Callable[..., Path]
PASSWORD = "S3cret-pw-never-shown"


def test_registered_for_its_connection_type(engine_shard: EngineShard) -> None:
    cls = engine_class(engine_shard.kind)
    assert engine_shard.kind in CONNECTION_TYPES
    assert (cls.variant, cls.transactional_ddl) == (engine_shard.kind, engine_shard.transactional_ddl)
    assert type(engine_shard.engine()) is cls


# -- apply, history, rollback -----------------------------------------------------------------------------


def test_apply_records_history_and_rerun_is_already_applied(
    engine_shard: EngineShard, write_migration: WriteMigration
) -> None:
    migration = load_migration(
        write_migration(
            "001_orders", up=engine_shard.rich_up, down=engine_shard.rich_down, options={"description": "orders"}
        )
    )

    status = apply_to_shard(engine_shard.shard, migration)

    assert status.outcome == "succeeded", status
    assert engine_shard.rich_objects <= engine_shard.objects()
    for sql, rows in engine_shard.rich_probe:  # the bodies arrived whole, inner semicolons included
        assert engine_shard.query(sql) == rows, sql
    row = engine_shard.history()["001_orders"]
    assert (row["status"], row["statements_applied"], row["statements_total"]) == ("applied", 3, 3)
    assert row["checksum"] == migration.checksum and row["description"] == "orders"
    assert row["applied_at"] and row["error"] is None
    with engine_shard.engine().connected(Deadline(20), read_only=True) as engine:
        record = engine.read_history("001_orders")
        assert [r.migration_id for r in engine.list_history()] == ["001_orders"]
    assert record is not None and record.applied_at is not None and record.applied_at.tzinfo is not None
    assert record.duration_ms is not None and record.duration_ms >= 0
    # The lock went with the engine's session: nobody holds it any more.
    assert not engine_shard.migration_lock_held()

    again = apply_to_shard(engine_shard.shard, migration)

    assert again.outcome == "already_applied"
    assert len(engine_shard.history()) == 1


def test_failing_statement_leaves_a_truthful_shard(engine_shard: EngineShard, write_migration: WriteMigration) -> None:
    before = engine_shard.objects()
    migration = load_migration(
        write_migration(
            "002_broken",
            up="CREATE TABLE first_effect (id INT);\nINSERT INTO no_such_table VALUES (1);\n",
            down="DROP TABLE first_effect;",
        )
    )

    status = apply_to_shard(engine_shard.shard, migration)

    assert status.outcome == "failed" and status.error_code == "shardmigrate.migration_failed", status
    message = status.error_message or ""
    assert "no_such_table" in message and engine_shard.missing_table_code in message  # the database's own code
    if engine_shard.transactional_ddl:
        assert "statement 2 of 2" in message
        # The first statement's table was rolled back with the rest; only the (empty) history table is new.
        assert engine_shard.objects() - before == engine_shard.history_objects
        assert engine_shard.history() == {}
    else:  # DDL committed on its own: the row says exactly how far the shard got
        assert "first_effect" in engine_shard.tables()
        row = engine_shard.history()["002_broken"]
        assert (row["status"], row["statements_applied"], row["statements_total"]) == ("failed", 1, 2)
        assert "statement 2 of 2" in row["error"]


@pytest.mark.parametrize("transactional", [False], ids=["transactional_false"])
def test_statement_by_statement_failure_records_progress_and_rerun_resumes(
    engine_shard: EngineShard, write_migration: WriteMigration, transactional: bool
) -> None:
    engine_shard.query("CREATE TABLE in_the_way (id INT)")  # makes statement 3 fail
    folder = write_migration(
        "003_resume",
        up="""
CREATE TABLE step_log (n INT NOT NULL);
INSERT INTO step_log VALUES (1);
CREATE TABLE in_the_way (id INT);
INSERT INTO step_log VALUES (2);
""",
        down="DROP TABLE in_the_way; DROP TABLE step_log;",
        options={"transactional": transactional},
    )

    failed = apply_to_shard(engine_shard.shard, load_migration(folder))

    assert failed.outcome == "failed" and failed.error_code == "shardmigrate.migration_failed"
    row = engine_shard.history()["003_resume"]
    assert (row["status"], row["statements_applied"], row["statements_total"]) == ("failed", 2, 4)
    assert "statement 3 of 4" in row["error"] and "in_the_way" in row["error"]
    assert engine_shard.exists_code in row["error"]

    engine_shard.query("DROP TABLE in_the_way")  # the operator fixes the shard, not the script
    resumed = apply_to_shard(engine_shard.shard, load_migration(folder))

    assert resumed.outcome == "succeeded", resumed
    assert engine_shard.query("SELECT n FROM step_log ORDER BY n") == [(1,), (2,)]  # nothing ran twice
    row = engine_shard.history()["003_resume"]
    assert (row["status"], row["statements_applied"], row["error"]) == ("applied", 4, None)


def test_changed_script_after_partial_apply_is_refused(
    engine_shard: EngineShard, write_migration: WriteMigration
) -> None:
    folder = write_migration(
        "004_partial",
        up="CREATE TABLE part_one (id INT);\nINSERT INTO no_such_table VALUES (1);\n",
        down="DROP TABLE part_one;",
        options={"transactional": False},
    )
    first = load_migration(folder)
    assert apply_to_shard(engine_shard.shard, first).outcome == "failed"
    (folder / "up.sql").write_text("CREATE TABLE part_one (id INT);\nCREATE TABLE part_two (id INT);\n")
    edited = load_migration(folder)

    status = apply_to_shard(engine_shard.shard, edited)

    assert status.error_code == "shardmigrate.invalid_script"
    assert "after 1 of 2 statements" in (status.error_message or "")
    assert first.checksum in (status.error_message or "") and edited.checksum in (status.error_message or "")
    assert "part_two" not in engine_shard.tables()


def test_checksum_mismatch_after_apply_is_refused(engine_shard: EngineShard, write_migration: WriteMigration) -> None:
    folder = write_migration("001_orders", up=engine_shard.rich_up, down=engine_shard.rich_down)
    first = load_migration(folder)
    assert apply_to_shard(engine_shard.shard, first).outcome == "succeeded"
    (folder / "up.sql").write_text(engine_shard.rich_up + "\nCREATE TABLE sneaky (id INT);\n")
    edited = load_migration(folder)

    status = apply_to_shard(engine_shard.shard, edited)

    assert status.outcome == "failed" and status.error_code == "shardmigrate.invalid_script"
    assert first.checksum in (status.error_message or "") and edited.checksum in (status.error_message or "")
    assert "sneaky" not in engine_shard.tables()
    # Any script file counts: an edited down script alone is refused too.
    (folder / "up.sql").write_text(engine_shard.rich_up)
    (folder / "down.sql").write_text(engine_shard.rich_down + "\n-- edited\n")
    down_edited = apply_to_shard(engine_shard.shard, load_migration(folder))
    assert down_edited.error_code == "shardmigrate.invalid_script" and first.checksum in (
        down_edited.error_message or ""
    )


def test_rollback_then_reapply(engine_shard: EngineShard, write_migration: WriteMigration) -> None:
    migration = load_migration(write_migration("001_orders", up=engine_shard.rich_up, down=engine_shard.rich_down))
    assert apply_to_shard(engine_shard.shard, migration).outcome == "succeeded"
    applied_at = engine_shard.history()["001_orders"]["applied_at"]

    rolled = rollback_shard(engine_shard.shard, migration)

    assert rolled.outcome == "rolled_back", rolled
    assert engine_shard.rich_objects.isdisjoint(engine_shard.objects())
    row = engine_shard.history()["001_orders"]
    assert row["status"] == "rolled_back" and row["rolled_back_at"] is not None
    assert row["applied_at"] == applied_at  # timestamp kept
    again_rolled = rollback_shard(engine_shard.shard, migration)  # idempotent: nothing left to undo
    assert again_rolled.outcome == "not_applied" and "already rolled back" in (again_rolled.error_message or "")

    again = apply_to_shard(engine_shard.shard, migration)

    assert again.outcome == "succeeded"
    assert "orders" in engine_shard.tables()
    assert engine_shard.history()["001_orders"]["status"] == "applied"


def test_failing_rollback_keeps_the_applied_row(engine_shard: EngineShard, write_migration: WriteMigration) -> None:
    first_down, dropped = engine_shard.rich_first_down
    migration = load_migration(
        write_migration("001_orders", up=engine_shard.rich_up, down=f"{first_down}\nDROP TABLE not_there;\n")
    )
    assert apply_to_shard(engine_shard.shard, migration).outcome == "succeeded"

    status = rollback_shard(engine_shard.shard, migration)

    assert status.outcome == "failed" and status.error_code == "shardmigrate.rollback_failed"
    row = engine_shard.history()["001_orders"]
    assert row["status"] == "applied"
    if engine_shard.transactional_ddl:
        assert dropped in engine_shard.objects()  # the first down statement was rolled back too
    else:
        assert dropped not in engine_shard.objects()
        assert "rollback stopped at statement 2 of 2" in row["error"]


def test_per_engine_variant_is_chosen(engine_shard: EngineShard, write_migration: WriteMigration) -> None:
    variant = engine_class(engine_shard.kind).variant
    migration = load_migration(
        write_migration(
            "005_variants",
            up="CREATE TABLE generic_table (id INTEGER);",
            down="DROP TABLE generic_table;",
            extra={
                f"up.{variant}.sql": f"CREATE TABLE only_{variant} (id INTEGER);",
                f"down.{variant}.sql": f"DROP TABLE only_{variant};",
            },
        )
    )

    assert apply_to_shard(engine_shard.shard, migration).outcome == "succeeded"

    tables = engine_shard.tables()
    assert f"only_{variant}" in tables and "generic_table" not in tables


def test_read_only_sessions_refuse_writes(engine_shard: EngineShard) -> None:
    with engine_shard.engine().connected(Deadline(20), read_only=True) as engine:
        assert engine.list_history() == [] and engine.read_history("nope") is None
        with pytest.raises(Exception, match=r"(?i)read.?only"):
            engine._execute("CREATE TABLE nope (id INT)")  # type: ignore[attr-defined]
    assert "nope" not in engine_shard.tables()


# -- locks and timeouts -----------------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_lock_held_by_another_session_is_lock_timeout(
    engine_shard: EngineShard, write_migration: WriteMigration
) -> None:
    migration = load_migration(
        write_migration(
            "001_orders", up=engine_shard.rich_up, down=engine_shard.rich_down, options={"per_shard_timeout": 1}
        )
    )

    with engine_shard.hold_migration_lock():
        started = time.monotonic()
        status = apply_to_shard(engine_shard.shard, migration)
        waited = time.monotonic() - started

    assert status.outcome == "failed" and status.error_code == "shardmigrate.lock_timeout", status
    assert "another migration holds the lock" in (status.error_message or "")
    assert engine_shard.lock_label() in (status.error_message or ""), status
    assert "(waited 1s)" in (status.error_message or "")
    assert waited >= 0.9  # it really waited for its bound (a lower bound: no load makes it shorter)
    assert "orders" not in engine_shard.tables()
    assert engine_shard.history() == {}
    assert apply_to_shard(engine_shard.shard, migration).outcome == "succeeded"  # free again once released


@pytest.mark.timeout(120)
def test_ddl_blocked_by_another_session_stops_in_the_database(
    engine_shard: EngineShard, write_migration: WriteMigration
) -> None:
    migration = load_migration(
        write_migration(
            "006_alter",
            up="CREATE TABLE before_alter (id INT);\n"
            f"{engine_shard.add_column('customers', 'email', 'VARCHAR(100)')};\n",
            down="ALTER TABLE customers DROP COLUMN email;\nDROP TABLE before_alter;",
            options={"per_shard_timeout": 1.5},
        )
    )

    with engine_shard.hold_table_lock("customers"):
        status = apply_to_shard(engine_shard.shard, migration)
        still_running = engine_shard.running("ALTER TABLE customers")  # while the blocker still holds the lock

    assert status.outcome == "failed" and status.error_code == engine_shard.blocked_code, status
    assert any(code in (status.error_message or "") for code in engine_shard.blocked_evidence), status
    assert still_running == []
    assert "email" not in engine_shard.columns("customers")
    if engine_shard.transactional_ddl:
        assert "before_alter" not in engine_shard.tables()
        assert engine_shard.history() == {}
    else:
        row = engine_shard.history()["006_alter"]
        assert (row["status"], row["statements_applied"]) == ("failed", 1)
        assert "ALTER TABLE customers" in row["error"]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("transactional", [True, False], ids=["default", "transactional_false"])
def test_long_statement_is_stopped_at_the_deadline(
    engine_shard: EngineShard, write_migration: WriteMigration, transactional: bool
) -> None:
    migration = load_migration(
        write_migration(
            "007_slow",
            up=f"CREATE TABLE kept (id INT);\n{engine_shard.sleep(30)};\nCREATE TABLE never (id INT);\n",
            down="DROP TABLE kept;",
            options={"per_shard_timeout": 1.5, "transactional": transactional},
        )
    )

    status = apply_to_shard(engine_shard.shard, migration)

    assert status.error_code == "shardmigrate.migration_timeout", status
    assert any(code in (status.error_message or "") for code in engine_shard.timeout_evidence), status
    assert engine_shard.running(engine_shard.sleep_needle) == []  # the database stopped it, nothing of ours runs
    assert "never" not in engine_shard.tables()
    if engine_shard.transactional_ddl and transactional:
        assert "statement 2 of 3" in (status.error_message or "")
        assert "kept" not in engine_shard.tables() and engine_shard.history() == {}
    else:
        row = engine_shard.history()["007_slow"]
        # The history write after the timeout ran with the bookkeeping bound, not the spent deadline.
        assert (row["status"], row["statements_applied"], row["statements_total"]) == ("failed", 1, 3)
        assert "statement 2 of 3" in row["error"] and engine_shard.sleep_needle in row["error"]
        assert "kept" in engine_shard.tables()


# -- reaching the shard -----------------------------------------------------------------------------------


def test_unreachable_shard_fails_clearly_without_the_password(
    engine_shard: EngineShard, write_migration: WriteMigration
) -> None:
    down, needles = engine_shard.unreachable(PASSWORD)
    migration = load_migration(write_migration("001_orders", up=engine_shard.rich_up, down=engine_shard.rich_down))

    status = apply_to_shard(down, migration)

    assert status.outcome == "failed" and status.error_code == "shardmigrate.migration_failed", status
    for needle in needles:
        assert needle in (status.error_message or ""), (needle, status.error_message)
    assert PASSWORD not in json.dumps(status.to_xcom())


@pytest.mark.timeout(120)
def test_a_server_that_never_answers_is_a_timeout_everywhere(
    network_shard: EngineShard,
    silent_server: SilentServer,
    write_migration: WriteMigration,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A server that accepts the TCP connection and never sends a byte: connecting is inside the budget."""
    hung = hung_shard(network_shard, silent_server, PASSWORD)
    migration = load_migration(
        write_migration("001_orders", up=network_shard.rich_up, options={"per_shard_timeout": 1})
    )

    status = apply_to_shard(hung, migration)  # returns: the test's own timeout would fail it otherwise

    assert status.outcome == "failed" and status.error_code == "shardmigrate.migration_timeout", status
    assert f"127.0.0.1:{silent_server.port}" in (status.error_message or "") and hung.conn_id in (
        status.error_message or ""
    )
    assert PASSWORD not in json.dumps(status.to_xcom())
    assert silent_server.connections >= 1  # it really got as far as the server
    assert rollback_shard(hung, migration).error_code == "shardmigrate.migration_timeout"

    from airflow_provider_shardmigrate.cli import main
    from airflow_provider_shardmigrate.engines.introspect import introspect_shard

    (tmp_path / "shards.yaml").write_text(topology_yaml([network_shard.shard_id, hung.id]))
    assert main(["history", "--topology", str(tmp_path / "shards.yaml"), "--timeout", "1", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report[network_shard.shard_id] == {"rows": [], "error": None}  # the healthy shard still answers
    assert "shardmigrate.migration_timeout" in report[hung.id]["error"] and PASSWORD not in report[hung.id]["error"]
    with pytest.raises(SchemaComparisonFailedError, match="timed out"):
        introspect_shard(hung, DriftDepth.TABLES_ONLY, timeout=1)
    with pytest.raises(MigrationTimeoutError, match=hung.id), engine_for(hung).connected(Deadline(1)):
        pass


# -- a missing extra ----------------------------------------------------------------------------------------

_BLOCKED_IMPORTS = textwrap.dedent(
    """
    import json, sys

    BLOCKED = sys.argv[1].split(",")

    class Blocker:
        '''Makes the blocked modules look uninstalled, as in an environment without the extra.'''

        def find_spec(self, name, path=None, target=None):
            if any(name == b or name.startswith(b + ".") for b in BLOCKED):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, Blocker())

    from airflow_provider_shardmigrate.core.errors import InvalidTopologyError
    from airflow_provider_shardmigrate.core.scripts import load_migration
    from airflow_provider_shardmigrate.core.topology import Shard
    from airflow_provider_shardmigrate.engines import engine_for
    from airflow_provider_shardmigrate.engines.runner import apply_to_shard

    shard = Shard(sys.argv[2], sys.argv[3])
    try:
        engine_for(shard)
        raised = None
    except InvalidTopologyError as exc:
        raised = str(exc)
    status = apply_to_shard(shard, load_migration(sys.argv[4]))
    print(json.dumps({"raised": raised, "status": status.to_xcom()}))
    """
)


@pytest.mark.slow
def test_missing_extra_names_the_extra(
    engine_shard: EngineShard, write_migration: WriteMigration, tmp_path: Path
) -> None:
    script = tmp_path / "blocked_imports.py"
    script.write_text(_BLOCKED_IMPORTS)
    folder = write_migration("001_orders", up=engine_shard.rich_up, down=engine_shard.rich_down)
    hint = f"pip install 'airflow-provider-shardmigrate[{engine_shard.extra}]'"

    for blocked in engine_shard.missing_extra_blocks:  # the driver, then the Airflow provider's hooks
        done = subprocess.run(
            [sys.executable, str(script), ",".join(blocked), engine_shard.shard_id, engine_shard.conn_id, str(folder)],
            cwd=REPO,
            env=worker_env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

        assert done.returncode == 0, (blocked, done.stderr[-3000:])
        result = json.loads(done.stdout.strip().splitlines()[-1])
        raised = result["raised"] or ""
        assert hint in raised and f"[{engine_shard.extra}] extra" in raised, (blocked, raised)
        assert f"shard '{engine_shard.shard_id}'" in raised and f"'{engine_shard.conn_id}'" in raised, raised
        status = result["status"]
        assert status["outcome"] == "failed" and status["error_code"] == "shardmigrate.invalid_topology", status
        assert hint in status["error_message"]
    assert engine_shard.history() == {}  # nothing touched the shard


# -- other processes ----------------------------------------------------------------------------------------

_CRASH_UP = """
CREATE TABLE crash_log (n INT NOT NULL);
INSERT INTO crash_log VALUES (1);
CREATE TABLE crash_a (id INT);
INSERT INTO crash_log VALUES (2);
{sleep};
INSERT INTO crash_log VALUES (3);
CREATE TABLE crash_b (id INT);
INSERT INTO crash_log VALUES (4);
"""


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_worker_killed_midway_leaves_a_truthful_shard_and_rerun_applies_once(
    engine_shard: EngineShard, write_migration: WriteMigration, workers: Workers
) -> None:
    engine_shard.set_sleep(60)
    folder = write_migration(
        "008_crash",
        up=_CRASH_UP.format(sleep=engine_shard.controlled_sleep()),
        down="DROP TABLE crash_b; DROP TABLE crash_a; DROP TABLE crash_log;",
        options={"per_shard_timeout": 120},
    )
    proc = workers.start(folder, engine_shard.shard_id)
    wait_for(engine_shard.sleeping, timeout=60, what="the worker to reach its long statement")

    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    engine_shard.after_client_death()

    if engine_shard.transactional_ddl:  # all or nothing: nothing
        assert {"crash_log", "crash_a"}.isdisjoint(engine_shard.tables())
        assert engine_shard.history() == {}
    else:  # a running row at the last completed statement
        row = engine_shard.history()["008_crash"]
        assert (row["status"], row["statements_applied"], row["statements_total"]) == ("running", 4, 8)
        assert engine_shard.query("SELECT n FROM crash_log ORDER BY n") == [(1,), (2,)]

    engine_shard.set_sleep(0)
    # Where the server still holds the dead session's lock, the re-run waits for the server to drop it.
    status = apply_to_shard(engine_shard.shard, load_migration(folder))

    assert status.outcome == "succeeded", status
    assert engine_shard.query("SELECT n FROM crash_log ORDER BY n") == [(1,), (2,), (3,), (4,)]  # each ran once
    assert {"crash_a", "crash_b"} <= engine_shard.tables()
    row = engine_shard.history()["008_crash"]
    assert (row["status"], row["statements_applied"]) == ("applied", 8)
    assert list(engine_shard.history()) == ["008_crash"]
    assert apply_to_shard(engine_shard.shard, load_migration(folder)).outcome == "already_applied"


_RACE_DOWN = "ALTER TABLE customers DROP COLUMN race;\nDROP TABLE race_log;\n"


def _race_up(engine_shard: EngineShard) -> str:
    return (
        "CREATE TABLE race_log (n INT);\nINSERT INTO race_log VALUES (1);\n"
        f"{engine_shard.add_column('customers', 'race', 'INT')};\n"
    )


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_processes_at_once_apply_exactly_once(
    engine_shard: EngineShard, write_migration: WriteMigration, workers: Workers
) -> None:
    folder = write_migration("010_race", up=_race_up(engine_shard), down=_RACE_DOWN, options={"per_shard_timeout": 60})
    first = workers.start(folder, engine_shard.shard_id, name="a", sync=True)
    second = workers.start(folder, engine_shard.shard_id, name="b", sync=True)
    workers.wait_ready("a", "b")

    # The winner blocks on a table the test holds, inside its migration lock; the other must wait for it.
    with engine_shard.hold_table_lock("customers"):
        workers.go()
        wait_for(engine_shard.migration_lock_held, timeout=60, what="one worker to take the migration lock")
        if engine_shard.migration_lock_waiters() is not None:  # where the database shows lock waits
            wait_for(
                lambda: engine_shard.migration_lock_waiters(), timeout=60, what="the other worker to wait for the lock"
            )
        assert first.poll() is None and second.poll() is None  # neither can finish while the gate holds

    results = [Workers.result(first), Workers.result(second)]

    assert sorted(r["outcome"] for r in results) == ["already_applied", "succeeded"], results
    assert engine_shard.query("SELECT count(*) FROM race_log") == [(1,)]
    assert "race" in engine_shard.columns("customers")
    assert list(engine_shard.history()) == ["010_race"]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_waiting_longer_than_the_bound_is_lock_timeout(
    engine_shard: EngineShard, write_migration: WriteMigration, workers: Workers, tmp_path: Path
) -> None:
    slow = write_migration("011_race", up=_race_up(engine_shard), down=_RACE_DOWN, options={"per_shard_timeout": 60})
    # The same migration (same id and scripts, so the same checksum) with a 1 s bound on this side.
    impatient = write_migration(
        "011_race",
        up=_race_up(engine_shard),
        down=_RACE_DOWN,
        options={"per_shard_timeout": 1},
        root=tmp_path / "other",
    )
    assert load_migration(slow).checksum == load_migration(impatient).checksum

    with engine_shard.hold_table_lock("customers"):
        proc = workers.start(slow, engine_shard.shard_id)
        wait_for(engine_shard.migration_lock_held, timeout=60, what="the worker to take the migration lock")

        status = apply_to_shard(engine_shard.shard, load_migration(impatient))

    assert status.error_code == "shardmigrate.lock_timeout", status
    assert Workers.result(proc)["outcome"] == "succeeded"
    assert engine_shard.history()["011_race"]["status"] == "applied"
    assert engine_shard.query("SELECT count(*) FROM race_log") == [(1,)]
