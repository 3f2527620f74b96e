"""A separate worker process for the crash and concurrency tests: ``python -m tests.engines.apply_worker``.

It imports everything first, then (optionally) writes ``--ready`` and waits for ``--go`` to exist, so two
workers call ``apply_to_shard`` at the same moment instead of one import time apart. It prints the shard
status as one JSON line. Connections come from the ``AIRFLOW_CONN_*`` env the test process set.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--migration", required=True)
    parser.add_argument("--shard", required=True)
    parser.add_argument("--conn-id", required=True)
    parser.add_argument("--ready")
    parser.add_argument("--go")
    args = parser.parse_args()

    from airflow_provider_shardmigrate.core.scripts import load_migration
    from airflow_provider_shardmigrate.core.topology import Shard
    from airflow_provider_shardmigrate.engines import engine_class
    from airflow_provider_shardmigrate.engines.runner import apply_to_shard

    migration = load_migration(args.migration)
    shard = Shard(args.shard, args.conn_id)
    for conn_type in ("postgres", "mysql"):
        engine_class(conn_type)  # import the engine and its driver now, not inside the timed race
    import airflow.providers.mysql.hooks.mysql
    import airflow.providers.postgres.hooks.postgres  # noqa: F401

    if args.ready:
        Path(args.ready).write_text("ready")
    if args.go:
        go = Path(args.go)
        while not go.exists():
            time.sleep(0.005)
    status = apply_to_shard(shard, migration)
    print(json.dumps(status.to_xcom()), flush=True)


if __name__ == "__main__":
    main()
