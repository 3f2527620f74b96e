"""One task instance per shard: apply (or roll back) a migration on that shard.

The task's state tells the truth in the Grid -- failed when the shard failed, skipped when the shard was
left pending by a stop -- and its ``return_value`` XCom carries the ShardStatus either way, so the
report can account for every shard.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import BaseOperator

from airflow_provider_shardmigrate.core.errors import InvalidScriptError
from airflow_provider_shardmigrate.core.scripts import Migration, load_migration
from airflow_provider_shardmigrate.core.status import Outcome, ShardStatus
from airflow_provider_shardmigrate.core.topology import Shard

if TYPE_CHECKING:
    from airflow.sdk import Context

SHARDS_GROUP = "shards"


def load_checked_migration(path: str, checksum: str) -> Migration:
    """The migration as it is on disk now, refused if it changed since the DAG was parsed."""
    migration = load_migration(path)
    if migration.checksum != checksum:
        raise InvalidScriptError(
            f"migration '{migration.id}' changed since this DAG was parsed (DAG has {checksum}, the files hash to "
            f"{migration.checksum}); wait for the DAG to be re-parsed and trigger again"
        )
    return migration


class ShardMigrationOperator(BaseOperator):
    """Apply or roll back one migration on one shard, following the per-shard protocol (DESIGN 2.5).

    :param migration_path: Folder of the migration (re-read at run time and checked against the checksum).
    :param migration_checksum: Checksum of the migration when the DAG was built.
    :param shard_id: Shard id from the topology.
    :param conn_id: Airflow connection of the shard.
    :param action: ``apply`` or ``rollback``.
    :param strategy: Strategy of the rollout (for metrics and spans).
    :param stop_watch: Task ids whose failed instances stop this shard when ``stop_on_first_failure`` is
        set (a parallel wave watches itself).
    :param stop_after: Task ids of the previous wave (chain link or rolling batch): a shard there that
        failed or was stopped stops this one.
    :param requires: Gate task ids (the preflight) that must not have failed, whatever the trigger rule:
        chained shards run ``all_done`` and would otherwise start after a refused preflight.
    """

    template_fields: Sequence[str] = ()
    ui_color = "#d8f0e0"
    ACTIONS: ClassVar[tuple[str, ...]] = ("apply", "rollback")

    def __init__(
        self,
        *,
        migration_path: str,
        migration_checksum: str,
        shard_id: str,
        conn_id: str,
        action: str = "apply",
        strategy: str = "",
        stop_watch: Sequence[str] = (),
        stop_after: Sequence[str] = (),
        requires: Sequence[str] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.migration_path = migration_path
        self.migration_checksum = migration_checksum
        self.shard_id = shard_id
        self.conn_id = conn_id
        self.action = action
        self.strategy = strategy
        self.stop_watch = list(stop_watch)
        self.stop_after = list(stop_after)
        self.requires = list(requires)

    def _skip(self, context: Context, reason: str) -> None:
        from airflow.sdk.exceptions import AirflowSkipException

        context["ti"].xcom_push(
            key="return_value", value=ShardStatus(self.shard_id, Outcome.PENDING, 0, None, reason).to_xcom()
        )
        raise AirflowSkipException(f"shard '{self.shard_id}': {reason}")

    def _gate_refused(self, context: Context) -> bool:
        if not self.requires:
            return False
        ti = context["ti"]
        refused = ti.get_ti_count(
            dag_id=ti.dag_id, task_ids=self.requires, run_ids=[ti.run_id], states=["failed", "upstream_failed"]
        )
        return bool(refused)

    def _stopped_by_failure(self, context: Context) -> bool:
        """Whether a failure this shard must stop for is already known (task ids given at build time,
        so the check is one count and one XCom read, whatever the fleet size)."""
        ti = context["ti"]
        watched = sorted(set(self.stop_watch) | set(self.stop_after))
        if not watched:
            return False
        failed = ti.get_ti_count(
            dag_id=ti.dag_id, task_ids=watched, run_ids=[ti.run_id], states=["failed", "up_for_retry"]
        )
        if failed:
            return True
        if self.stop_after:
            previous = ti.xcom_pull(task_ids=self.stop_after, key="return_value") or []
            stopped = {Outcome.FAILED.value, Outcome.PENDING.value}
            return any(isinstance(v, dict) and v.get("outcome") in stopped for v in previous)
        return False

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowFailException

        from airflow_provider_shardmigrate.engines.runner import RunInfo, apply_to_shard, failure_status, rollback_shard
        from airflow_provider_shardmigrate.observability import record_shard, span

        params = context["params"]
        dry_run = bool(params.get("dry_run", False))
        if self._gate_refused(context):
            self._skip(context, f"not started: {', '.join(self.requires)} refused the rollout (see its log)")
        # A dry run ignores stop_on_first_failure: its point is that every shard says what it would do.
        stop = self.action == "apply" and not dry_run and params.get("stop_on_first_failure")
        if stop and self._stopped_by_failure(context):
            self._skip(context, "not started: another shard failed and stop_on_first_failure is set")
        if self.action == "rollback":
            selected = {s.casefold() for s in params.get("shards") or []}
            if selected and self.shard_id.casefold() not in selected:
                self._skip(context, "not selected in the 'shards' param")

        ti = context["ti"]
        shard = Shard(self.shard_id, self.conn_id)
        with span("shardmigrate.shard", **{"shard.id": self.shard_id, "strategy": self.strategy}) as current:
            try:
                migration = load_checked_migration(self.migration_path, self.migration_checksum)
            except Exception as exc:  # a changed or vanished folder fails this shard with its code
                status = failure_status(shard, time.monotonic(), exc, InvalidScriptError.code)
                migration_id = self.migration_path.rstrip("/").rsplit("/", 1)[-1]
            else:
                migration_id = migration.id
                current.set_attribute("migration.id", migration.id)
                run = RunInfo(dag_id=ti.dag_id, run_id=ti.run_id)
                action = apply_to_shard if self.action == "apply" else rollback_shard
                status = action(shard, migration, dry_run=dry_run, run=run)
            current.set_attribute("migration.shard.outcome", status.outcome.value)
            if status.error_code:
                current.set_attribute("migration.error", status.error_code)
        record_shard(status, migration_id=migration_id, strategy=self.strategy)
        if status.error_message:
            self.log.info("shard %s: %s (%s)", self.shard_id, status.outcome.value, status.error_message)
        if status.outcome is Outcome.FAILED:
            ti.xcom_push(key="return_value", value=status.to_xcom())
            raise AirflowFailException(f"[{status.error_code}] shard '{self.shard_id}': {status.error_message}")
        return status.to_xcom()
