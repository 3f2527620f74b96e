"""The scheduled drift check (shardmigrate_drift): every active shard's schema against the baseline, on the
schedule and with the depth, critical tables and grace period of shards.yaml's `drift:` section."""

from airflow_provider_shardmigrate import build_drift_dag

dag = build_drift_dag(topology="shards.yaml")
