"""The catch-up DAG ``shardmigrate_catchup`` through real runs (``dag.test()``): a mixed fleet where one shard
is empty (PostgreSQL), one at M1 (MariaDB), one at M3 (SQLite) and one whose data breaks M3 (SQLite); dry run,
``up_to``, the full catch-up (every shard at M4 in id order, the broken one stopped at M3 with M4 not
applied), the ``shards`` selection and a refused trigger; then lanes and chunked per-shard tasks."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_shardmigrate.core.scripts import load_migrations
from airflow_provider_shardmigrate.core.topology import load_topology
from airflow_provider_shardmigrate.dags.catchup import build_catchup_dag
from airflow_provider_shardmigrate.dags.loader import load_migration_dags
from airflow_provider_shardmigrate.engines.runner import apply_to_shard
from tests.conftest import BASE_SCHEMA
from tests.server_fixtures import topology_yaml

IDS = ["001_orders", "002_orders_note", "003_unique_names", "004_notes"]
DUPLICATE = BASE_SCHEMA + "INSERT INTO customers (name) VALUES ('ada');"  # 003 cannot make names unique


def write_m1_to_m4(write_migration: Any, root: Path | None = None) -> None:
    write_migration(
        IDS[0],
        up="CREATE TABLE c_orders (id INT PRIMARY KEY, note VARCHAR(40));",
        down="DROP TABLE c_orders;",
        root=root,
    )
    write_migration(
        IDS[1],
        up="CREATE INDEX idx_c_orders_note ON c_orders (note);",
        down="DROP INDEX idx_c_orders_note;",
        extra={"down.mysql.sql": "DROP INDEX idx_c_orders_note ON c_orders;"},
        root=root,
    )
    write_migration(
        IDS[2],
        up="CREATE UNIQUE INDEX idx_c_customers_name ON customers (name);",
        down="DROP INDEX idx_c_customers_name;",
        extra={"down.mysql.sql": "DROP INDEX idx_c_customers_name ON customers;"},
        root=root,
    )
    write_migration(
        IDS[3],
        up="CREATE TABLE c_notes (id INT PRIMARY KEY, body VARCHAR(200));",
        down="DROP TABLE c_notes;",
        root=root,
    )


def stamps(history: dict[str, dict[str, Any]]) -> list[Any]:
    values = [history[mid]["applied_at"] for mid in IDS if mid in history]
    return [datetime.fromisoformat(v) if isinstance(v, str) else v for v in values]


class Mixed:
    ORDER = ["pg-empty", "my-at1", "sq-at3", "sq-dup"]

    def __init__(self, pg_fleet: Any, mysql_fleet: Any, sqlite_fleet: Any, tmp_path: Path, write_migration: Any):
        self.fleets = {"pg": pg_fleet, "my": mysql_fleet, "sq": sqlite_fleet}
        pg_fleet.add("pg-empty")
        mysql_fleet.add("my-at1")
        sqlite_fleet.add("sq-at3")
        sqlite_fleet.add("sq-dup", DUPLICATE)
        self.topology_file = tmp_path / "shards.yaml"
        self.topology_file.write_text(topology_yaml(self.ORDER))
        write_m1_to_m4(write_migration)
        self.migrations = tmp_path / "migrations"
        found = load_migrations(self.migrations)
        topology = load_topology(self.topology_file)
        for shard_id, count in (("my-at1", 1), ("sq-at3", 3)):  # where the shards stand before the catch-up
            for migration in found.migrations[:count]:
                assert apply_to_shard(topology.get(shard_id), migration).outcome == "succeeded"

    def of(self, shard_id: str) -> Any:
        return self.fleets[shard_id.split("-")[0]]

    def history(self, shard_id: str) -> dict[str, dict[str, Any]]:
        return dict(self.of(shard_id).history(shard_id))

    def applied(self, shard_id: str) -> list[str]:
        return sorted(mid for mid, row in self.history(shard_id).items() if row["status"] == "applied")

    def dag(self) -> Any:
        return load_migration_dags(self.migrations, self.topology_file, base_dir=self.topology_file.parent)[
            "shardmigrate_catchup"
        ]


@pytest.fixture
def mixed(pg_fleet, mysql_fleet, sqlite_fleet, tmp_path, write_migration) -> Mixed:
    return Mixed(pg_fleet, mysql_fleet, sqlite_fleet, tmp_path, write_migration)


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.mysql
def test_catch_up_a_mixed_fleet(mixed, dag_runner):
    # a fresh DAG per run: dag.test() in one process keeps a run's conf in the DAG's Param objects
    dag = mixed.dag()
    assert sorted(t for t in dag.task_ids if t.startswith("shards.")) == ["shards.catchup"]
    before = {shard_id: mixed.history(shard_id) for shard_id in mixed.ORDER}

    # dry run: every shard lists what it would apply; nothing is written anywhere
    dry = dag_runner(dag, {"dry_run": True})
    assert dry.state == "success", dry.tasks
    assert dry.report["dry_run"] is True and dry.report["migrations"] == IDS
    would = {shard_id: status["would_apply"] for shard_id, status in dry.report["shards"].items()}
    assert would == {"pg-empty": IDS, "my-at1": IDS[1:], "sq-at3": IDS[3:], "sq-dup": IDS}
    assert {shard_id: mixed.history(shard_id) for shard_id in mixed.ORDER} == before

    # up_to stops at the named migration
    partial = dag_runner(mixed.dag(), {"up_to": IDS[1]})
    assert partial.state == "success", partial.tasks
    assert partial.report["migrations"] == IDS[:2] and partial.report["migration_id"] == IDS[1]
    assert partial.outcomes() == {
        "pg-empty": "succeeded",
        "my-at1": "succeeded",
        "sq-at3": "already_applied",
        "sq-dup": "succeeded",
    }
    assert partial.report["shards"]["pg-empty"]["applied"] == IDS[:2]
    assert mixed.applied("pg-empty") == IDS[:2] and mixed.applied("my-at1") == IDS[:2]

    # the full catch-up: everyone reaches M4 in id order, except the shard whose data breaks M3
    run = dag_runner(mixed.dag())
    assert run.state == "failed"
    report = run.report
    assert report["migrations"] == IDS and report["failed_count"] == 1
    assert run.outcomes() == {"pg-empty": "succeeded", "my-at1": "succeeded", "sq-at3": "succeeded", "sq-dup": "failed"}
    shards = report["shards"]
    assert shards["pg-empty"]["applied"] == IDS[2:] and shards["my-at1"]["applied"] == IDS[2:]
    assert shards["sq-at3"]["applied"] == IDS[3:]
    dup = shards["sq-dup"]
    assert dup["failed_migration"] == IDS[2] and dup["pending"] == [IDS[3]] and dup["applied"] == []
    assert dup["error_code"] == "shardmigrate.migration_failed" and "UNIQUE" in dup["error_message"]
    for shard_id in ("pg-empty", "my-at1", "sq-at3"):
        assert mixed.applied(shard_id) == IDS, shard_id
        times = stamps(mixed.history(shard_id))
        assert times == sorted(times) and len(set(times)) == 4, (shard_id, times)  # applied in id order
    assert mixed.applied("sq-dup") == IDS[:2]  # stopped at M3: M3 and M4 not applied
    assert "c_notes" not in mixed.of("sq-dup").objects("sq-dup")
    assert run.tasks[("gate", -1)] == "failed"


@pytest.mark.slow
def test_the_shards_selection_and_a_refused_trigger(sqlite_fleet, tmp_path, write_migration, dag_runner):
    sqlite_fleet.add("s0")
    sqlite_fleet.add("s1")
    sqlite_fleet.add("new", "")  # a new, empty shard, not active yet
    (tmp_path / "shards.yaml").write_text(sqlite_fleet.topology(["s0", "s1", "new"], inactive=("new",)))
    write_migration("001_table", up="CREATE TABLE t (id INT);", down="DROP TABLE t;")
    write_migration("002_more", up="CREATE TABLE t2 (id INT);", down="DROP TABLE t2;")

    def dag() -> Any:  # a fresh DAG per run (see above)
        return load_migration_dags(tmp_path / "migrations", tmp_path / "shards.yaml", base_dir=tmp_path)[
            "shardmigrate_catchup"
        ]

    refused = dag_runner(dag(), {"shards": ["s0", "nope"]})
    assert refused.state == "failed"
    assert refused.report["refused"]["code"] == "shardmigrate.invalid_params"
    assert "'nope'" in refused.report["refused"]["reason"]
    assert set(refused.outcomes().values()) == {"pending"}
    typo = dag_runner(dag(), {"dryrun": True})
    assert (
        typo.report["refused"]["code"] == "shardmigrate.invalid_params"
        and "'dryrun'" in typo.report["refused"]["reason"]
    )
    assert all(sqlite_fleet.history(shard_id) == {} for shard_id in ("s0", "s1", "new"))

    # an inactive shard is caught up only when named (case-insensitive); the others are not selected
    onboard = dag_runner(dag(), {"shards": ["NEW"]})
    assert onboard.state == "success", onboard.tasks
    assert onboard.outcomes() == {"s0": "not_selected", "s1": "not_selected", "new": "succeeded"}
    assert sorted(sqlite_fleet.history("new")) == ["001_table", "002_more"]
    everyone = dag_runner(dag())  # default: every active shard
    assert everyone.outcomes() == {"s0": "succeeded", "s1": "succeeded", "new": "not_selected"}


@pytest.mark.slow
@pytest.mark.parametrize("execution", ["lanes", "per_shard"])
def test_lanes_and_chunked_tasks_catch_up_like_per_shard_tasks(
    execution, sqlite_fleet, tmp_path, write_migration, dag_runner, monkeypatch
):
    shard_ids = [f"s{i}" for i in range(5)]
    for shard_id in shard_ids:
        sqlite_fleet.add(shard_id, DUPLICATE if shard_id == "s3" else BASE_SCHEMA)
    (tmp_path / "shards.yaml").write_text(sqlite_fleet.topology(shard_ids))
    write_m1_to_m4(write_migration)
    found = load_migrations(tmp_path / "migrations")
    topology = load_topology(tmp_path / "shards.yaml")
    assert apply_to_shard(topology.get("s1"), found.migrations[0]).outcome == "succeeded"
    monkeypatch.setenv("AIRFLOW__CORE__MAX_MAP_LENGTH", "2")
    dag = build_catchup_dag(found, topology, execution=execution, max_parallelism=2)
    shard_tasks = sorted(t for t in dag.task_ids if t.startswith("shards."))
    if execution == "lanes":
        assert shard_tasks == ["shards.lanes"]
    else:  # 5 shards, at most 2 per mapped task: three chunks, one after another
        assert shard_tasks == ["shards.catchup", "shards.catchup_2", "shards.catchup_3"]
    run = dag_runner(dag)
    assert run.state == "failed"
    assert run.outcomes() == {sid: ("failed" if sid == "s3" else "succeeded") for sid in shard_ids}
    assert run.report["shards"]["s1"]["applied"] == IDS[1:]
    assert run.report["shards"]["s3"]["failed_migration"] == IDS[2]
    for shard_id in shard_ids:
        expected = IDS[:2] if shard_id == "s3" else IDS
        assert sorted(sqlite_fleet.history(shard_id)) == expected, shard_id


@pytest.mark.slow
def test_a_fleet_whose_migration_dags_were_run_by_hand_out_of_order(
    sqlite_fleet, tmp_path, write_migration, dag_runner
):
    """The per-migration DAGs were triggered by hand in another order than the ids (an independent 003 first),
    and 003 was rolled back on one shard: the catch-up fills each shard's gaps in id order and leaves alone what a
    shard already holds."""
    from airflow_provider_shardmigrate.dags.migration import build_migration_dag
    from airflow_provider_shardmigrate.dags.rollback import build_rollback_dag

    shard_ids = ["s0", "s1", "s2"]
    for shard_id in shard_ids:
        sqlite_fleet.add(shard_id)
    (tmp_path / "shards.yaml").write_text(sqlite_fleet.topology(shard_ids))
    write_migration("001_orders", up="CREATE TABLE h_orders (id INT);", down="DROP TABLE h_orders;")
    write_migration("002_orders_idx", up="CREATE INDEX idx_h_orders ON h_orders (id);", down="DROP INDEX idx_h_orders;")
    write_migration(
        "003_notes",
        up="CREATE TABLE h_notes (id INT);",
        down="DROP TABLE h_notes;",
        options={"depends_on": []},  # independent: it may run before 001 and 002
    )
    found = load_migrations(tmp_path / "migrations")
    topology = load_topology(tmp_path / "shards.yaml")
    m1, _, m3 = found.migrations

    # by hand: 003's DAG first on the whole fleet, its rollback DAG on s1, and 001 on s2 alone (through the
    # per-shard protocol its shard task runs: its DAG would target every shard)
    assert dag_runner(build_migration_dag(m3, topology)).state == "success"
    assert dag_runner(build_rollback_dag(m3, topology), {"shards": ["s1"]}).state == "success"
    assert apply_to_shard(topology.get("s2"), m1).outcome == "succeeded"
    held_before = {sid: sqlite_fleet.history(sid) for sid in shard_ids}
    assert {sid: sorted(m for m, r in h.items() if r["status"] == "applied") for sid, h in held_before.items()} == {
        "s0": ["003_notes"],
        "s1": [],
        "s2": ["001_orders", "003_notes"],
    }

    dry = dag_runner(
        load_migration_dags(tmp_path / "migrations", tmp_path / "shards.yaml", base_dir=tmp_path)[
            "shardmigrate_catchup"
        ],
        {"dry_run": True},
    )
    assert {sid: s["would_apply"] for sid, s in dry.report["shards"].items()} == {
        "s0": ["001_orders", "002_orders_idx"],
        "s1": ["001_orders", "002_orders_idx", "003_notes"],
        "s2": ["002_orders_idx"],
    }
    run = dag_runner(
        load_migration_dags(tmp_path / "migrations", tmp_path / "shards.yaml", base_dir=tmp_path)[
            "shardmigrate_catchup"
        ]
    )
    assert run.state == "success", run.tasks
    applied = {sid: s["applied"] for sid, s in run.report["shards"].items()}
    assert applied == {sid: s["would_apply"] for sid, s in dry.report["shards"].items()}
    for shard_id in shard_ids:
        history = sqlite_fleet.history(shard_id)
        assert {m: r["status"] for m, r in history.items()} == dict.fromkeys(
            ["001_orders", "002_orders_idx", "003_notes"], "applied"
        ), shard_id
        for mid, row in held_before[shard_id].items():  # what a shard held was not run again
            if row["status"] == "applied":
                assert history[mid]["applied_at"] == row["applied_at"] and history[mid]["run_id"] == row["run_id"]
    # s1's 003 was rolled back by hand, so the catch-up applied it again, after 001 and 002
    s1 = sqlite_fleet.history("s1")
    assert s1["003_notes"]["run_id"] == s1["001_orders"]["run_id"] == run.run_id
