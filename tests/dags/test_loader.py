"""``load_migration_dags`` as Airflow's DagBag parses it: the one-line DAG file, broken folders that stay
visible, topology errors, build-time limits, and no database or connection touched at parse time."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from airflow_provider_shardmigrate.core.errors import InvalidTopologyError
from airflow_provider_shardmigrate.dags.migration import build_migration_dag
from airflow_provider_shardmigrate.dags.rollback import build_rollback_dag

DAG_FILE = textwrap.dedent(
    """
    from airflow_provider_shardmigrate import load_migration_dags

    globals().update(load_migration_dags("migrations", topology="shards.yaml"))
    """
)
TOPOLOGY = "shards:\n  - {id: a, conn_id: conn_that_does_not_exist}\n  - {id: b, conn_id: other_missing}\n"


def dags_folder(tmp_path: Path, write_migration, topology: str = TOPOLOGY) -> Path:
    folder = tmp_path / "dags"
    folder.mkdir()
    (folder / "shards.yaml").write_text(topology)
    (folder / "migration_dags.py").write_text(DAG_FILE)
    write_migration("001_good", root=folder / "migrations")
    write_migration("002_other", root=folder / "migrations", options={"strategy": "rolling", "max_parallelism": 1})
    return folder


def parse(folder: Path):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(folder))


def test_one_line_file_builds_rollout_and_rollback_dags_without_touching_connections(tmp_path, write_migration):
    bag = parse(dags_folder(tmp_path, write_migration))
    assert bag.import_errors == {}
    assert sorted(bag.dags) == [
        "shardmigrate__001_good",
        "shardmigrate__001_good__rollback",
        "shardmigrate__002_other",
        "shardmigrate__002_other__rollback",
        "shardmigrate_baseline",
        "shardmigrate_catchup",
        "shardmigrate_status",
    ]
    # The connections in the topology do not exist: parsing never looked them up.
    rolling = bag.dags["shardmigrate__002_other"]
    assert sorted(rolling.task_ids) == [
        "auto_rollback",
        "gate",
        "preflight",
        "report",
        "rollbacks.rollback",
        "shards.batch_1.apply",
        "shards.batch_2.apply",
    ]


def test_broken_migration_folder_is_visible_and_does_not_hide_the_others(tmp_path, write_migration):
    folder = dags_folder(tmp_path, write_migration)
    broken = write_migration("003_broken", root=folder / "migrations", options={"strategy": "yolo"})
    (broken / "down.sql").write_text("   \n")
    bag = parse(folder)
    assert bag.import_errors == {}
    assert "shardmigrate__001_good" in bag.dags and "shardmigrate__002_other" in bag.dags
    dag = bag.dags["shardmigrate__003_broken"]
    assert dag.description.startswith("INVALID: [shardmigrate.invalid_script]")
    assert "strategy" in dag.doc_md and "down.sql" in dag.doc_md and "script is empty" in dag.doc_md
    assert dag.task_ids == ["invalid_migration"]
    assert "invalid" in dag.tags


def test_canary_missing_from_topology_makes_an_invalid_dag(tmp_path, write_migration):
    folder = dags_folder(tmp_path, write_migration)
    write_migration("004_canary", root=folder / "migrations", options={"strategy": "canary_first", "canary": "zz"})
    dag = parse(folder).dags["shardmigrate__004_canary"]
    assert "canary 'zz' is not an active shard" in dag.doc_md


def test_broken_topology_is_the_files_import_error_naming_file_field_and_code(tmp_path, write_migration):
    folder = dags_folder(
        tmp_path, write_migration, topology="shards:\n  - {id: a, conn_id: x}\n  - {id: A, conn_id: y}\n"
    )
    bag = parse(folder)
    assert bag.dags == {}
    (error,) = bag.import_errors.values()
    assert "shardmigrate.invalid_topology" in error
    assert "shards.yaml" in error and "shards[1].id" in error and "duplicate shard id 'A'" in error


def test_zero_active_shards_is_an_error_at_build_time(tmp_path, write_migration):
    folder = dags_folder(tmp_path, write_migration, topology="shards:\n  - {id: a, conn_id: x, active: false}\n")
    (error,) = parse(folder).import_errors.values()
    assert "shardmigrate.invalid_topology" in error and "no active shard" in error
    from airflow_provider_shardmigrate.core.topology import parse_topology

    with pytest.raises(InvalidTopologyError, match="no active shard"):
        build_migration_dag(
            folder / "migrations" / "001_good",
            parse_topology({"shards": [{"id": "a", "conn_id": "x", "active": False}]}),
        )


def test_a_wave_wider_than_airflow_can_map_is_split_into_chained_chunks(tmp_path, write_migration, monkeypatch):
    from airflow_provider_shardmigrate.core.topology import parse_topology

    topology = parse_topology({"shards": [{"id": f"s{i}", "conn_id": f"c{i}"} for i in range(12)]})
    migration = write_migration("005_wide", options={"strategy": "parallel", "execution": "per_shard"})
    monkeypatch.setenv("AIRFLOW__CORE__MAX_MAP_LENGTH", "5")
    dag = build_migration_dag(migration, topology)
    chunks = ["shards.apply", "shards.apply_2", "shards.apply_3"]
    assert [t for t in dag.task_ids if t.startswith("shards.")] == chunks
    widths = [len(dag.get_task(t).expand_input.value) for t in chunks]
    assert widths == [5, 5, 2]
    assert dag.get_task("shards.apply_2").upstream_task_ids == {"shards.apply"}  # one chunk after another
    assert dag.get_task("shards.apply_3").trigger_rule == "all_done"
    rollback = build_rollback_dag(migration, topology)
    assert [t for t in rollback.task_ids if t.startswith("shards.")] == [
        "shards.rollback",
        "shards.rollback_2",
        "shards.rollback_3",
    ]


def test_sequential_tasks_are_labelled_with_shard_ids(tmp_path, write_migration):
    from airflow_provider_shardmigrate.core.topology import parse_topology

    topology = parse_topology({"shards": [{"id": "eu-1", "conn_id": "c1"}, {"id": "us.2", "conn_id": "c2"}]})
    dag = build_migration_dag(write_migration("007_seq"), topology)
    assert [t for t in dag.task_ids if t.startswith("shards.")] == ["shards.eu-1", "shards.us.2"]
    assert dag.get_task("shards.eu-1").downstream_task_ids >= {"shards.us.2"}


def test_absolute_paths_and_base_dir(tmp_path, write_migration):
    from airflow_provider_shardmigrate import load_migration_dags

    folder = dags_folder(tmp_path, write_migration)
    dags = load_migration_dags(
        folder / "migrations", topology=folder / "shards.yaml", include_rollback=False, fleet_dags=False
    )
    assert sorted(dags) == ["shardmigrate__001_good", "shardmigrate__002_other"]
    relative = load_migration_dags("migrations", topology="shards.yaml", base_dir=folder)
    assert len(relative) == 7


# --- hostile folder names (issue 9) --------------------------------------------------------------------------

HOSTILE = ["has space", "it's", 'say"hi"', "a;b", "trailing\n", "ünïcode`name"]


def test_folder_names_that_cannot_be_dag_ids_become_stand_ins_and_the_others_load(tmp_path, write_migration):
    folder = dags_folder(tmp_path, write_migration)
    for name in HOSTILE:
        write_migration(name, root=folder / "migrations")
    bag = parse(folder)
    assert bag.import_errors == {}
    assert {"shardmigrate__001_good", "shardmigrate__002_other__rollback"} <= set(bag.dags)
    stand_ins = {dag_id: dag for dag_id, dag in bag.dags.items() if "invalid" in dag.tags}
    assert len(stand_ins) == len(HOSTILE)  # one each, none colliding
    for dag_id, dag in stand_ins.items():
        assert dag_id.startswith("shardmigrate__invalid__")
        assert dag.task_ids == ["invalid_migration"]
        assert "is not a valid migration id" in dag.doc_md and "rename the folder" in dag.doc_md
        assert dag.description.startswith("INVALID: [shardmigrate.invalid_script]")
    assert sorted(parse(folder).dags) == sorted(bag.dags)  # stable across parses


def test_invalid_dag_ids_are_stable_valid_and_distinct():
    import re

    from airflow_provider_shardmigrate.dags.loader import invalid_dag_id

    ids = [invalid_dag_id(name) for name in [*HOSTILE, "has_space", "x" * 400]]
    assert len(set(ids)) == len(ids)
    assert all(len(i) <= 250 and re.fullmatch(r"[\w.-]+", i) for i in ids)
    assert invalid_dag_id("has space") == invalid_dag_id("has space")
    assert invalid_dag_id("001_good") == "shardmigrate__001_good"  # a valid id keeps its DAG id


def test_ids_that_differ_only_by_case_are_both_stand_ins(tmp_path, write_migration):
    folder = dags_folder(tmp_path, write_migration)
    write_migration("m010_Orders", root=folder / "migrations")
    write_migration("m010_orders", root=folder / "migrations")
    bag = parse(folder)
    assert bag.import_errors == {}
    for dag_id in ("shardmigrate__m010_Orders", "shardmigrate__m010_orders"):
        dag = bag.dags[dag_id]
        assert "invalid" in dag.tags and "differ only by case" in dag.doc_md
    assert "shardmigrate__m010_orders__rollback" not in bag.dags


def test_allow_symlinks_in_the_topology_lets_the_loader_follow_links(tmp_path, write_migration):
    folder = dags_folder(tmp_path, write_migration)
    outside = write_migration("shared", root=tmp_path / "elsewhere")
    (folder / "migrations" / "003_linked").symlink_to(outside, target_is_directory=True)
    refused = parse(folder).dags["shardmigrate__003_linked"]
    assert "invalid" in refused.tags and "outside the migrations folder" in refused.doc_md
    (folder / "shards.yaml").write_text(TOPOLOGY + "allow_symlinks: true\n")
    assert "invalid" not in parse(folder).dags["shardmigrate__003_linked"].tags


def test_two_migrations_folders_in_one_dags_folder_name_their_fleet_dags(tmp_path, write_migration):
    folder = tmp_path / "dags"
    for fleet, migration_id in (("eu", "001_eu"), ("us", "001_us")):
        project = folder / fleet
        project.mkdir(parents=True)
        (project / "shards.yaml").write_text(TOPOLOGY)
        (project / "migration_dags.py").write_text(
            DAG_FILE.replace('topology="shards.yaml")', f'topology="shards.yaml", fleet="{fleet}")')
        )
        write_migration(migration_id, root=project / "migrations")
    bag = parse(folder)
    assert bag.import_errors == {}
    fleet_dags = sorted(dag_id for dag_id in bag.dags if not dag_id.startswith("shardmigrate__"))
    assert fleet_dags == sorted(
        f"shardmigrate_{kind}__{fleet}" for fleet in ("eu", "us") for kind in ("baseline", "catchup", "status")
    )
    catchup = bag.dags["shardmigrate_catchup__eu"]
    assert sorted(catchup.task_ids) == ["gate", "preflight", "report", "shards.catchup"]
    assert bag.dags["shardmigrate_status__us"].task_ids == ["publish"]
    with pytest.raises(ValueError, match="fleet 'a b'"):
        from airflow_provider_shardmigrate import load_migration_dags

        load_migration_dags(folder / "eu" / "migrations", folder / "eu" / "shards.yaml", fleet="a b")
