"""The canary approval (``canary_approval: true``): a human looks at the canary and answers Approve or Reject
before the rest of the fleet starts -- Airflow's human-in-the-loop ``ApprovalOperator`` from the standard
provider, answered in the UI's *Required actions* or through ``PATCH .../hitlDetails`` of the REST API.

Reject, or no answer within the timeout (the default answer is Reject), skips the rest of the fleet: every
other shard stays ``pending``. The decision -- approved or not, by whom, the comment, whether it timed out --
is this task's ``return_value`` (core/approval.py), from which the report says why the run halted.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.standard.operators.hitl import ApprovalOperator

from airflow_provider_shardmigrate.core.approval import ApprovalDecision

if TYPE_CHECKING:
    from airflow.sdk import Context

#: The HITL form field for the approver's comment (``params_input`` of the answer).
COMMENT_PARAM = "comment"


class CanaryApprovalOperator(ApprovalOperator):
    """Ask a human to approve the canary; the prompt shows its result and the validation outcome.

    :param migration_id: The migration, for the prompt.
    :param canary_task_id: Task id of the canary's apply task (its status is shown).
    :param canary_gate_task_id: Task id of the canary gate (its validation result is shown).
    :param canary_shard_id: The canary shard.
    :param waiting_shards: How many shards start once the canary is approved.
    :param approval_timeout: Seconds to wait for an answer; then the answer is Reject.
    """

    ui_color = "#ffe0b0"

    def __init__(
        self,
        *,
        migration_id: str,
        canary_task_id: str,
        canary_gate_task_id: str,
        canary_shard_id: str,
        waiting_shards: int,
        approval_timeout: float,
        **kwargs: Any,
    ) -> None:
        from airflow.sdk import Param

        super().__init__(
            subject=f"Approve canary {canary_shard_id} of {migration_id}?",
            body=None,
            defaults=[self.REJECT],
            params={
                COMMENT_PARAM: Param(
                    None,
                    type=["null", "string"],
                    title="Comment",
                    description="Optional: why you approve or reject; recorded in the run's report.",
                )
            },
            response_timeout=timedelta(seconds=approval_timeout),
            **kwargs,
        )
        self.migration_id = migration_id
        self.canary_task_id = canary_task_id
        self.canary_gate_task_id = canary_gate_task_id
        self.canary_shard_id = canary_shard_id
        self.waiting_shards = waiting_shards
        self.approval_timeout = approval_timeout

    def prompt(self, context: Context) -> str:
        """The body of the request (Markdown): the canary's outcome and the validation outcome."""
        from airflow_provider_shardmigrate.core.status import ShardStatus

        ti = context["ti"]
        data = ti.xcom_pull(task_ids=self.canary_task_id, key="return_value")
        status = ShardStatus.from_xcom(data) if ShardStatus.is_xcom(data) else None
        gate = ti.xcom_pull(task_ids=self.canary_gate_task_id, key="return_value") or {}
        outcome = f"**{status.outcome.value}** in {status.duration_ms} ms" if status else "**no result**"
        note = f" ({status.error_message})" if status and status.error_message else ""
        validation = gate.get("validation") if isinstance(gate, dict) else None
        checked = (
            f"passed: the validation query returned `{validation}`"
            if validation is not None
            else "no validation query is configured"
        )
        return "\n".join(
            [
                f"Canary shard **{self.canary_shard_id}** of migration `{self.migration_id}`: {outcome}{note}.",
                "",
                f"* Validation: {checked}.",
                f"* **Approve** starts the other {self.waiting_shards} shard(s).",
                f"* **Reject** leaves them `pending`; no answer within {self.approval_timeout:g} s counts as a reject.",
                "",
                "Your name and comment are recorded in the run's report.",
            ]
        )

    def execute(self, context: Context) -> Any:
        if context["params"].get("dry_run"):
            decision = ApprovalDecision(True, None, "dry run: nothing to approve", timeout_s=self.approval_timeout)
            self.log.info("dry run: the canary approval is not asked")
            return decision.to_xcom()
        self.body = self.prompt(context)
        return super().execute(context)

    def decision(self, event: dict[str, Any]) -> ApprovalDecision:
        """The decision an HITL resume event carries (an answer, the timeout default, or a timeout error)."""
        if "error" in event:
            return ApprovalDecision(False, None, "", timed_out=True, timeout_s=self.approval_timeout)
        user = event.get("responded_by_user") or {}
        responded_at = event.get("responded_at")
        when = responded_at.isoformat() if isinstance(responded_at, datetime) else responded_at
        return ApprovalDecision(
            approved=list(event.get("chosen_options") or []) == [self.APPROVE],
            by=(user.get("name") or user.get("id")) if isinstance(user, dict) else None,
            comment=str((event.get("params_input") or {}).get(COMMENT_PARAM) or ""),
            timed_out=bool(event.get("timedout")),
            timeout_s=self.approval_timeout,
            responded_at=str(when) if when else None,
        )

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        decision = self.decision(event)
        self.log.info(
            "canary %s: %s%s%s",
            self.canary_shard_id,
            "approved" if decision.approved else "rejected",
            " (no answer in time)" if decision.timed_out else f" by {decision.by}",
            f": {decision.comment}" if decision.comment else "",
        )
        # Pushed first: on Reject the parent skips the fleet by raising, so nothing after it runs.
        context["ti"].xcom_push(key="return_value", value=decision.to_xcom())
        super().execute_complete(context=context, event=event)
        return decision.to_xcom()
