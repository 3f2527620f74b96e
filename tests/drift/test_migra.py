"""Cross-check with an independent tool: migra diffs pairs of real PostgreSQL shard databases with deliberate
drifts, and every object it reports must be in our report -- and every object in our report must be in
migra's -- for the objects both model (tables, columns, indexes, constraints)."""

from __future__ import annotations

import pytest

from airflow_provider_shardmigrate.core.topology import DriftDepth
from airflow_provider_shardmigrate.engines.introspect import detect_drift
from tests.drift.conftest import write_topology
from tests.drift.migra import index_tables, migra_executable, migra_objects, our_objects, pg_url, run_migra
from tests.drift.test_engines import PG_SPELLING_A, PG_SPELLING_B

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

BASE_MIXED = """
CREATE TABLE customers (id integer PRIMARY KEY, email varchar(100) NOT NULL, name varchar(50),
    status varchar(20) DEFAULT 'new', legacy int);
CREATE INDEX ix_customers_email ON customers (email);
CREATE TABLE orders (id integer PRIMARY KEY, customer_id integer NOT NULL, total numeric(10,2) NOT NULL,
    created_at timestamp,
    CONSTRAINT fk_orders_customer FOREIGN KEY (customer_id) REFERENCES customers (id),
    CONSTRAINT ck_orders_total CHECK (total >= 0));
CREATE INDEX ix_orders_customer ON orders (customer_id);
CREATE INDEX ix_orders_created ON orders (created_at);
CREATE TABLE audit (id integer PRIMARY KEY, msg text);
"""
DRIFTED_MIXED = """
CREATE TABLE customers (id integer PRIMARY KEY, email varchar(100) NOT NULL, name varchar(80) NOT NULL,
    status varchar(20) DEFAULT 'active', extra int, CONSTRAINT uq_email UNIQUE (email));
CREATE UNIQUE INDEX ix_customers_email ON customers (email);
CREATE TABLE orders (id integer PRIMARY KEY, customer_id integer NOT NULL, total numeric(10,2) NOT NULL,
    created_at timestamp);
CREATE INDEX ix_orders_customer ON orders (customer_id);
CREATE TABLE promo (id serial PRIMARY KEY, code varchar(10));
"""
BASE_RULES = """
CREATE TABLE parents (id integer PRIMARY KEY, code text NOT NULL);
CREATE TABLE items (id integer PRIMARY KEY, parent_id integer, a int, b int, qty int, state text,
    CONSTRAINT fk_items_parent FOREIGN KEY (parent_id) REFERENCES parents (id) ON DELETE CASCADE,
    CONSTRAINT ck_items_qty CHECK (qty >= 0));
CREATE INDEX ix_items_ab ON items (a, b);
CREATE INDEX ix_items_open ON items (state) WHERE state = 'open';
CREATE INDEX ix_items_qty ON items (qty DESC);
CREATE UNIQUE INDEX ix_parents_code ON parents (lower(code));
"""
DRIFTED_RULES = """
CREATE TABLE parents (id integer PRIMARY KEY, code text NOT NULL);
CREATE TABLE items (id integer PRIMARY KEY, parent_id integer, a int, b int, qty bigint, state text DEFAULT 'open',
    CONSTRAINT fk_items_parent FOREIGN KEY (parent_id) REFERENCES parents (id),
    CONSTRAINT ck_items_qty CHECK (qty > 0));
CREATE INDEX ix_items_ab ON items (b, a);
CREATE INDEX ix_items_open ON items (state) WHERE state = 'closed';
CREATE INDEX ix_items_qty ON items (qty);
CREATE UNIQUE INDEX ix_parents_code ON parents (upper(code));
"""
BASE_SCHEMAS = """
CREATE SCHEMA archive;
CREATE TABLE archive.old_orders (id integer PRIMARY KEY, total numeric(12,2));
CREATE TABLE things (id integer PRIMARY KEY, label varchar(30));
"""
DRIFTED_SCHEMAS = """
CREATE SCHEMA archive;
CREATE SCHEMA billing;
CREATE TABLE billing.invoices (id integer PRIMARY KEY, amount numeric(12,2) NOT NULL);
CREATE TABLE things (id integer PRIMARY KEY, label varchar(30), CONSTRAINT uq_things_label UNIQUE (label));
"""

PAIRS = {
    "mixed": (BASE_MIXED, DRIFTED_MIXED),
    "rules": (BASE_RULES, DRIFTED_RULES),
    "schemas": (BASE_SCHEMAS, DRIFTED_SCHEMAS),
    # now() and CURRENT_TIMESTAMP are the same function; we fold them, migra compares the deparsed text.
    # That one difference is by design, so the pair spells that default alike.
    "spelling": (
        PG_SPELLING_A,
        "CREATE SEQUENCE events_id_seq;\n" + PG_SPELLING_B.replace("CURRENT_TIMESTAMP", "now()"),
    ),
}


@pytest.fixture(scope="module")
def migra() -> str:
    return migra_executable()


@pytest.mark.parametrize("pair", list(PAIRS))
def test_migra_and_our_report_agree(pair, migra, fleet_factory, tmp_path):
    fleet = fleet_factory("postgres")
    base_sql, shard_sql = PAIRS[pair]
    base, shard = f"pg-migra-{pair}-base", f"pg-migra-{pair}-shard"
    fleet.add(base, base_sql)
    fleet.add(shard, shard_sql)
    report = detect_drift(write_topology(tmp_path / "t.yaml", [base, shard]), depth=DriftDepth.FULL)
    assert not report.errors

    sql = run_migra(migra, pg_url(fleet.databases[base]), pg_url(fleet.databases[shard]))
    indexes = index_tables(lambda db, q: fleet.query(db, q), [base, shard])
    theirs = migra_objects(sql, indexes)
    ours = our_objects(report.diffs.get(shard, ()))

    assert theirs - ours == set(), f"migra found what we did not:\n{sql}"
    assert ours - theirs == set(), f"we found what migra did not:\n{sql}"
    if pair == "spelling":
        assert ours == set()
    else:
        assert len(ours) >= 3  # the pair really drifts
