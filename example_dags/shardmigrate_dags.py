"""Every folder under migrations/ becomes a rollout DAG (shardmigrate__<id>) and a rollback DAG
(shardmigrate__<id>__rollback) over the shards listed in shards.yaml; the folder gets shardmigrate_catchup
(every pending migration, in id order), shardmigrate_status (the shard x migration matrix, hourly) and
shardmigrate_baseline (onboarding a shard from a snapshot)."""

from airflow_provider_shardmigrate import load_migration_dags

globals().update(load_migration_dags("migrations", topology="shards.yaml"))
