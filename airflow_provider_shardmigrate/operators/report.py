"""Auto-rollback, the report (MigrationResult) and the final gate that makes the run state honest."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_shardmigrate.core.errors import ErrorCode
from airflow_provider_shardmigrate.core.status import AT_TARGET, MigrationResult, Outcome, ShardStatus
from airflow_provider_shardmigrate.operators._context import pull_statuses

if TYPE_CHECKING:
    from airflow.sdk import Context

ROLLBACK_TASK_ID = "auto_rollback"
REPORT_TASK_ID = "report"


class AutoRollbackOperator(BaseOperator):
    """Roll back the shards *this run* applied, when the run did not fully succeed and the
    ``auto_rollback`` param is on. Shards applied by earlier runs are left alone.

    :param migration_path: Folder of the migration.
    :param migration_checksum: Checksum of the migration when the DAG was built.
    :param shard_task_ids: Per-shard task ids whose results decide the rollback.
    :param shard_conn_ids: Shard id -> Airflow connection id.
    :param max_parallelism: Shards rolled back at once.
    """

    template_fields: Sequence[str] = ()
    ui_color = "#f6d8d0"

    def __init__(
        self,
        *,
        migration_path: str,
        migration_checksum: str,
        shard_task_ids: Sequence[str],
        shard_conn_ids: dict[str, str],
        max_parallelism: int = 4,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.migration_path = migration_path
        self.migration_checksum = migration_checksum
        self.shard_task_ids = list(shard_task_ids)
        self.shard_conn_ids = shard_conn_ids
        self.max_parallelism = max_parallelism

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

        from airflow_provider_shardmigrate.core.topology import Shard
        from airflow_provider_shardmigrate.engines.runner import RunInfo, rollback_shard
        from airflow_provider_shardmigrate.observability import record_shard
        from airflow_provider_shardmigrate.operators.shard import load_checked_migration

        params = context["params"]
        if not params.get("auto_rollback") or params.get("dry_run"):
            raise AirflowSkipException("auto_rollback is off (or dry run)")
        statuses = pull_statuses(context, self.shard_task_ids)
        by_shard = {status.shard_id.casefold(): status for status in statuses}
        everything_fine = all(
            by_shard.get(shard_id.casefold(), ShardStatus(shard_id, Outcome.PENDING)).outcome in AT_TARGET
            for shard_id in self.shard_conn_ids
        )
        if everything_fine:
            raise AirflowSkipException("every shard reached the target: nothing to roll back")
        to_undo = [s.shard_id for s in statuses if s.outcome is Outcome.SUCCEEDED]
        if not to_undo:
            return {}
        migration = load_checked_migration(self.migration_path, self.migration_checksum)
        ti = context["ti"]
        run = RunInfo(dag_id=ti.dag_id, run_id=ti.run_id)
        self.log.info("rolling back %d shard(s) this run applied: %s", len(to_undo), ", ".join(to_undo))

        def undo(shard_id: str) -> ShardStatus:
            return rollback_shard(Shard(shard_id, self.shard_conn_ids[shard_id]), migration, run=run)

        with ThreadPoolExecutor(max_workers=max(1, min(self.max_parallelism, len(to_undo)))) as pool:
            results = list(pool.map(undo, to_undo))
        for status in results:
            record_shard(status, migration_id=migration.id, strategy="auto_rollback")
        outcome = {status.shard_id: status.to_xcom() for status in results}
        failed = [s for s in results if s.outcome is Outcome.FAILED]
        if failed:
            context["ti"].xcom_push(key="return_value", value=outcome)
            details = "; ".join(f"{s.shard_id}: [{s.error_code}] {s.error_message}" for s in failed)
            raise AirflowFailException(f"auto-rollback failed on {len(failed)} shard(s): {details}")
        return outcome


class MigrationReportOperator(BaseOperator):
    """Aggregate every shard's status (and any auto-rollback) into the MigrationResult XCom.

    :param migration_id: The migration id.
    :param strategy: The rollout strategy (or ``rollback``).
    :param target_shard_ids: Every targeted shard, in plan order.
    :param shard_task_ids: Per-shard task ids.
    :param rollback_task_id: Task id of the auto-rollback task, if the DAG has one.
    :param rollback_mode: True for a rollback DAG: success means no shard failed.
    :param shards_of_task: Task id -> its shards in map-index order, to tell a shard whose task failed
        without a result (a lost worker) from one that never ran.
    """

    template_fields: Sequence[str] = ()
    ui_color = "#e0e0f8"

    def __init__(
        self,
        *,
        migration_id: str,
        strategy: str,
        target_shard_ids: Sequence[str],
        shard_task_ids: Sequence[str],
        rollback_task_id: str | None = None,
        rollback_mode: bool = False,
        shards_of_task: dict[str, list[str]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.shards_of_task = shards_of_task or {}
        self.migration_id = migration_id
        self.strategy = strategy
        self.target_shard_ids = list(target_shard_ids)
        self.shard_task_ids = list(shard_task_ids)
        self.rollback_task_id = rollback_task_id
        self.rollback_mode = rollback_mode

    def _lost_shards(self, context: Context, reported: dict[str, ShardStatus]) -> dict[str, ShardStatus]:
        """Shards whose task ended ``failed`` without pushing a status: the worker died, the task was
        killed or timed out in Airflow. They are failed, not pending -- the shard may be half-way."""
        missing = {
            task_id: shards
            for task_id, shards in self.shards_of_task.items()
            if any(shard.casefold() not in reported for shard in shards)
        }
        if not missing:
            return {}
        ti = context["ti"]
        states = ti.get_task_states(dag_id=ti.dag_id, task_ids=list(missing), run_ids=[ti.run_id]).get(ti.run_id, {})
        lost: dict[str, ShardStatus] = {}
        for task_id, shards in missing.items():
            for index, shard_id in enumerate(shards):
                key = task_id if len(shards) == 1 and task_id in states else f"{task_id}_{index}"
                if shard_id.casefold() not in reported and states.get(key) == "failed":
                    code = ErrorCode.ROLLBACK_FAILED if self.rollback_mode else ErrorCode.MIGRATION_FAILED
                    lost[shard_id.casefold()] = ShardStatus(
                        shard_id,
                        Outcome.FAILED,
                        0,
                        code.value,
                        "the task failed without reporting a result (worker lost or task killed); check its log "
                        "and the shard's history row before retrying",
                    )
        return lost

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_shardmigrate.observability import record_result, span

        statuses = {s.shard_id.casefold(): s for s in pull_statuses(context, self.shard_task_ids)}
        statuses.update(self._lost_shards(context, statuses))
        if self.rollback_task_id:
            undone = context["ti"].xcom_pull(task_ids=self.rollback_task_id, key="return_value") or {}
            for shard_id, data in undone.items():
                rolled = ShardStatus.from_xcom(data)
                applied = statuses.get(shard_id.casefold())
                if rolled.outcome is Outcome.FAILED and applied is not None:
                    # The shard still holds the migration: say so, with the rollback's error.
                    statuses[shard_id.casefold()] = ShardStatus(
                        applied.shard_id, applied.outcome, applied.duration_ms, rolled.error_code, rolled.error_message
                    )
                else:
                    duration = rolled.duration_ms + (applied.duration_ms if applied else 0)
                    statuses[shard_id.casefold()] = ShardStatus(
                        rolled.shard_id, rolled.outcome, duration, rolled.error_code, rolled.error_message
                    )
        if self.rollback_mode:
            # In a rollback, "pending" is a shard's own answer (nothing to undo, not selected); a shard
            # whose task left no result at all did not roll back and must not pass as success.
            for shard_id in self.target_shard_ids:
                if shard_id.casefold() not in statuses:
                    statuses[shard_id.casefold()] = ShardStatus(
                        shard_id,
                        Outcome.FAILED,
                        0,
                        ErrorCode.ROLLBACK_FAILED.value,
                        "the rollback task of this shard finished without a result (see its task log)",
                    )
        dag_run = context.get("dag_run")
        # run_after is when the run was triggered; start_date is reset when tasks are cleared for a retry
        started = getattr(dag_run, "run_after", None) or getattr(dag_run, "start_date", None)
        total_ms = int((datetime.now(UTC) - started).total_seconds() * 1000) if started else 0
        success = frozenset(set(Outcome) - {Outcome.FAILED}) if self.rollback_mode else AT_TARGET
        result = MigrationResult.build(
            migration_id=self.migration_id,
            dag_run_id=context["ti"].run_id,
            strategy=self.strategy,
            targets=self.target_shard_ids,
            statuses=statuses.values(),
            total_duration_ms=total_ms,
            success=success,
        )
        with span(
            "shardmigrate.coordinate",
            id=self.migration_id,
            strategy=self.strategy,
            shard_count=len(result.shards),
            shards_succeeded=result.succeeded_count,
            shards_failed=result.failed_count,
            shards_rolled_back=result.rolled_back_count,
            duration_ms=result.total_duration_ms,
        ):
            record_result(result)
        for shard_id, status in result.shards.items():
            self.log.info(
                "%-24s %-16s %6d ms %s",
                shard_id,
                status.outcome.value,
                status.duration_ms,
                f"[{status.error_code}] {status.error_message}" if status.error_code else (status.error_message or ""),
            )
        self.log.info(
            "migration %s: %d at target, %d failed, %d pending, %d rolled back -> %s",
            self.migration_id,
            result.succeeded_count,
            result.failed_count,
            result.pending_count,
            result.rolled_back_count,
            "all succeeded" if result.all_succeeded else "NOT all succeeded",
        )
        return result.to_xcom()


class MigrationGateOperator(BaseOperator):
    """The DAG's single leaf: fails unless the report says every targeted shard succeeded.

    Airflow derives a run's state from its leaf tasks; without this gate a run whose shards failed but
    whose rollback and report succeeded would show ``success``.

    :param report_task_id: Task id of the report.
    """

    template_fields: Sequence[str] = ()
    ui_color = "#f0f0c0"

    def __init__(self, *, report_task_id: str = REPORT_TASK_ID, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.report_task_id = report_task_id

    def execute(self, context: Context) -> None:
        from airflow.sdk.exceptions import AirflowFailException

        data = context["ti"].xcom_pull(task_ids=self.report_task_id, key="return_value")
        if not data:
            raise AirflowFailException("the report task produced no result; the rollout state is unknown")
        result = MigrationResult.from_xcom(data)
        if not result.all_succeeded:
            bad = [
                f"{sid}={s.outcome.value}" + (f" [{s.error_code}]" if s.error_code else "")
                for sid, s in result.shards.items()
                if s.outcome in (Outcome.FAILED, Outcome.PENDING) or s.error_code
            ]
            raise AirflowFailException(
                f"migration {result.migration_id}: {result.failed_count} failed, {result.pending_count} pending, "
                f"{result.rolled_back_count} rolled back: {', '.join(bad[:20])}{' ...' if len(bad) > 20 else ''}"
            )
        self.log.info("every targeted shard succeeded")
