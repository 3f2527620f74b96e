"""Auto-rollback, the report (MigrationResult) and the final gate that makes the run state honest.

All three only wire: which shards to undo, how results merge and whether the run succeeded are decided by
core/outcomes.py.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_shardmigrate.core.approval import ApprovalDecision
from airflow_provider_shardmigrate.core.status import MigrationResult, Outcome, Refusal, ShardStatus
from airflow_provider_shardmigrate.operators._context import pull_statuses, statuses_in, task_states

if TYPE_CHECKING:
    from airflow.sdk import Context

#: Report lines logged per shard at most (the XCom has every shard).
LOGGED_SHARDS = 1000


class AutoRollbackOperator(BaseOperator):
    """Decide which shards auto-rollback undoes -- the shards *this run* applied, when the run did not fully
    succeed and the ``auto_rollback`` param is on -- and hand them to the mapped rollback task, so each
    shard's rollback shows as its own task instance labelled with the shard (or, in lanes mode, with the
    shards of its lane). Shards applied by earlier runs are left alone.

    Returns the work items of the mapped rollback task: ``[{"label": ..., "shards": [[id, conn_id], ...]}]``.

    :param shard_task_ids: Task ids whose per-shard results decide the rollback.
    :param shard_conn_ids: Shard id -> Airflow connection id, for every targeted shard, in rollout order.
    :param lanes: 0 for one rollback task instance per shard; else the number of rollback lanes.
    :param max_items: At most this many task instances (``[core] max_map_length``): shards are grouped beyond.
    """

    template_fields: Sequence[str] = ()
    ui_color = "#f6d8d0"

    def __init__(
        self,
        *,
        shard_task_ids: Sequence[str],
        shard_conn_ids: Mapping[str, str],
        lanes: int = 0,
        max_items: int = 1024,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.shard_task_ids = list(shard_task_ids)
        self.shard_conn_ids = shard_conn_ids
        self.lanes = lanes
        self.max_items = max(1, max_items)

    def execute(self, context: Context) -> list[dict[str, Any]]:
        from airflow.sdk.exceptions import AirflowSkipException

        from airflow_provider_shardmigrate.core.outcomes import shards_to_roll_back

        params = context["params"]
        if not params.get("auto_rollback") or params.get("dry_run"):
            raise AirflowSkipException("auto_rollback is off (or dry run)")
        statuses = pull_statuses(context, self.shard_task_ids)
        to_undo = shards_to_roll_back(list(self.shard_conn_ids), statuses)
        if not to_undo:
            raise AirflowSkipException("nothing to roll back: every shard reached the migration, or none was applied")
        self.log.info("rolling back %d shard(s) this run applied: %s", len(to_undo), ", ".join(to_undo[:100]))
        return rollback_items(to_undo, self.shard_conn_ids, lanes=self.lanes, max_items=self.max_items)


def rollback_items(
    shard_ids: Sequence[str], conn_ids: Mapping[str, str], *, lanes: int, max_items: int
) -> list[dict[str, Any]]:
    """The mapped rollback task's inputs: one shard each, unless lanes (or more shards than ``max_items``)."""
    from airflow_provider_shardmigrate.core.plans import deal
    from airflow_provider_shardmigrate.core.topology import Shard

    shards = [Shard(shard_id, conn_ids[shard_id]) for shard_id in shard_ids]
    groups = deal(shards, lanes) if lanes else [(shard,) for shard in shards]
    if len(groups) > max_items:
        groups = deal(shards, max_items)
    items = []
    for group in groups:
        label = group[0].id if len(group) == 1 else f"{group[0].id} ... {group[-1].id} ({len(group)} shards)"
        items.append({"label": label, "shards": [[shard.id, shard.conn_id] for shard in group]})
    return items


class MigrationReportOperator(BaseOperator):
    """Assemble every shard's status (and any auto-rollback) into the MigrationResult XCom.

    :param migration_id: The migration id.
    :param strategy: The rollout strategy (or ``rollback``).
    :param kind: ``rollout`` or ``rollback`` (which outcomes count as success).
    :param target_shard_ids: Every targeted shard, in plan order.
    :param shards_of_task: Per-shard task id -> its shards in map-index order.
    :param mapped_task_ids: Which of those tasks are mapped.
    :param lanes_task_id: Task id of the lanes task (lanes execution), whose lanes return lists of statuses.
    :param rollback_task_id: Task id of the mapped rollback task of auto-rollback, if the DAG has one.
    :param rollback_decider_id: Task id of auto-rollback's decision (the shards handed to the rollback task).
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
        lanes_task_id: str | None = None,
        rollback_task_id: str | None = None,
        rollback_decider_id: str | None = None,
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
        self.lanes_task_id = lanes_task_id
        self.rollback_task_id = rollback_task_id
        self.rollback_decider_id = rollback_decider_id
        self.preflight_task_id = preflight_task_id
        self.canary_shard_id = canary_shard_id
        self.canary_gate_task_id = canary_gate_task_id
        self.approval_task_id = approval_task_id

    def _result_tasks(self) -> list[str]:
        return [*self.shards_of_task, *([self.lanes_task_id] if self.lanes_task_id else [])]

    def _recover_lanes(self, context: Context, reported: Sequence[ShardStatus]) -> tuple[list[ShardStatus], list[str]]:
        """For a lane that ended without its result (killed): the shard statuses it pushed as it went, and the
        shard it was on when it died (lost: it may be half-way); its other shards stay unreported (pending)."""
        from airflow_provider_shardmigrate.operators.lanes import lane_assignments

        if not self.lanes_task_id:
            return [], []
        ti = context["ti"]
        seen = {status.shard_id.casefold() for status in reported}
        states = task_states(context, {self.lanes_task_id: True})
        recovered: list[ShardStatus] = []
        lost: list[str] = []
        for lane, shards in enumerate(lane_assignments(ti.dag_id, self.lanes_task_id)):
            if states.get((self.lanes_task_id, lane)) != "failed" or any(s.id.casefold() in seen for s in shards):
                continue  # the lane reported, had nothing to do, or never ran (its shards stay pending)
            pushed = {status.shard_id: status for status in self._pushed_by(ti, lane)}
            for shard in shards:
                if shard.id not in pushed:
                    lost.append(shard.id)  # the shard it was on when it died
                    break
                recovered.append(pushed[shard.id])
        return recovered, lost

    def _pushed_by(self, ti: Any, lane: int) -> list[ShardStatus]:
        """The statuses lane ``lane`` pushed as it went (``statuses:0``, ``statuses:1``, ... until one is missing)."""
        from airflow_provider_shardmigrate.operators._context import lane_statuses_key

        found: list[ShardStatus] = []
        for sequence in itertools.count():
            value = ti.xcom_pull(task_ids=self.lanes_task_id, map_indexes=lane, key=lane_statuses_key(sequence))
            if not isinstance(value, list):
                return found
            found += statuses_in([value])
        return found

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
        """What auto-rollback did: the rollback task instances' statuses, and a failure for every shard handed
        to a rollback task that ended without saying (its shard may be half rolled back)."""
        from airflow_provider_shardmigrate.core.errors import ErrorCode

        if not self.rollback_task_id:
            return []
        ti = context["ti"]
        done = pull_statuses(context, [self.rollback_task_id])
        handed = ti.xcom_pull(task_ids=self.rollback_decider_id, key="return_value") if self.rollback_decider_id else []
        answered = {status.shard_id.casefold() for status in done}
        missing = [
            ShardStatus(
                str(shard_id),
                Outcome.FAILED,
                0,
                ErrorCode.ROLLBACK_FAILED.value,
                "its rollback task ended without a result (worker lost or task killed); check the shard's history",
            )
            for item in handed or []
            for shard_id, _conn in item.get("shards", [])
            if str(shard_id).casefold() not in answered
        ]
        return [*done, *missing]

    def assemble(self, context: Context) -> MigrationResult:
        from airflow_provider_shardmigrate.core.outcomes import HaltPolicy, assemble_result

        reported = pull_statuses(context, self._result_tasks())
        recovered, lost_in_lanes = self._recover_lanes(context, reported)
        reported = [*reported, *recovered]
        params = context["params"]
        dry_run = bool(params.get("dry_run"))
        policy = HaltPolicy.from_limits(
            stop_on_first_failure=bool(params.get("stop_on_first_failure")) and not dry_run,
            max_failed_shards=None if dry_run else params.get("max_failed_shards"),
            max_failure_ratio=None if dry_run else params.get("max_failure_ratio"),
            targets=len(self.target_shard_ids),
        )
        return assemble_result(
            kind=self.kind,
            migration_id=self.migration_id,
            dag_run_id=context["ti"].run_id,
            strategy=self.strategy,
            targets=self.target_shard_ids,
            reported=reported,
            lost=[*self._lost(context, reported), *lost_in_lanes],
            rollbacks=self._rollbacks(context),
            refused=self._refusal(context),
            policy=policy,
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
