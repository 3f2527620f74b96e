"""Dry run, checksum protection, auto-rollback, the rollback DAG, the canary gate and Params, each run
as a real DAG against real SQLite shard files."""

from __future__ import annotations

import pytest
import yaml

from airflow_provider_shardmigrate.core.topology import parse_topology
from airflow_provider_shardmigrate.dags.migration import build_migration_dag
from airflow_provider_shardmigrate.dags.rollback import build_rollback_dag
from tests.conftest import BASE_SCHEMA

pytestmark = pytest.mark.slow

INDEX = "idx_customers_name"


# The bad shard has the same schema (the preflight passes) but a duplicate name: UNIQUE_UP fails there.
UNIQUE_UP = "CREATE UNIQUE INDEX idx_customers_name ON customers (name);"
DUPLICATE = BASE_SCHEMA + "INSERT INTO customers (name) VALUES ('ada');"
FIX_DUPLICATE = "DELETE FROM customers WHERE id = (SELECT MAX(id) FROM customers WHERE name = 'ada');"


def fleet(sqlite_fleet, count=4, bad=None):
    for i in range(count):
        shard_id = f"s{i}"
        sqlite_fleet.add(shard_id, DUPLICATE if shard_id == bad else BASE_SCHEMA)
    return parse_topology(yaml.safe_load(sqlite_fleet.topology()), "shards.yaml")


def test_dry_run_reports_without_touching_any_shard(sqlite_fleet, write_migration, dag_runner):
    topology = fleet(sqlite_fleet)
    before = {sid: sqlite_fleet.objects(sid) for sid in sqlite_fleet.paths}
    fresh = write_migration("010_dry_new", options={"strategy": "sequential"})
    run = dag_runner(build_migration_dag(fresh, topology), {"dry_run": True})
    assert run.state == "success"
    assert run.outcomes() == {sid: "would_apply" for sid in sqlite_fleet.paths}
    assert all("would run 1 statement" in s["error_message"] for s in run.shards.values())
    assert {sid: sqlite_fleet.objects(sid) for sid in sqlite_fleet.paths} == before  # no DDL, no history table

    applied = write_migration(
        "011_dry_applied",
        up="CREATE INDEX idx_a ON customers (id);",
        down="DROP INDEX idx_a;",
        options={"strategy": "parallel", "depends_on": []},  # unrelated to 010, which never ran
    )
    assert dag_runner(build_migration_dag(applied, topology)).state == "success"
    assert dag_runner(build_migration_dag(applied, topology), {"dry_run": True}).outcomes() == {
        sid: "already_applied" for sid in sqlite_fleet.paths
    }
    # The script changed after it was applied: a dry run reports the mismatch on every shard (a dry run
    # ignores stop_on_first_failure, so no shard is left pending), and changes nothing.
    (applied / "up.sql").write_text("CREATE INDEX idx_a ON customers (id, name);")
    run = dag_runner(build_migration_dag(applied, topology), {"dry_run": True})
    assert run.outcomes() == {sid: "failed" for sid in sqlite_fleet.paths}
    assert all(s["error_code"] == "shardmigrate.invalid_script" for s in run.shards.values())
    assert run.state == "failed"


def test_checksum_mismatch_refuses_and_names_both_checksums(sqlite_fleet, write_migration, dag_runner):
    topology = fleet(sqlite_fleet)
    migration = write_migration("020_checksum", options={"strategy": "parallel", "stop_on_first_failure": False})
    first = dag_runner(build_migration_dag(migration, topology))
    assert first.state == "success"
    old = sqlite_fleet.history("s0")["020_checksum"]["checksum"]

    (migration / "up.sql").write_text("CREATE INDEX idx_customers_name ON customers (name, id);")
    changed = build_migration_dag(migration, topology)
    run = dag_runner(changed)
    assert run.state == "failed"
    for status in run.shards.values():
        assert status["outcome"] == "failed"
        assert status["error_code"] == "shardmigrate.invalid_script"
        assert old in status["error_message"] and "now hash to sha256:" in status["error_message"]
    assert sqlite_fleet.history("s0")["020_checksum"]["checksum"] == old  # history untouched


@pytest.mark.parametrize("preflight", [True, False], ids=["preflight", "no-preflight"])
def test_script_edited_after_parse_is_refused(preflight, sqlite_fleet, write_migration, dag_runner):
    topology = fleet(sqlite_fleet, count=2)
    migration = write_migration(
        "021_edited",
        options={"strategy": "sequential", "stop_on_first_failure": False, "validate_before_apply": preflight},
    )
    dag = build_migration_dag(migration, topology)
    (migration / "up.sql").write_text("DROP TABLE customers;")  # edited between parse and run
    run = dag_runner(dag)
    assert run.state == "failed"
    # refused before any shard, with or without the drift check: the preflight always re-reads the scripts
    assert run.tasks[("preflight", -1)] == "failed"
    assert run.xcoms[("preflight", -1)]["error_code"] == "shardmigrate.invalid_script"
    assert "changed since this DAG was parsed" in run.xcoms[("preflight", -1)]["error_message"]
    assert run.outcomes() == {"s0": "pending", "s1": "pending"}
    assert run.report is not None and run.report["refused"]["code"] == "shardmigrate.invalid_script"
    assert "changed since this DAG was parsed" in run.report["halted_reason"]
    assert all("customers" in sqlite_fleet.objects(sid) for sid in ("s0", "s1"))


@pytest.mark.parametrize("strategy", ["parallel", "rolling"])
def test_auto_rollback_leaves_no_shard_migrated(strategy, sqlite_fleet, write_migration, dag_runner):
    topology = fleet(sqlite_fleet, count=5, bad="s3")
    migration = write_migration(
        "030_auto_rollback",
        up=UNIQUE_UP,
        options={"strategy": strategy, "max_parallelism": 2, "stop_on_first_failure": False, "auto_rollback": True},
    )
    run = dag_runner(build_migration_dag(migration, topology))
    assert run.state == "failed"
    assert run.tasks[("auto_rollback", -1)] == "success"
    outcomes = run.outcomes()
    assert outcomes == {
        "s0": "rolled_back",
        "s1": "rolled_back",
        "s2": "rolled_back",
        "s3": "failed",
        "s4": "rolled_back",
    }
    assert run.report["rolled_back_count"] == 4 and run.report["failed_count"] == 1
    for shard_id in sqlite_fleet.paths:
        assert INDEX not in sqlite_fleet.objects(shard_id)
    for shard_id in ("s0", "s1", "s2", "s4"):
        row = sqlite_fleet.history(shard_id)["030_auto_rollback"]
        assert row["status"] == "rolled_back" and row["rolled_back_at"] and row["applied_at"]
    assert sqlite_fleet.history("s3") == {}

    # After fixing the broken shard, a re-run applies everywhere (rolled_back rows allow a re-apply).
    sqlite_fleet.execute("s3", FIX_DUPLICATE)
    again = dag_runner(build_migration_dag(migration, topology))
    assert again.state == "success"
    assert set(again.outcomes().values()) == {"succeeded"}
    assert all(sqlite_fleet.history(s)["030_auto_rollback"]["status"] == "applied" for s in sqlite_fleet.paths)


def test_auto_rollback_param_off_keeps_applied_shards(sqlite_fleet, write_migration, dag_runner):
    topology = fleet(sqlite_fleet, count=3, bad="s1")
    migration = write_migration(
        "031_no_rollback",
        up=UNIQUE_UP,
        options={"strategy": "parallel", "stop_on_first_failure": False, "auto_rollback": True},
    )
    run = dag_runner(build_migration_dag(migration, topology), {"auto_rollback": False})
    assert run.tasks[("auto_rollback", -1)] == "skipped"
    assert run.outcomes() == {"s0": "succeeded", "s1": "failed", "s2": "succeeded"}
    assert INDEX in sqlite_fleet.objects("s0") and INDEX in sqlite_fleet.objects("s2")


def test_auto_rollback_spares_shards_applied_by_an_earlier_run(sqlite_fleet, write_migration, dag_runner):
    topology = fleet(sqlite_fleet, count=3)
    migration = write_migration(
        "032_earlier",
        up=UNIQUE_UP,
        options={"strategy": "sequential", "stop_on_first_failure": False, "auto_rollback": True},
    )
    dag = build_migration_dag(migration, topology)
    assert dag_runner(dag).state == "success"
    sqlite_fleet.add("s3", DUPLICATE)
    topology = parse_topology(yaml.safe_load(sqlite_fleet.topology()), "shards.yaml")
    run = dag_runner(build_migration_dag(migration, topology))
    assert run.outcomes() == {"s0": "already_applied", "s1": "already_applied", "s2": "already_applied", "s3": "failed"}
    assert all(INDEX in sqlite_fleet.objects(s) for s in ("s0", "s1", "s2"))


def test_rollback_dag_is_driven_by_history(sqlite_fleet, write_migration, dag_runner):
    topology = fleet(sqlite_fleet, count=4, bad="s2")
    migration = write_migration(
        "040_manual", up=UNIQUE_UP, options={"strategy": "parallel", "stop_on_first_failure": False}
    )
    applied = dag_runner(build_migration_dag(migration, topology))
    assert applied.outcomes()["s2"] == "failed"
    assert build_rollback_dag(migration, topology).dag_id == "shardmigrate__040_manual__rollback"

    # A fresh DAG object per run: dag.test() keeps a run's conf in the DAG object's params.
    def rollback():
        return build_rollback_dag(migration, topology)

    dry = dag_runner(rollback(), {"dry_run": True, "shards": ["all"]})
    assert dry.outcomes() == {
        "s0": "would_roll_back",
        "s1": "would_roll_back",
        "s2": "not_applied",
        "s3": "would_roll_back",
    }
    assert INDEX in sqlite_fleet.objects("s0")

    only = dag_runner(rollback(), {"shards": ["s1"]})
    assert only.state == "success"
    assert only.outcomes() == {"s0": "not_selected", "s1": "rolled_back", "s2": "not_selected", "s3": "not_selected"}
    assert INDEX not in sqlite_fleet.objects("s1") and INDEX in sqlite_fleet.objects("s0")

    full = dag_runner(rollback(), {"shards": ["all"]})
    assert full.state == "success"
    assert full.outcomes() == {"s0": "rolled_back", "s1": "not_applied", "s2": "not_applied", "s3": "rolled_back"}
    assert "already rolled back" in full.shards["s1"]["error_message"]
    assert "nothing to roll back" in full.shards["s2"]["error_message"]
    for shard_id in ("s0", "s1", "s3"):
        assert INDEX not in sqlite_fleet.objects(shard_id)
        assert sqlite_fleet.history(shard_id)["040_manual"]["status"] == "rolled_back"

    # Re-apply after a rollback works.
    sqlite_fleet.execute("s2", FIX_DUPLICATE)
    again = dag_runner(build_migration_dag(migration, topology))
    assert again.state == "success" and set(again.outcomes().values()) == {"succeeded"}


def test_rollback_failure_fails_the_rollback_run(sqlite_fleet, write_migration, dag_runner):
    topology = fleet(sqlite_fleet, count=2)
    migration = write_migration("041_bad_down", down="DROP INDEX no_such_index;", options={"strategy": "parallel"})
    assert dag_runner(build_migration_dag(migration, topology)).state == "success"
    run = dag_runner(build_rollback_dag(migration, topology), {"shards": ["all"]})
    assert run.state == "failed"
    assert {s["error_code"] for s in run.shards.values()} == {"shardmigrate.rollback_failed"}
    assert all(sqlite_fleet.history(s)["041_bad_down"]["status"] == "applied" for s in ("s0", "s1"))


def test_canary_validation_query_gates_the_fleet(sqlite_fleet, write_migration, dag_runner):
    topology = fleet(sqlite_fleet, count=3)
    migration = write_migration(
        "050_canary_check",
        options={
            "strategy": "canary_first",
            "canary_validation": "SELECT COUNT(*) FROM customers WHERE name = 'nobody'",
        },
    )
    run = dag_runner(build_migration_dag(migration, topology))
    assert run.tasks[("shards.canary_gate", -1)] == "failed"
    assert run.outcomes() == {"s0": "succeeded", "s1": "pending", "s2": "pending"}
    assert run.state == "failed"

    passing = write_migration(
        "051_canary_ok",
        up="CREATE INDEX idx_ok ON customers (id);",
        down="DROP INDEX idx_ok;",
        options={
            "strategy": "canary_first",
            "canary_validation": "SELECT COUNT(*) FROM customers",
            "canary_bake_time": 1,
            "depends_on": [],  # unrelated to 050, which the test rolls back
        },
    )
    # The failed canary left s0 with an index s1 and s2 lack: the preflight of the next migration that
    # touches `customers` refuses to start, naming the table and the shards.
    refused = dag_runner(build_migration_dag(passing, topology))
    assert refused.tasks[("preflight", -1)] == "failed"
    preflight = refused.xcoms[("preflight", -1)]
    assert preflight["error_code"] == "shardmigrate.drift_detected"
    assert preflight["conflicts"] == {"customers": ["s1", "s2"]}
    assert "table 'customers': s1, s2 differ from s0" in preflight["error_message"]
    assert refused.outcomes() == {"s0": "pending", "s1": "pending", "s2": "pending"}
    # The report carries the refusal's code and the drifted table, where the run's summary is read.
    assert refused.report is not None and refused.report["refused"]["code"] == "shardmigrate.drift_detected"
    assert "table 'customers': s1, s2 differ from s0" in refused.report["refused"]["reason"]
    assert refused.report["halted_reason"].startswith("refused before any shard started: [shardmigrate.drift_detected]")
    assert "idx_ok" not in sqlite_fleet.objects("s0")

    # Rolling the canary back makes the fleet consistent again; now the gate opens.
    assert dag_runner(build_rollback_dag(migration, topology), {"shards": ["all"]}).state == "success"
    ok = dag_runner(build_migration_dag(passing, topology))
    assert ok.state == "success"
    assert ok.xcoms[("shards.canary_gate", -1)] == {"canary": "s0", "validation": "3"}
    start, end = ok.times[("shards.canary_gate", -1)]
    assert (end - start).total_seconds() >= 1.0  # the bake time was waited


def test_invalid_conf_is_rejected_naming_the_param(sqlite_fleet, write_migration, airflow_db):
    from airflow.sdk.exceptions import ParamValidationError

    from tests.dags.conftest import register

    topology = fleet(sqlite_fleet, count=1)
    dag = build_migration_dag(write_migration("060_conf"), topology)
    register(dag)
    with pytest.raises(ParamValidationError, match="stop_on_first_failure"):
        dag.test(run_conf={"stop_on_first_failure": "yes"})
    assert sqlite_fleet.history("s0") == {}


@pytest.mark.parametrize("kind", ["rollout", "rollback"])
def test_a_misspelled_conf_key_refuses_the_run_before_any_shard(kind, sqlite_fleet, write_migration, dag_runner):
    topology = fleet(sqlite_fleet, count=2)
    migration = write_migration("065_typo", options={"strategy": "parallel"})
    if kind == "rollback":
        assert dag_runner(build_migration_dag(migration, topology)).state == "success"
    before = {sid: sqlite_fleet.history(sid) for sid in sqlite_fleet.paths}
    build = build_migration_dag if kind == "rollout" else build_rollback_dag
    # `dryrun` is not a Param: without this check the run would do real DDL, as if dry_run were off.
    run = dag_runner(
        build(migration, topology), {"dryrun": True, "shards": ["all"]} if kind == "rollback" else {"dryrun": True}
    )
    assert run.state == "failed"
    assert run.report is not None and run.report["refused"]["code"] == "shardmigrate.invalid_params"
    reason = run.report["refused"]["reason"]
    assert "unknown conf key(s) 'dryrun'" in reason and "dry_run" in reason and "nothing was run" in reason
    assert {sid: sqlite_fleet.history(sid) for sid in sqlite_fleet.paths} == before
    assert (INDEX in sqlite_fleet.objects("s0")) == (kind == "rollback")


def test_params_default_from_migration_yaml(sqlite_fleet, write_migration):
    topology = fleet(sqlite_fleet, count=1)
    dag = build_migration_dag(
        write_migration("061_defaults", options={"stop_on_first_failure": False, "auto_rollback": True}), topology
    )
    params = dag.params.dump()
    assert params == {
        "stop_on_first_failure": False,
        "auto_rollback": True,
        "dry_run": False,
        "max_failed_shards": None,
        "max_failure_ratio": None,
    }
    schema = {name: dag.params.get_param(name).schema for name in params}
    assert all(schema[name]["type"] == "boolean" for name in ("stop_on_first_failure", "auto_rollback", "dry_run"))
    assert schema["max_failed_shards"]["type"] == ["null", "integer"]
    assert schema["max_failure_ratio"]["maximum"] == 1


@pytest.mark.parametrize("strategy", ["sequential", "parallel"])
def test_shard_task_that_dies_without_a_result_is_reported_failed(
    strategy, sqlite_fleet, write_migration, dag_runner, monkeypatch
):
    """A task that ends failed without pushing its status (a lost worker, a kill) is a failed shard in
    the report -- not pending, which would claim the shard was never touched."""
    from airflow_provider_shardmigrate.operators.shard import ShardMigrationOperator

    topology = fleet(sqlite_fleet, count=3)
    migration = write_migration("070_lost", options={"strategy": strategy, "stop_on_first_failure": False})
    dag = build_migration_dag(migration, topology)

    def die_before_running(self, context):  # fault injection: stands in for a worker killed mid-task
        if self.shard_id == "s1":
            raise RuntimeError("worker lost")

    monkeypatch.setattr(ShardMigrationOperator, "pre_execute", die_before_running)
    run = dag_runner(dag)
    assert run.outcomes() == {"s0": "succeeded", "s1": "failed", "s2": "succeeded"}
    assert "without reporting a result" in run.report["shards"]["s1"]["error_message"]
    assert run.report["shards"]["s1"]["error_code"] == "shardmigrate.migration_failed"
    assert run.state == "failed"
