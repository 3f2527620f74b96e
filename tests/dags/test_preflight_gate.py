"""The preflight gate in a real DAG run (issue 9, bug 10): a shard it cannot read refuses the rollout --
the preflight task fails naming the shard and the error code, and no shard is touched."""

from __future__ import annotations

import pytest
import yaml

from airflow_provider_shardmigrate.core.topology import parse_topology
from airflow_provider_shardmigrate.dags.migration import build_migration_dag

pytestmark = pytest.mark.slow


def test_an_unreadable_shard_refuses_the_rollout(sqlite_fleet, write_migration, dag_runner):
    for shard_id in ("s0", "s1", "s2"):
        sqlite_fleet.add(shard_id)
    sqlite_fleet.paths["s1"].unlink()
    topology = parse_topology(yaml.safe_load(sqlite_fleet.topology()), "shards.yaml")
    migration = write_migration("095_gate", options={"strategy": "parallel", "stop_on_first_failure": False})

    run = dag_runner(build_migration_dag(migration, topology))

    assert run.state == "failed"
    assert run.tasks[("preflight", -1)] == "failed"
    summary = run.xcoms[("preflight", -1)]
    assert summary["error_code"] == "shardmigrate.schema_comparison_failed"
    assert "shard 's1': [shardmigrate.migration_failed]" in summary["error_message"]
    assert "does not exist" in summary["error_message"]
    assert run.outcomes() == {"s0": "pending", "s1": "pending", "s2": "pending"}
    assert sqlite_fleet.history("s0") == {} and sqlite_fleet.history("s2") == {}  # nothing touched
