"""Rolling back: auto-rollback's workers (each task instance undoes the shards auto-rollback handed it,
usually one, so the Grid shows which shards were reverted and which failed to revert), and the lanes of the
rollback DAG of a large fleet."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_shardmigrate.core.status import Outcome
from airflow_provider_shardmigrate.core.topology import Shard
from airflow_provider_shardmigrate.operators._stop import StopsOnKill
from airflow_provider_shardmigrate.operators.lanes import LaneAction, ShardLaneOperator, observed

if TYPE_CHECKING:
    from airflow.sdk import Context


class ShardRollbackOperator(StopsOnKill, BaseOperator):
    """Roll back the shards of one work item of auto-rollback, one after another.

    :param migration_path: Folder of the migration (re-read and checked against the checksum).
    :param migration_checksum: Checksum of the migration when the DAG was built.
    :param work: ``{"label": str, "shards": [[shard_id, conn_id], ...]}`` (the mapped argument).
    """

    template_fields: Sequence[str] = ()
    ui_color = "#f6d8d0"

    def __init__(self, *, migration_path: str, migration_checksum: str, work: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.migration_path = migration_path
        self.migration_checksum = migration_checksum
        self.work = work
        #: The Grid label (``map_index_template="{{ task.work_label }}"``).
        self.work_label = str(work.get("label", ""))

    def execute(self, context: Context) -> list[dict[str, Any]]:
        from airflow.sdk.exceptions import AirflowFailException

        from airflow_provider_shardmigrate.core.topology import Shard
        from airflow_provider_shardmigrate.engines.runner import RunInfo, rollback_shard
        from airflow_provider_shardmigrate.observability import record_shard
        from airflow_provider_shardmigrate.operators.shard import load_checked_migration

        migration = load_checked_migration(self.migration_path, self.migration_checksum)
        ti = context["ti"]
        run = RunInfo(dag_id=ti.dag_id, run_id=ti.run_id)
        results = []
        for shard_id, conn_id in self.work.get("shards", []):
            status = rollback_shard(Shard(str(shard_id), str(conn_id)), migration, run=run)
            record_shard(status, migration_id=migration.id, strategy="auto_rollback")
            self.log.info("shard %s: %s %s", status.shard_id, status.outcome.value, status.error_message or "")
            results.append(status)
        data = [status.to_xcom() for status in results]
        failed = [status for status in results if status.outcome is Outcome.FAILED]
        if failed:
            ti.xcom_push(key="return_value", value=data)
            raise AirflowFailException(
                "rollback failed: " + "; ".join(f"{s.shard_id} [{s.error_code}] {s.error_message}" for s in failed)
            )
        return data


class RollbackLaneOperator(ShardLaneOperator):
    """A lane of the rollback DAG of a large fleet: each of its shards is rolled back when the ``shards``
    selection picks it (``not_selected`` otherwise), one after another, through the per-shard protocol.

    :param inactive: Ids of the inactive shards among the lane work: ``all`` does not select them.
    """

    def __init__(self, *, inactive: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.inactive = {shard_id.casefold() for shard_id in inactive}

    def shard_action(self, context: Context, dry_run: bool) -> LaneAction:
        from airflow_provider_shardmigrate.core.selection import SELECTION_PARAM, selects
        from airflow_provider_shardmigrate.core.status import ShardStatus
        from airflow_provider_shardmigrate.engines.runner import RunInfo, rollback_shard
        from airflow_provider_shardmigrate.operators.shard import load_checked_migration

        migration = load_checked_migration(self.migration_path, self.migration_checksum)
        ti = context["ti"]
        run = RunInfo(dag_id=ti.dag_id, run_id=ti.run_id)
        selection = context["params"].get(SELECTION_PARAM)

        def undo(shard: Shard) -> ShardStatus:
            if not selects(selection, shard.id, in_all=shard.key not in self.inactive):
                return ShardStatus(
                    shard.id, Outcome.NOT_SELECTED, 0, None, f"not selected in the '{SELECTION_PARAM}' param"
                )
            return observed(
                shard,
                migration_id=migration.id,
                strategy="rollback",
                work=lambda: rollback_shard(shard, migration, dry_run=dry_run, run=run),
            )

        return undo
