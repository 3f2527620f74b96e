"""The canary gate: the rest of the fleet starts only after the canary applied cleanly, passed an
optional validation query, and baked for an optional time."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from airflow.sdk import BaseOperator

if TYPE_CHECKING:
    from airflow.sdk import Context


class CanaryGateOperator(BaseOperator):
    """Check the canary before the rest of the fleet migrates.

    :param canary_task_id: Task id of the canary's apply task.
    :param canary_shard_id: The canary shard.
    :param canary_conn_id: Its Airflow connection.
    :param validation_query: SQL whose first column must be truthy after the canary applied (optional).
    :param bake_time: Seconds to wait before releasing the rest of the fleet.
    :param timeout: Seconds the validation query may run (enforced by the database).
    """

    template_fields: Sequence[str] = ("validation_query",)
    ui_color = "#fff0c0"

    def __init__(
        self,
        *,
        canary_task_id: str,
        canary_shard_id: str,
        canary_conn_id: str,
        validation_query: str | None = None,
        bake_time: float = 0.0,
        timeout: float = 300.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.canary_task_id = canary_task_id
        self.canary_shard_id = canary_shard_id
        self.canary_conn_id = canary_conn_id
        self.validation_query = validation_query
        self.bake_time = bake_time
        self.timeout = timeout

    def _fail(self, context: Context, code: str, message: str) -> NoReturn:
        """Fail the gate with its reason pushed, so the report says why the rest of the fleet did not start."""
        from airflow.sdk.exceptions import AirflowFailException

        context["ti"].xcom_push(key="return_value", value={"error_code": code, "error_message": message})
        raise AirflowFailException(f"[{code}] {message}")

    def _validate(self, context: Context) -> Any:
        from airflow_provider_shardmigrate.core.deadline import Deadline
        from airflow_provider_shardmigrate.core.errors import ErrorCode, ShardMigrateError
        from airflow_provider_shardmigrate.core.topology import Shard
        from airflow_provider_shardmigrate.engines import engine_for

        deadline = Deadline(self.timeout)
        try:
            with engine_for(Shard(self.canary_shard_id, self.canary_conn_id)).connected(deadline) as engine:
                checked = engine.query_scalar(str(self.validation_query), deadline)
        except ShardMigrateError as exc:
            self._fail(
                context, exc.code.value, f"canary '{self.canary_shard_id}' validation query failed: {exc.message}"
            )
        if not checked:
            self._fail(
                context,
                ErrorCode.MIGRATION_FAILED.value,
                f"canary '{self.canary_shard_id}' failed validation: the query returned {checked!r}",
            )
        self.log.info("canary validation passed (%r)", checked)
        return checked

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_shardmigrate.core.errors import ErrorCode
        from airflow_provider_shardmigrate.core.outcomes import canary_cleared
        from airflow_provider_shardmigrate.core.status import ShardStatus

        data = context["ti"].xcom_pull(task_ids=self.canary_task_id, key="return_value")
        status = ShardStatus.from_xcom(data) if ShardStatus.is_xcom(data) else None
        if not canary_cleared(status):
            outcome = status.outcome.value if status else "no result"
            self._fail(
                context,
                (status.error_code if status else None) or ErrorCode.MIGRATION_FAILED.value,
                f"canary '{self.canary_shard_id}' did not reach the migration ({outcome})",
            )
        dry_run = bool(context["params"].get("dry_run"))
        checked: Any = None
        if self.validation_query and not dry_run:
            checked = self._validate(context)
        if self.bake_time and not dry_run:
            self.log.info("baking the canary for %gs", self.bake_time)
            time.sleep(self.bake_time)
        return {"canary": self.canary_shard_id, "validation": None if checked is None else str(checked)}
