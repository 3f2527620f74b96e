"""The fleets and migrations the e2e session deploys (one dags folder, one deployment, every test)."""

from __future__ import annotations

from tests.e2e.project import PG_SLEEP_1S, MigrationSpec

#: The e2e migrations of one project are unrelated and run in any order: each says so (docs/contracts.md, order).
INDEPENDENT: dict[str, list[str]] = {"depends_on": []}

# -- the mixed fleet: REST API, retry, browser ------------------------------------------------------------
REST_PG = [f"rpg-{i}" for i in range(4)]
REST_MY = [f"rmy-{i}" for i in range(3)]
REST_SHARDS = REST_PG + REST_MY  # topology order = rollout order

REST_ITEMS = MigrationSpec(
    "e2e_rest_items",
    up="CREATE TABLE e2e_items (id INT PRIMARY KEY, label VARCHAR(40) NOT NULL);",
    down="DROP TABLE e2e_items;",
    options={"description": "REST e2e: create e2e_items", "strategy": "parallel", "max_parallelism": 4, **INDEPENDENT},
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
        **INDEPENDENT,
    },
)
BROWSER_NOTES = MigrationSpec(
    "e2e_browser_notes",
    up="CREATE TABLE e2e_browser_notes (id INT PRIMARY KEY, note VARCHAR(200));",
    down="DROP TABLE e2e_browser_notes;",
    # Both off by default, so the browser test has to switch them on in the form.
    options={
        "strategy": "parallel",
        "max_parallelism": 4,
        "stop_on_first_failure": False,
        "auto_rollback": False,
        **INDEPENDENT,
    },
)
#: Applied once by the metrics test: every shard succeeds, so each emits shards_migrated.
METRICS_TABLE = MigrationSpec(
    "e2e_metrics_table",
    up="CREATE TABLE e2e_metrics (id INT PRIMARY KEY);",
    down="DROP TABLE e2e_metrics;",
    options={"strategy": "parallel", "max_parallelism": 4, **INDEPENDENT},
)
#: Spans test (tests/e2e/test_spans.py): one rollout on the mixed fleet with tracing on.
SPANS_TABLE = MigrationSpec(
    "e2e_spans_table",
    up="CREATE TABLE e2e_spans (id INT PRIMARY KEY);",
    down="DROP TABLE e2e_spans;",
    options={"strategy": "parallel", "max_parallelism": 4, **INDEPENDENT},
)
REST_MIGRATIONS = [REST_ITEMS, RETRY_INDEX, BROWSER_NOTES, METRICS_TABLE, SPANS_TABLE]

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
    options={"strategy": "parallel", "max_parallelism": 2, "stop_on_first_failure": False, **INDEPENDENT},
)
CONC_ROLLING = MigrationSpec(
    "e2e_conc_rolling",
    up=f"{PG_SLEEP_1S}\nCREATE TABLE e2e_conc_rolling (id int);",
    down="DROP TABLE e2e_conc_rolling;",
    options={"strategy": "rolling", "max_parallelism": 3, "stop_on_first_failure": False, **INDEPENDENT},
)
CONC_STOP = MigrationSpec(
    "e2e_conc_stop",
    up="DO $$ BEGIN PERFORM pg_sleep(1); IF EXISTS (SELECT 1 FROM customers WHERE name = 'e2e-poison') THEN "
    "RAISE EXCEPTION 'e2e: poisoned shard'; END IF; END $$;\nCREATE TABLE e2e_conc_stop (id int);",
    down="DROP TABLE e2e_conc_stop;",
    options={"strategy": "parallel", "max_parallelism": 2, "stop_on_first_failure": True, **INDEPENDENT},
)
#: Progress test (tests/e2e/test_plugin.py): adding a column waits for the row lock the test holds on every
#: shard (``SELECT ... FOR UPDATE``), so exactly max_parallelism = 2 shards are running -- blocked -- and the
#: other six waiting, for as long as the test holds the locks.
PLUGIN_PROGRESS = MigrationSpec(
    "e2e_plugin_progress",
    up="ALTER TABLE customers ADD COLUMN e2e_progress_note TEXT;",
    down="ALTER TABLE customers DROP COLUMN e2e_progress_note;",
    options={"strategy": "parallel", "max_parallelism": 2, "stop_on_first_failure": False, **INDEPENDENT},
)
CONC_MIGRATIONS = [CONC_PARALLEL, CONC_ROLLING, CONC_STOP, PLUGIN_PROGRESS]

# -- the drift fleet: two identical PostgreSQL shards, checked every minute ---------------------------------
DRIFT_SHARDS = ["dpg-0", "dpg-1"]
DRIFT_SETTINGS = {"schedule": "* * * * *", "baseline": "dpg-0", "depth": "tables_and_columns", "grace_period": 120}


# -- the fault matrix (tests/e2e/test_faults.py) -----------------------------------------------------------
def fault_migration(name: str, **options: object) -> MigrationSpec:
    """Four statements that leave countable traces on PostgreSQL and MariaDB alike: a table that cannot be
    created twice, a log row before and after, and between them an ALTER of ``customers`` that waits for
    any lock the test holds on that table (``SELECT ... FOR UPDATE`` in an open transaction) -- so "the
    shard's DDL is running" is a state the test controls. Run twice, statement 1 or 3 would fail."""
    return MigrationSpec(
        f"e2e_fault_{name}",
        up=f"""
CREATE TABLE e2e_{name}_log (step VARCHAR(20) NOT NULL);
INSERT INTO e2e_{name}_log (step) VALUES ('before');
ALTER TABLE customers ADD COLUMN e2e_{name}_flag INT;
INSERT INTO e2e_{name}_log (step) VALUES ('after');
""",
        down=f"DROP TABLE e2e_{name}_log;\nALTER TABLE customers DROP COLUMN e2e_{name}_flag;",
        options={
            "strategy": "parallel",
            "max_parallelism": 2,
            "stop_on_first_failure": False,
            "auto_rollback": False,
            **INDEPENDENT,
            **options,
        },
    )


#: One PostgreSQL and one MariaDB shard on the machine's servers: worker SIGKILL, two triggers at once.
FAULT_PAIR = ["fp-pg", "fp-my"]
#: per_shard_timeout bounds how long the statement of a killed worker can keep waiting inside the database (the
#: engine sets it as the server-side lock wait bound), so the wait for the orphaned session has a known end.
FAULT_KILL = fault_migration("kill", per_shard_timeout=20)
FAULT_TWICE = fault_migration("twice")
#: Two of each engine, two at a time: the scheduler / Redis restarts happen while two shards are running and
#: two are still waiting.
FAULT_FLEET = ["ff-pg-0", "ff-my-0", "ff-pg-1", "ff-my-1"]
FAULT_SCHEDULER = fault_migration("scheduler")
FAULT_BROKER = fault_migration("broker")
FAULT_BROKER_DOWN = fault_migration("brokerdown")
#: Shards on servers the test starts (and restarts) itself; their connections are created through the REST
#: API once the servers are up.
FAULT_PRIVATE = ["fr-pg", "fr-my"]
FAULT_SERVER = fault_migration("server")


# -- lanes (tests/e2e/test_lanes.py): 12 PostgreSQL shards, lanes forced (execution: lanes) ---------------
LANES_SHARDS = [f"lpg-{i}" for i in range(12)]
#: Six lanes of two shards each (lane i: lpg-i, lpg-(i+6)): more lanes than one worker has slots (4), so
#: while the test holds every shard's DDL, the lanes run on both workers.
LANES_WIDE = 6
#: The row a test inserts into one shard (inside the transaction whose row lock holds that shard's DDL) to make
#: the stop migration fail there, at the moment the test chooses.
LANES_POISON = "e2e-lanes-poison"


def lanes_migration(name: str, up: str, max_parallelism: int, **options: object) -> MigrationSpec:
    """A lanes-mode migration over LANES_SHARDS whose first statement adds a column to ``customers``: it waits
    for the row lock the test holds on that table (``SELECT ... FOR UPDATE``), so when a shard ends is the
    test's choice. The preflight's drift gate is off: the stop test leaves the fleet differing on purpose
    (its pending shards never got the column), and the lanes tests must not depend on their order."""
    return MigrationSpec(
        f"e2e_lanes_{name}",
        up=up,
        down=f"ALTER TABLE customers DROP COLUMN e2e_lanes_{name};",
        options={
            "strategy": "parallel",
            "execution": "lanes",
            "max_parallelism": max_parallelism,
            "stop_on_first_failure": False,
            "validate_before_apply": False,
            **INDEPENDENT,
            **options,
        },
    )


LANES_SPREAD = lanes_migration("spread", "ALTER TABLE customers ADD COLUMN e2e_lanes_spread INT;", LANES_WIDE)
LANES_STOP = lanes_migration(
    "stop",
    "ALTER TABLE customers ADD COLUMN e2e_lanes_stop INT;\n"
    f"DO $$ BEGIN IF EXISTS (SELECT 1 FROM customers WHERE name = '{LANES_POISON}') THEN "
    "RAISE EXCEPTION 'e2e: poisoned shard'; END IF; END $$;",
    LANES_WIDE,
    stop_on_first_failure=True,
)
#: Two lanes of six shards (lane 0: lpg-0, lpg-2, ...; lane 1: lpg-1, lpg-3, ...).
LANES_PROGRESS = lanes_migration("progress", "ALTER TABLE customers ADD COLUMN e2e_lanes_progress INT;", 2)
LANES_MIGRATIONS = [LANES_SPREAD, LANES_STOP, LANES_PROGRESS]
