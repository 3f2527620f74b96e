"""What the UI shows about a migration before anyone triggers it: the display name and the docs pane (the SQL
of each engine variant, shortened when long; the canary checks; the shards of each wave; links), built from
the folder and the topology alone, and stored with the serialized DAG the UI reads."""

from __future__ import annotations

from typing import Any

import yaml

from airflow_provider_shardmigrate.core.scripts import load_migration
from airflow_provider_shardmigrate.core.topology import parse_topology
from airflow_provider_shardmigrate.dags.docs import MAX_LINE, MAX_SCRIPT_LINES, display_name
from airflow_provider_shardmigrate.dags.migration import build_migration_dag
from airflow_provider_shardmigrate.dags.rollback import build_rollback_dag

SHARDS = [f"s{i}" for i in range(7)]


def _topology(inactive: tuple[str, ...] = ()) -> Any:
    lines = ["shards:"]
    for shard_id in SHARDS:
        lines.append(f"  - {{id: {shard_id}, conn_id: {shard_id}{', active: false' if shard_id in inactive else ''}}}")
    return parse_topology(yaml.safe_load("\n".join(lines)), "shards.yaml")


def test_rolling_migration_docs(write_migration):
    long_up = "\n".join(f"ALTER TABLE customers ADD COLUMN c{i} INTEGER;" for i in range(60))
    migration = write_migration(
        "500_docs",
        up=long_up,
        down="DROP INDEX idx_customers_name;",
        options={"strategy": "rolling", "max_parallelism": 3, "description": "Add sixty columns"},
        extra={
            "up.postgres.sql": "CREATE INDEX CONCURRENTLY idx ON customers (name);",
            "down.mysql.sql": "DROP INDEX idx_customers_name ON customers;",
        },
    )
    dag = build_migration_dag(migration, _topology())
    assert dag.dag_display_name == "500_docs · Add sixty columns"
    doc = dag.doc_md
    assert "### Migration `500_docs`" in doc and "Add sixty columns" in doc
    # Every script, each engine variant apart, in its own block.
    for name in ("up.sql", "up.postgres.sql", "down.sql", "down.mysql.sql"):
        assert f"**`{name}`**" in doc
    assert "CREATE INDEX CONCURRENTLY idx ON customers\n    (name);" in doc  # wrapped to fit the docs pane
    assert "DROP INDEX idx_customers_name ON customers;" in doc
    assert all(len(line) <= MAX_LINE for line in _code_lines(doc))
    checksum = load_migration(migration).checksum
    assert checksum not in doc and f"checksum `{checksum[:19]}…`" in doc  # a 71-character token would not wrap
    # The long script is cut, and says so.
    assert f"ADD COLUMN c{MAX_SCRIPT_LINES - 1} INTEGER" in doc and f"ADD COLUMN c{MAX_SCRIPT_LINES} " not in doc
    assert f"-- ... {60 - MAX_SCRIPT_LINES} more line(s) in the migration folder" in doc
    # The shards of every rolling batch.
    assert "* batch 1 (3): `s0`, `s1`, `s2`" in doc
    assert "* batch 2 (3): `s3`, `s4`, `s5`" in doc
    assert "* batch 3 (1): `s6`" in doc
    assert "[rollback DAG](/dags/shardmigrate__500_docs__rollback)" in doc
    assert "[fleet page](/plugin/shardmigrate-fleet)" in doc


def test_canary_docs_show_the_validation_query_and_the_approval(write_migration):
    migration = write_migration(
        "501_canary_docs",
        options={
            "strategy": "canary_first",
            "canary": "s2",
            "canary_validation": "SELECT COUNT(*) = 3 FROM customers",
            "canary_bake_time": 30,
            "canary_approval": True,
            "canary_approval_timeout": 900,
        },
    )
    doc = build_migration_dag(migration, _topology(inactive=("s6",))).doc_md
    assert "**Canary** `s2`" in doc
    assert "```sql\nSELECT COUNT(*) = 3 FROM customers\n```" in doc
    assert "bake time: 30 s" in doc
    assert "no answer within 900 s leaves every other shard `pending`" in doc
    assert "* canary (1): `s2`" in doc
    assert "* rest of the fleet, 4 at a time (5): `s0`, `s1`, `s3`, `s4`, `s5`" in doc


def test_rollback_docs_and_names(write_migration):
    migration = write_migration("502_rb_docs", options={"description": "Index names"})
    dag = build_rollback_dag(migration, _topology(inactive=("s6",)))
    assert dag.dag_display_name == "502_rb_docs · rollback · Index names"
    doc = dag.doc_md
    assert "empty selection rolls back nothing" in doc
    assert "7 shard(s), 1 inactive (rolled back only when picked: `s6`)" in doc
    assert "**`down.sql`**" in doc and "**`up.sql`**" not in doc
    assert "[rollout DAG](/dags/shardmigrate__502_rb_docs)" in doc


def _code_lines(doc: str) -> list[str]:
    lines, inside = [], False
    for line in doc.splitlines():
        if line.startswith("```"):
            inside = not inside
        elif inside:
            lines.append(line)
    return lines


def test_display_name_is_clipped_and_single_line(write_migration):
    folder = write_migration("503_long", options={"description": "word " * 100})
    name = display_name(load_migration(folder))
    assert len(name) == 200 and name.endswith("…") and "\n" not in name


def test_a_backtick_fence_in_sql_does_not_break_the_block(write_migration):
    migration = write_migration("504_ticks", up="CREATE TABLE `t` (x INT); -- ```fence```")
    doc = build_migration_dag(migration, _topology()).doc_md
    assert "````sql\nCREATE TABLE `t` (x INT); -- ```fence```\n````" in doc
