"""What only the MongoDB engine does, against the session's MongoDB server (the nx-27017 emulator, or the real
mongod of SHARDMIGRATE_TEST_MONGO_URL; tests/mongo_fixtures.py). No mock of the database.

The behaviour every engine shares is in test_contract.py, which runs it here too; the contract tests the
emulator cannot show have their emulator-showable halves here: a dead holder's lease taken over once it
expired (the killed worker), two processes racing for a held lease (the held winner), a held lease running
out the budget. The per-command resume is shown in native MongoDB commands too.
What the engine *sends* -- ``maxTimeMS`` on every command, the client's time bounds -- is read back from
pymongo's own command monitoring.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_shardmigrate.core.deadline import Deadline
from airflow_provider_shardmigrate.core.errors import InvalidScriptError, LockTimeoutError, MigrationFailedError
from airflow_provider_shardmigrate.core.scripts import load_migration
from airflow_provider_shardmigrate.core.topology import Shard
from airflow_provider_shardmigrate.engines import engine_for
from airflow_provider_shardmigrate.engines.mongo import (
    BOOKKEEPING_TIMEOUT_MS,
    SOCKET_SLACK_MS,
    MongoCommand,
    MongoEngine,
    bounded_options,
)
from airflow_provider_shardmigrate.engines.runner import apply_to_shard, rollback_shard
from tests.engines.conftest import Workers, wait_for
from tests.mongo_fixtures import CommandRecorder, MongoFleet, needs_real_mongod
from tests.server_fixtures import conn_id_for

pytestmark = pytest.mark.mongo

WriteMigration = Callable[..., Path]


@pytest.fixture
def fleet(mongo_fleet: MongoFleet) -> MongoFleet:
    mongo_fleet.add("mg-0")
    return mongo_fleet


def shard(shard_id: str = "mg-0") -> Shard:
    return Shard(shard_id, conn_id_for(shard_id))


def mongo_migration(
    write_migration: WriteMigration, migration_id: str, up: list[Any], down: list[Any], **options: Any
) -> Path:
    """A MongoDB-only migration folder (``up.mongo.json`` / ``down.mongo.json``)."""
    folder = write_migration(migration_id, options=options or None)
    (folder / "up.sql").unlink()
    (folder / "down.sql").unlink()
    (folder / "up.mongo.json").write_text(json.dumps(up))
    (folder / "down.mongo.json").write_text(json.dumps(down))
    return folder


# -- the per-command protocol -----------------------------------------------------------------------------


def test_failed_command_records_progress_and_rerun_resumes(fleet: MongoFleet, write_migration: WriteMigration) -> None:
    folder = mongo_migration(
        write_migration,
        "001_resume",
        up=[
            {"create": "step_log"},
            {"insert": "step_log", "documents": [{"_id": 1}]},
            {"insert": "customers", "documents": [{"_id": 1, "name": "again"}]},  # customer 1 exists: E11000
            {"insert": "step_log", "documents": [{"_id": 2}]},
        ],
        down=[{"drop": "step_log"}],
    )

    failed = apply_to_shard(shard(), load_migration(folder))

    assert failed.outcome == "failed" and failed.error_code == "shardmigrate.migration_failed", failed
    row = fleet.history("mg-0")["001_resume"]
    assert (row["status"], row["statements_applied"], row["statements_total"]) == ("failed", 2, 4)
    assert "statement 3 of 4" in row["error"] and "11000" in row["error"] and '"insert":"customers"' in row["error"]
    assert not fleet.lease("mg-0")  # released

    fleet.db("mg-0")["customers"].delete_one({"_id": 1})  # the operator fixes the shard, not the script
    resumed = apply_to_shard(shard(), load_migration(folder))

    assert resumed.outcome == "succeeded", resumed
    # _id 1 of step_log would collide had statement 2 run again: nothing ran twice
    assert [doc["_id"] for doc in fleet.db("mg-0")["step_log"].find().sort("_id", 1)] == [1, 2]
    row = fleet.history("mg-0")["001_resume"]
    assert (row["status"], row["statements_applied"], row["error"]) == ("applied", 4, None)
    assert isinstance(row["applied_at"], datetime)


@needs_real_mongod(
    "renameCollection runs on the admin database with full namespaces; "
    "the emulator renames in the database it is sent to"
)
def test_rename_collection_names_are_relative_to_the_shard_database(
    fleet: MongoFleet, write_migration: WriteMigration
) -> None:
    folder = mongo_migration(
        write_migration,
        "002_rename",
        up=[{"renameCollection": "customers", "to": "clients"}],
        down=[{"renameCollection": "clients", "to": "customers"}],
    )
    migration = load_migration(folder)

    assert apply_to_shard(shard(), migration).outcome == "succeeded"
    assert "clients" in fleet.tables("mg-0")
    assert fleet.db("mg-0")["clients"].count_documents({}) == 3

    assert rollback_shard(shard(), migration).outcome == "rolled_back"
    assert fleet.db("mg-0")["customers"].count_documents({}) == 3


def test_a_migration_without_a_mongo_script_is_refused_on_a_mongo_shard(
    fleet: MongoFleet, write_migration: WriteMigration
) -> None:
    status = apply_to_shard(shard(), load_migration(write_migration("003_sql_only")))

    assert status.outcome == "failed" and status.error_code == "shardmigrate.invalid_script"
    assert "up.mongo.json" in (status.error_message or "") and "mg-0" not in fleet.history("mg-0")


# -- the lease -------------------------------------------------------------------------------------------------


def test_a_dead_holders_lease_is_taken_over_once_it_expired(fleet: MongoFleet, write_migration: WriteMigration) -> None:
    expires = fleet.server_now_ms() + 1500
    fleet.db("mg-0")["shardmigrate_locks"].insert_one(
        {"_id": "migration", "owner": "dead-worker", "expires_at_ms": expires}
    )
    folder = mongo_migration(
        write_migration, "004_takeover", up=[{"create": "after_takeover"}], down=[{"drop": "after_takeover"}]
    )

    status = apply_to_shard(shard(), load_migration(folder))

    assert status.outcome == "succeeded", status
    applied_at = fleet.history("mg-0")["004_takeover"]["applied_at"]
    assert applied_at.timestamp() * 1000 >= expires  # not before the dead holder's lease ran out
    assert fleet.lease("mg-0") is None  # ours is gone too
    assert fleet.db("mg-0")["shardmigrate_locks"].count_documents({}) == 0  # no waiter document left


@pytest.fixture
def short_lease(monkeypatch: pytest.MonkeyPatch) -> float:
    monkeypatch.setattr(MongoEngine, "lease_seconds", 1.0)
    return 1.0


def test_the_lease_is_renewed_while_held(fleet: MongoFleet, monkeypatch: pytest.MonkeyPatch) -> None:
    # renewed every 2 s: only a stall of more than 4 s of the renewal thread could let the lease run out
    monkeypatch.setattr(MongoEngine, "lease_seconds", 6.0)
    with engine_for(shard()).connected(Deadline(30)) as engine, engine.migration_lock(Deadline(30)):
        first = fleet.lease("mg-0")
        assert first is not None and first["owner"]
        wait_for(lambda: fleet.lease("mg-0")["expires_at_ms"] > first["expires_at_ms"], 30, what="a renewal")
        wait_for(lambda: fleet.server_now_ms() > first["expires_at_ms"], 30, what="the first lease's expiry")
        # renewed: still held after the lease it was taken with ran out
        other = engine_for(shard())
        with (
            other.connected(Deadline(10)),
            pytest.raises(LockTimeoutError, match=r"held by"),
            other.migration_lock(Deadline(0.5)),
        ):
            pass
    assert fleet.lease("mg-0") is None


def test_a_lost_lease_stops_before_the_next_command(fleet: MongoFleet, short_lease: float) -> None:
    engine = engine_for(shard())
    assert isinstance(engine, MongoEngine)
    with engine.connected(Deadline(30)), engine.migration_lock(Deadline(30)):
        # another process took it over (as it may once a lease expired)
        fleet.db("mg-0")["shardmigrate_locks"].update_one({"_id": "migration"}, {"$set": {"owner": "thief"}})
        wait_for(lambda: engine._lease is not None and engine._lease.lost, 30, what="the renewal to notice")
        with pytest.raises(MigrationFailedError, match="lost the migration lock"):
            engine.run_step(MongoCommand({"create": "never"}), Deadline(10))
    assert "never" not in fleet.tables("mg-0")
    assert fleet.lease("mg-0")["owner"] == "thief"  # the release removes only our own lease


class _InterruptedEngine(MongoEngine):
    """Raises what Airflow's execution_timeout raises, in the middle of the second command."""

    def run_step(self, step: Any, deadline: Deadline) -> None:
        if step.name == "drop":
            raise KeyboardInterrupt("stop")
        super().run_step(step, deadline)


def test_the_lease_is_released_on_every_way_out(fleet: MongoFleet, write_migration: WriteMigration) -> None:
    folder = mongo_migration(
        write_migration, "005_paths", up=[{"create": "one"}, {"drop": "customers"}], down=[{"drop": "one"}]
    )

    with pytest.raises(KeyboardInterrupt):
        apply_to_shard(shard(), load_migration(folder), engine_factory=lambda s: _InterruptedEngine(s.conn_id, s.id))

    assert fleet.lease("mg-0") is None
    row = fleet.history("mg-0")["005_paths"]
    assert (row["status"], row["statements_applied"]) == ("failed", 1) and "KeyboardInterrupt" in row["error"]

    failing = mongo_migration(
        write_migration, "005_fails", up=[{"insert": "customers", "documents": [{"_id": 2}]}], down=[{"ping": 1}]
    )
    assert apply_to_shard(shard(), load_migration(failing)).outcome == "failed"
    assert fleet.lease("mg-0") is None
    assert rollback_shard(shard(), load_migration(folder)).error_code == "shardmigrate.rollback_failed"
    assert fleet.lease("mg-0") is None


# -- what the engine sends ---------------------------------------------------------------------------------------


def test_every_command_carries_max_time_ms_from_the_time_left(
    fleet: MongoFleet, write_migration: WriteMigration, mongo_commands: CommandRecorder
) -> None:
    folder = mongo_migration(
        write_migration,
        "006_bounded",
        up=[
            {"create": "bounded"},
            {"createIndexes": "bounded", "indexes": [{"key": {"a": 1}, "name": "idx_bounded_a"}], "maxTimeMS": 999_999},
        ],
        down=[{"drop": "bounded"}],
        per_shard_timeout=20,
    )

    assert apply_to_shard(shard(), load_migration(folder)).outcome == "succeeded"

    ours = [(db, name, cmd) for db, name, cmd in mongo_commands.sent if name not in ("endSessions",)]
    assert {name for _, name, _ in ours} >= {"ping", "hello", "update", "find", "create", "createIndexes", "delete"}
    for _, name, command in ours:
        assert 0 < command["maxTimeMS"] <= BOOKKEEPING_TIMEOUT_MS, (name, command)
    script = [cmd for _, name, cmd in ours if name in ("create", "createIndexes") and cmd[name] == "bounded"]
    assert len(script) == 2
    for command in script:  # the script's own commands: what is left of the 20 s, whatever the script asked
        assert 0 < command["maxTimeMS"] <= 20_000, command
    assert {db for db, _, _ in ours} == {fleet.databases["mg-0"]}


def test_client_time_bounds_are_inside_the_budget(fleet: MongoFleet) -> None:
    engine = engine_for(shard())
    with engine.connected(Deadline(7)):
        pool = engine._client.options.pool_options  # type: ignore[attr-defined]
        assert 0 < pool.connect_timeout <= 7
        assert 0 < engine._client.options.server_selection_timeout <= 7  # type: ignore[attr-defined]
        assert pool.socket_timeout <= (BOOKKEEPING_TIMEOUT_MS + SOCKET_SLACK_MS) / 1000
    with engine.connected(Deadline(7), read_only=True):
        pool = engine._client.options.pool_options  # type: ignore[attr-defined]
        assert pool.socket_timeout <= (7000 + SOCKET_SLACK_MS) / 1000  # the whole read-only session's budget


def test_bounded_options_keep_a_smaller_configured_bound_and_one_spelling() -> None:
    options = bounded_options(
        {"connecttimeoutms": 1500, "serverSelectionTimeoutMS": "900000", "replicaSet": "rs0"},
        Deadline(10),
        read_only=False,
    )

    assert options["connectTimeoutMS"] == 1500 and "connecttimeoutms" not in options
    assert 9000 < options["serverSelectionTimeoutMS"] <= 10_000
    assert options["socketTimeoutMS"] == BOOKKEEPING_TIMEOUT_MS + SOCKET_SLACK_MS
    assert options["replicaSet"] == "rs0"


def test_read_only_sessions_refuse_writes_before_sending(fleet: MongoFleet, mongo_commands: CommandRecorder) -> None:
    engine = engine_for(shard())
    assert isinstance(engine, MongoEngine)
    with engine.connected(Deadline(20), read_only=True):
        with pytest.raises(MigrationFailedError, match="read-only session"):
            engine._send({"create": "nope"}, 1000)
        assert engine.list_history() == []
    assert "nope" not in fleet.tables("mg-0")
    assert "create" not in {name for _, name, _ in mongo_commands.sent}


def test_canary_validation_on_a_mongo_shard(fleet: MongoFleet) -> None:
    with engine_for(shard()).connected(Deadline(20)) as engine:
        assert engine.query_scalar('{"count": "customers"}', Deadline(10)) == 3
        assert (
            engine.query_scalar(
                '{"find": "customers", "filter": {"_id": 2}, "projection": {"_id": 0, "name": 1}}', Deadline(10)
            )
            == "grace"
        )
        assert engine.query_scalar('{"find": "customers", "filter": {"_id": 99}}', Deadline(10)) is None
        with pytest.raises(InvalidScriptError, match="find, count, aggregate or distinct"):
            engine.query_scalar('{"drop": "customers"}', Deadline(10))
        with pytest.raises(InvalidScriptError, match="JSON command"):
            engine.query_scalar("SELECT count(*) FROM customers", Deadline(10))
    assert fleet.db("mg-0")["customers"].count_documents({}) == 3


def test_extended_json_becomes_bson_types() -> None:
    engine = MongoEngine("unused", "mg-x")
    (command,) = engine.split('[{"insert": "events", "documents": [{"at": {"$date": "2026-01-02T03:04:05Z"}}]}]')

    assert command["documents"][0]["at"] == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert str(command).startswith('{"insert":"events"')


# -- two processes ---------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_processes_waiting_on_a_held_lease_apply_exactly_once(
    fleet: MongoFleet, write_migration: WriteMigration, workers: Workers
) -> None:
    folder = mongo_migration(
        write_migration,
        "007_race",
        # run twice, the second insert of _id 1 would fail: exactly-once is visible in the outcomes
        up=[
            {"insert": "race_log", "documents": [{"_id": 1}]},
            {"update": "customers", "updates": [{"q": {}, "u": {"$set": {"race": 1}}, "multi": True}]},
        ],
        down=[{"drop": "race_log"}],
        per_shard_timeout=120,
    )
    locks = fleet.db("mg-0")["shardmigrate_locks"]
    with fleet.hold_migration_lock("mg-0", owner="the-test"):
        first = workers.start(folder, "mg-0", name="a", sync=True)
        second = workers.start(folder, "mg-0", name="b", sync=True)
        workers.wait_ready("a", "b")
        workers.go()
        wait_for(lambda: locks.count_documents({"waiting_for": "migration"}) == 2, 60, what="both workers to wait")
        assert first.poll() is None and second.poll() is None

    results = [Workers.result(first), Workers.result(second)]

    assert sorted(r["outcome"] for r in results) == ["already_applied", "succeeded"], results
    assert fleet.db("mg-0")["race_log"].count_documents({}) == 1
    assert fleet.db("mg-0")["customers"].count_documents({"race": 1}) == 3
    assert locks.count_documents({}) == 0


@pytest.mark.timeout(120)
def test_a_held_lease_runs_out_the_budget_as_lock_timeout_naming_the_holder(
    fleet: MongoFleet, write_migration: WriteMigration
) -> None:
    folder = mongo_migration(
        write_migration, "008_held", up=[{"create": "x"}], down=[{"drop": "x"}], per_shard_timeout=1
    )
    with fleet.hold_migration_lock("mg-0", owner="worker-7:1234"):
        status = apply_to_shard(shard(), load_migration(folder))
        waiters_left = fleet.db("mg-0")["shardmigrate_locks"].count_documents({"waiting_for": "migration"})

    assert status.error_code == "shardmigrate.lock_timeout", status
    assert "held by worker-7:1234" in (status.error_message or "") and "shardmigrate_locks" in (
        status.error_message or ""
    )
    assert waiters_left == 0 and "x" not in fleet.tables("mg-0")


def test_unknown_commands_are_refused_when_split() -> None:
    with pytest.raises(InvalidScriptError, match="unknown MongoDB command"):
        MongoEngine("unused", "mg-x").split('[{"eval": "db.dropDatabase()"}]')


def test_the_lock_holder_is_visible_while_held(fleet: MongoFleet) -> None:
    seen: dict[str, Any] = {}
    with engine_for(shard()).connected(Deadline(20)) as engine, engine.migration_lock(Deadline(20)):
        seen.update(fleet.lease("mg-0") or {})
    assert seen["shard_id"] == "mg-0" and seen["pid"] > 0 and seen["owner"].count(":") == 2
    assert fleet.lease("mg-0") is None
