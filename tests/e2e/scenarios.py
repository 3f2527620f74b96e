"""The fleets and migrations the e2e session deploys (one dags folder, one deployment, every test)."""

from __future__ import annotations

from tests.e2e.project import PG_SLEEP_1S, MigrationSpec

# -- the mixed fleet: REST API, retry, browser ------------------------------------------------------------
REST_PG = [f"rpg-{i}" for i in range(4)]
REST_MY = [f"rmy-{i}" for i in range(3)]
REST_SHARDS = REST_PG + REST_MY  # topology order = rollout order

REST_ITEMS = MigrationSpec(
    "e2e_rest_items",
    up="CREATE TABLE e2e_items (id INT PRIMARY KEY, label VARCHAR(40) NOT NULL);",
    down="DROP TABLE e2e_items;",
    options={"description": "REST e2e: create e2e_items", "strategy": "parallel", "max_parallelism": 4},
)
#: Fails on a shard whose migration lock another session holds (lock wait bounded by per_shard_timeout).
RETRY_INDEX = MigrationSpec(
    "e2e_retry_index",
    up="CREATE INDEX e2e_idx_customers_name ON customers (name);",
    down="DROP INDEX e2e_idx_customers_name;",
    variants={"down.mysql.sql": "DROP INDEX e2e_idx_customers_name ON customers;"},
    options={
        "strategy": "parallel",
        "max_parallelism": 4,
        "stop_on_first_failure": False,
        "per_shard_timeout": 4,
    },
)
BROWSER_NOTES = MigrationSpec(
    "e2e_browser_notes",
    up="CREATE TABLE e2e_browser_notes (id INT PRIMARY KEY, note VARCHAR(200));",
    down="DROP TABLE e2e_browser_notes;",
    # Both off by default, so the browser test has to switch them on in the form.
    options={"strategy": "parallel", "max_parallelism": 4, "stop_on_first_failure": False, "auto_rollback": False},
)
#: Applied once by the metrics test: every shard succeeds, so each emits shards_migrated.
METRICS_TABLE = MigrationSpec(
    "e2e_metrics_table",
    up="CREATE TABLE e2e_metrics (id INT PRIMARY KEY);",
    down="DROP TABLE e2e_metrics;",
    options={"strategy": "parallel", "max_parallelism": 4},
)
REST_MIGRATIONS = [REST_ITEMS, RETRY_INDEX, BROWSER_NOTES, METRICS_TABLE]

# -- the concurrency fleet: 8 PostgreSQL shards, 1 s of DDL each ------------------------------------------
CONC_SHARDS = [f"cpg-{i}" for i in range(8)]
#: The stop-on-first-failure migration fails on this shard after its 1 s sleep: the shard holds a "poison" row
#: (data, not schema, so the validate_before_apply preflight sees identical tables everywhere).
CONC_FAILING = "cpg-1"
CONC_POISON_ROW = "INSERT INTO customers (name) VALUES ('e2e-poison');"
CONC_PARALLEL = MigrationSpec(
    "e2e_conc_parallel",
    up=f"{PG_SLEEP_1S}\nCREATE TABLE e2e_conc_parallel (id int);",
    down="DROP TABLE e2e_conc_parallel;",
    options={"strategy": "parallel", "max_parallelism": 2, "stop_on_first_failure": False},
)
CONC_ROLLING = MigrationSpec(
    "e2e_conc_rolling",
    up=f"{PG_SLEEP_1S}\nCREATE TABLE e2e_conc_rolling (id int);",
    down="DROP TABLE e2e_conc_rolling;",
    options={"strategy": "rolling", "max_parallelism": 3, "stop_on_first_failure": False},
)
CONC_STOP = MigrationSpec(
    "e2e_conc_stop",
    up="DO $$ BEGIN PERFORM pg_sleep(1); IF EXISTS (SELECT 1 FROM customers WHERE name = 'e2e-poison') THEN "
    "RAISE EXCEPTION 'e2e: poisoned shard'; END IF; END $$;\nCREATE TABLE e2e_conc_stop (id int);",
    down="DROP TABLE e2e_conc_stop;",
    options={"strategy": "parallel", "max_parallelism": 2, "stop_on_first_failure": True},
)
CONC_MIGRATIONS = [CONC_PARALLEL, CONC_ROLLING, CONC_STOP]

# -- the drift fleet: two identical PostgreSQL shards, checked every minute ---------------------------------
DRIFT_SHARDS = ["dpg-0", "dpg-1"]
DRIFT_SETTINGS = {"schedule": "* * * * *", "baseline": "dpg-0", "depth": "tables_and_columns", "grace_period": 120}
