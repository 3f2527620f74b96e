"""Auto-rollback, the report (MigrationResult) and the final gate that makes the run state honest.

All three only wire: which shards to undo, how results merge and whether the run succeeded are decided by
core/outcomes.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_shardmigrate.core.approval import ApprovalDecision
from airflow_provider_shardmigrate.core.status import MigrationResult, Outcome, Refusal, ShardStatus
from airflow_provider_shardmigrate.operators._context import pull_statuses, task_states

if TYPE_CHECKING:
    from airflow.sdk import Context

#: Report lines logged per shard at most (the XCom has every shard).
LOGGED_SHARDS = 1000


class AutoRollbackOperator(BaseOperator):
    """Roll back the shards *this run* applied, when the run did not fully succeed and the
    ``auto_rollback`` param is on. Shards applied by earlier runs are left alone.

    :param migration_path: Folder of the migration.
    :param migration_checksum: Checksum of the migration when the DAG was built.
    :param shard_task_ids: Per-shard task ids whose results decide the rollback.
    :param shard_conn_ids: Shard id -> Airflow connection id, for every targeted shard.
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

        from airflow_provider_shardmigrate.core.outcomes import first_line, shards_to_roll_back

        params = context["params"]
        if not params.get("auto_rollback") or params.get("dry_run"):
            raise AirflowSkipException("auto_rollback is off (or dry run)")
        statuses = pull_statuses(context, self.shard_task_ids)
        to_undo = shards_to_roll_back(list(self.shard_conn_ids), statuses)
        if not to_undo:
            raise AirflowSkipException("nothing to roll back: every shard reached the migration, or none was applied")
        self.log.info("rolling back %d shard(s) this run applied: %s", len(to_undo), ", ".join(to_undo))
        results = self._undo(context, to_undo)
        outcome = {status.shard_id: status.to_xcom() for status in results}
        failed = [s for s in results if s.outcome is Outcome.FAILED]
        if failed:
            context["ti"].xcom_push(key="return_value", value=outcome)
            details = "; ".join(f"{s.shard_id}: [{s.error_code}] {first_line(s.error_message)}" for s in failed[:20])
            raise AirflowFailException(f"auto-rollback failed on {len(failed)} shard(s): {details}")
        return outcome

    def _undo(self, context: Context, shard_ids: list[str]) -> list[ShardStatus]:
        from airflow_provider_shardmigrate.core.topology import Shard
        from airflow_provider_shardmigrate.engines.runner import RunInfo, rollback_shard
        from airflow_provider_shardmigrate.observability import record_shard
        from airflow_provider_shardmigrate.operators.shard import load_checked_migration

        migration = load_checked_migration(self.migration_path, self.migration_checksum)
        ti = context["ti"]
        run = RunInfo(dag_id=ti.dag_id, run_id=ti.run_id)

        def undo(shard_id: str) -> ShardStatus:
            return rollback_shard(Shard(shard_id, self.shard_conn_ids[shard_id]), migration, run=run)

        with ThreadPoolExecutor(max_workers=max(1, min(self.max_parallelism, len(shard_ids)))) as pool:
            results = list(pool.map(undo, shard_ids))
        for status in results:
            record_shard(status, migration_id=migration.id, strategy="auto_rollback")
        return results


class MigrationReportOperator(BaseOperator):
    """Assemble every shard's status (and any auto-rollback) into the MigrationResult XCom.

    :param migration_id: The migration id.
    :param strategy: The rollout strategy (or ``rollback``).
    :param kind: ``rollout`` or ``rollback`` (which outcomes count as success).
    :param target_shard_ids: Every targeted shard, in plan order.
    :param shards_of_task: Per-shard task id -> its shards in map-index order.
    :param mapped_task_ids: Which of those tasks are mapped.
    :param rollback_task_id: Task id of the auto-rollback task, if the DAG has one.
    :param preflight_task_id: Task id of the preflight, whose failure means the run was refused.
    :param canary_shard_id: The canary of a canary_first rollout (to say why the others did not start).
    :param canary_gate_task_id: Task id of the canary gate, whose failure says why the rest did not start.
    :param approval_task_id: Task id of the canary approval (``canary_approval: true``), whose answer says why
        the rest did not start when it was not an approval.
    """

    template_fields: Sequence[str] = ()
    ui_color = "#e0e0f8"

    def __init__(
        self,
        *,
        migration_id: str,
        strategy: str,
        kind: str = "rollout",
        target_shard_ids: Sequence[str],
        shards_of_task: dict[str, list[str]],
        mapped_task_ids: Sequence[str] = (),
        rollback_task_id: str | None = None,
        preflight_task_id: str | None = None,
        canary_shard_id: str | None = None,
        canary_gate_task_id: str | None = None,
        approval_task_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        from airflow_provider_shardmigrate.core.outcomes import RunKind

        super().__init__(**kwargs)
        self.migration_id = migration_id
        self.strategy = strategy
        self.kind = RunKind(kind)
        self.target_shard_ids = list(target_shard_ids)
        self.shards_of_task = shards_of_task
        self.mapped_task_ids = list(mapped_task_ids)
        self.rollback_task_id = rollback_task_id
        self.preflight_task_id = preflight_task_id
        self.canary_shard_id = canary_shard_id
        self.canary_gate_task_id = canary_gate_task_id
        self.approval_task_id = approval_task_id

    def _lost(self, context: Context, reported: Sequence[ShardStatus]) -> list[str]:
        """Shards whose task ended ``failed`` without pushing a status (worker lost, task killed)."""
        seen = {status.shard_id.casefold() for status in reported}
        missing = {
            task_id: shards
            for task_id, shards in self.shards_of_task.items()
            if any(shard.casefold() not in seen for shard in shards)
        }
        if not missing:
            return []
        mapped = {task_id: task_id in self.mapped_task_ids for task_id in missing}
        states = task_states(context, mapped)
        lost = []
        for task_id, shards in missing.items():
            for index, shard_id in enumerate(shards):
                map_index = index if mapped[task_id] else -1
                if shard_id.casefold() not in seen and states.get((task_id, map_index)) == "failed":
                    lost.append(shard_id)
        return lost

    def _refusal(self, context: Context) -> Refusal | None:
        """Why the preflight refused the run, if it did."""
        from airflow_provider_shardmigrate.core.errors import ErrorCode

        if not self.preflight_task_id:
            return None
        data = context["ti"].xcom_pull(task_ids=self.preflight_task_id, key="return_value")
        if isinstance(data, dict) and data.get("error_code"):
            return Refusal(str(data["error_code"]), str(data.get("error_message") or ""))
        state = task_states(context, {self.preflight_task_id: False}).get((self.preflight_task_id, -1))
        if state in ("failed", "upstream_failed"):
            return Refusal(ErrorCode.MIGRATION_FAILED.value, "the preflight failed without a result (see its log)")
        return None

    def _gate_reason(self, context: Context) -> str | None:
        if not self.canary_gate_task_id:
            return None
        data = context["ti"].xcom_pull(task_ids=self.canary_gate_task_id, key="return_value")
        if isinstance(data, dict) and data.get("error_code"):
            return f"canary gate: [{data['error_code']}] {data.get('error_message') or ''}".strip()
        return None

    def _approval(self, context: Context) -> ApprovalDecision | None:
        if not self.approval_task_id:
            return None
        return ApprovalDecision.from_xcom(context["ti"].xcom_pull(task_ids=self.approval_task_id, key="return_value"))

    def _rollbacks(self, context: Context) -> list[ShardStatus]:
        if not self.rollback_task_id:
            return []
        undone = context["ti"].xcom_pull(task_ids=self.rollback_task_id, key="return_value") or {}
        return [ShardStatus.from_xcom(data) for data in undone.values() if ShardStatus.is_xcom(data)]

    def assemble(self, context: Context) -> MigrationResult:
        from airflow_provider_shardmigrate.core.outcomes import HaltPolicy, assemble_result

        reported = pull_statuses(context, list(self.shards_of_task))
        params = context["params"]
        stop = bool(params.get("stop_on_first_failure")) and not params.get("dry_run")
        return assemble_result(
            kind=self.kind,
            migration_id=self.migration_id,
            dag_run_id=context["ti"].run_id,
            strategy=self.strategy,
            targets=self.target_shard_ids,
            reported=reported,
            lost=self._lost(context, reported),
            rollbacks=self._rollbacks(context),
            refused=self._refusal(context),
            policy=HaltPolicy.from_options(stop_on_first_failure=stop),
            canary=self.canary_shard_id,
            gate=self._gate_reason(context),
            approval=self._approval(context),
            total_duration_ms=_since_trigger_ms(context),
        )

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_shardmigrate.observability import record_result, span

        result = self.assemble(context)
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
        self._log(result)
        return result.to_xcom()

    def _log(self, result: MigrationResult) -> None:
        from airflow_provider_shardmigrate.core.outcomes import summary_line

        verdict = "all succeeded" if result.all_succeeded else "NOT all succeeded"
        self.log.info("migration %s: %s -> %s", self.migration_id, summary_line(result), verdict)
        if result.refused:
            self.log.info("refused: [%s] %s", result.refused.code, result.refused.reason)
        elif result.halted_reason:
            self.log.info("halted: %s", result.halted_reason)
        for shard_id, status in list(result.shards.items())[:LOGGED_SHARDS]:
            detail = f"[{status.error_code}] {status.error_message}" if status.error_code else status.error_message
            self.log.info("%-24s %-16s %6d ms %s", shard_id, status.outcome.value, status.duration_ms, detail or "")
        if len(result.shards) > LOGGED_SHARDS:
            self.log.info("... %d more shard(s) in the report's XCom", len(result.shards) - LOGGED_SHARDS)


def _since_trigger_ms(context: Context) -> int:
    """From the trigger to now; run_after is when the run was triggered (start_date resets on a retry)."""
    dag_run = context.get("dag_run")
    started = getattr(dag_run, "run_after", None) or getattr(dag_run, "start_date", None)
    return int((datetime.now(UTC) - started).total_seconds() * 1000) if started else 0


class MigrationGateOperator(BaseOperator):
    """The DAG's single leaf: fails unless the report says every targeted shard succeeded.

    Airflow derives a run's state from its leaf tasks; without this gate a run whose shards failed but
    whose rollback and report succeeded would show ``success``. Its error names every failed shard with
    its code and the first line of its error, so the reason shows where people look first.

    :param report_task_id: Task id of the report.
    """

    template_fields: Sequence[str] = ()
    ui_color = "#f0f0c0"

    def __init__(self, *, report_task_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.report_task_id = report_task_id

    def execute(self, context: Context) -> None:
        from airflow.sdk.exceptions import AirflowFailException

        from airflow_provider_shardmigrate.core.outcomes import gate_failure

        data = context["ti"].xcom_pull(task_ids=self.report_task_id, key="return_value")
        if not data:
            raise AirflowFailException("the report task produced no result; the rollout state is unknown")
        failure = gate_failure(MigrationResult.from_xcom(data))
        if failure:
            raise AirflowFailException(failure)
        self.log.info("every targeted shard succeeded")
