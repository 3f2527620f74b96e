"""The preflight gate of a rollout (``validate_before_apply``): refuse to start when the tables the
script touches already differ between the shards it is about to migrate."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

if TYPE_CHECKING:
    from airflow.sdk import Context


class MigrationPreflightOperator(BaseOperator):
    """Compare the touched tables across the shards not yet migrated; fail with
    ``shardmigrate.drift_detected`` (listing tables and shards) when they differ, and with
    ``shardmigrate.schema_comparison_failed`` (naming each shard and its error code) when a shard
    cannot be read.

    :param migration_path: Folder of the migration.
    :param migration_checksum: Checksum of the migration when the DAG was built.
    :param shard_conn_ids: Shard id -> Airflow connection id, in topology order.
    :param timeout: Seconds each shard's introspection may take.
    :param max_workers: Shards read at once.
    """

    template_fields: Sequence[str] = ()
    ui_color = "#e8e0f8"

    def __init__(
        self,
        *,
        migration_path: str,
        migration_checksum: str,
        shard_conn_ids: dict[str, str],
        timeout: float = 60.0,
        max_workers: int = 8,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.migration_path = migration_path
        self.migration_checksum = migration_checksum
        self.shard_conn_ids = shard_conn_ids
        self.timeout = timeout
        self.max_workers = max_workers

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowFailException

        from airflow_provider_shardmigrate.core.errors import ShardMigrateError
        from airflow_provider_shardmigrate.core.topology import Shard
        from airflow_provider_shardmigrate.engines.preflight import check_touched_tables
        from airflow_provider_shardmigrate.operators.shard import load_checked_migration

        try:
            migration = load_checked_migration(self.migration_path, self.migration_checksum)
        except ShardMigrateError as exc:
            context["ti"].xcom_push(
                key="return_value", value={"error_code": exc.code.value, "error_message": exc.message}
            )
            raise AirflowFailException(str(exc)) from None
        shards = [Shard(shard_id, conn_id) for shard_id, conn_id in self.shard_conn_ids.items()]
        result = check_touched_tables(shards, migration, timeout=self.timeout, max_workers=self.max_workers)
        summary: dict[str, Any] = {
            "tables": list(result.tables),
            "conflicts": {table: list(ids) for table, ids in result.conflicts.items()},
            "already_applied": len(result.already_applied),
            "unreadable": dict(list(result.unreadable.items())[:20]),
        }
        error = result.error()
        if error is not None:
            summary.update(error_code=error.code.value, error_message=error.message)
            context["ti"].xcom_push(key="return_value", value=summary)
            raise AirflowFailException(str(error))
        self.log.info(
            "preflight: tables %s are identical on every shard still to migrate (%d already applied)",
            ", ".join(result.tables) or "(none)",
            len(result.already_applied),
        )
        return summary
