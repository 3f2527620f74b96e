"""Run inside a fresh virtualenv that has only ``airflow-provider-shardmigrate[sqlite]`` (tests/test_packaging.py).

Usage: ``python -I packaging_sqlite_dag.py WORKDIR``. Sets up a throwaway Airflow home (SQLite metadata DB) and a
real SQLite shard file in WORKDIR, builds the migration DAG with ``build_migration_dag``, runs it with
``dag.test()`` and prints one JSON line with what the caller checks; the caller reads the shard file itself.
Standard library, Airflow and the package only: whatever else this needs would be missing from ``[sqlite]``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
from pathlib import Path

MIGRATION_ID = "001_add_customer_email"
UP = "ALTER TABLE customers ADD COLUMN email TEXT;\nCREATE INDEX idx_customers_email ON customers (email);\n"
DOWN = "DROP INDEX idx_customers_email;\nALTER TABLE customers DROP COLUMN email;\n"
BUNDLE = "shardmigrate-packaging-test"


def prepare(work: Path) -> tuple[Path, Path]:
    """The Airflow home, a shard file with a table, a migration folder and a topology; returns both paths."""
    home = work / "airflow-home"
    (home / "dags").mkdir(parents=True)
    shard = work / "shard-0.db"
    with sqlite3.connect(shard) as conn:
        conn.executescript("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL);")
    conn.close()
    folder = work / "migrations" / MIGRATION_ID
    folder.mkdir(parents=True)
    (folder / "up.sql").write_text(UP)
    (folder / "down.sql").write_text(DOWN)
    topology = work / "shards.yaml"
    topology.write_text("shards:\n  - id: shard-0\n    conn_id: shard_0\n")
    os.environ.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
            "AIRFLOW_CONN_SHARD_0": json.dumps({"conn_type": "sqlite", "host": str(shard)}),
        }
    )
    return folder, topology


def register(dag: object) -> None:
    """Serialize the DAG into a bundle of the metadata DB: Airflow 3.3's ``dag.test()`` runs serialized DAGs only."""
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db
    from airflow.models.dagbundle import DagBundleModel
    from airflow.utils.session import create_session

    with create_session() as session:
        session.add(DagBundleModel(name=BUNDLE))
    bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])  # an empty folder: nothing to parse
    bag.bag_dag(dag)
    sync_bag_to_db(bag, BUNDLE, None)


def main(work: Path) -> None:
    folder, topology = prepare(work)
    # Airflow reads its configuration when first imported: only now that the environment is set.
    from airflow.utils import db

    import airflow_provider_shardmigrate
    from airflow_provider_shardmigrate import build_migration_dag

    db.resetdb()
    dag = build_migration_dag(folder, topology)
    register(dag)
    run = dag.test()
    print(
        json.dumps(
            {
                "package_file": airflow_provider_shardmigrate.__file__,
                "dag_id": dag.dag_id,
                "task_ids": sorted(dag.task_ids),
                "state": str(run.state),
                "report": report_of(dag.dag_id, run.run_id),
            }
        )
    )


def report_of(dag_id: str, run_id: str) -> object:
    """The ``report`` task's XCom (the MigrationResult) of the run."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = (
            session.query(XComModel)
            .filter_by(dag_id=dag_id, run_id=run_id, task_id="report", key="return_value")
            .one_or_none()
        )
        return None if row is None else XComModel.deserialize_value(row)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
