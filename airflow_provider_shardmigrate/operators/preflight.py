"""The first task of every run: publish the plan, refuse a bad trigger, and (``validate_before_apply``)
refuse to start when the tables the script touches already differ between the shards it would migrate.

Whatever it refuses, it refuses before any shard is touched, with the code and the reason in its XCom
so the report can say why the run did nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from airflow.sdk import BaseOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_shardmigrate.core.errors import ShardMigrateError
    from airflow_provider_shardmigrate.core.plans import RolloutPlan


class MigrationPreflightOperator(BaseOperator):
    """Prepare a rollout or rollback run; fail (refusing the run) on anything that must stop it.

    In order: publish the plan under ``plan_xcom_key`` (progress reads it), refuse ``conf`` keys that are
    not Params of the DAG (``shardmigrate.invalid_params``), re-read the migration and refuse it if it
    changed since the DAG was parsed (``shardmigrate.invalid_script``), and with ``check_drift`` compare the
    touched tables across the shards not yet migrated (``shardmigrate.drift_detected``; a shard that cannot be
    read refuses the run too).

    :param migration_path: Folder of the migration.
    :param migration_checksum: Checksum of the migration when the DAG was built.
    :param shard_conn_ids: Shard id -> Airflow connection id, in topology order.
    :param plan: The plan the DAG was built from (published for progress), or None.
    :param plan_extra: Published with the plan (how the DAG laid it out, e.g. ``map_chunk``).
    :param plan_xcom_key: XCom key to publish the plan under.
    :param accepted_params: The DAG's Param names; any other ``conf`` key refuses the run.
    :param check_drift: Compare the touched tables (``validate_before_apply``).
    :param selectable_shards: Rollback DAGs: the shard ids the ``shards`` Param may name; an empty selection or
        an unknown id refuses the run (``shardmigrate.invalid_params``, core/selection.py). None: no selection.
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
        shard_conn_ids: Mapping[str, str],
        plan: RolloutPlan | None = None,
        plan_extra: Mapping[str, Any] | None = None,
        plan_xcom_key: str = "plan",
        accepted_params: Sequence[str] = (),
        check_drift: bool = True,
        selectable_shards: Sequence[str] | None = None,
        timeout: float = 60.0,
        max_workers: int = 8,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.migration_path = migration_path
        self.migration_checksum = migration_checksum
        self.shard_conn_ids = shard_conn_ids
        self.plan = plan
        self.plan_extra = dict(plan_extra or {})
        self.plan_xcom_key = plan_xcom_key
        self.accepted_params = list(accepted_params)
        self.check_drift = check_drift
        self.selectable_shards = None if selectable_shards is None else list(selectable_shards)
        self.timeout = timeout
        self.max_workers = max_workers

    def _refuse(self, context: Context, error: ShardMigrateError, summary: Mapping[str, Any] | None = None) -> NoReturn:
        from airflow.sdk.exceptions import AirflowFailException

        value = {**(summary or {}), "error_code": error.code.value, "error_message": error.message}
        context["ti"].xcom_push(key="return_value", value=value)
        raise AirflowFailException(str(error))

    def _check_conf(self, context: Context) -> None:
        from airflow_provider_shardmigrate.core.errors import InvalidParamsError

        dag_run = context.get("dag_run")
        conf = getattr(dag_run, "conf", None) or {}
        unknown = sorted(str(key) for key in conf if key not in self.accepted_params)
        if unknown:
            self._refuse(
                context,
                InvalidParamsError(
                    f"unknown conf key(s) {', '.join(repr(k) for k in unknown)}; this DAG accepts: "
                    f"{', '.join(self.accepted_params) or 'none'} -- nothing was run"
                ),
            )

    def _check_selection(self, context: Context) -> None:
        from airflow_provider_shardmigrate.core.errors import ShardMigrateError
        from airflow_provider_shardmigrate.core.selection import SELECTION_PARAM, check_selection

        if self.selectable_shards is None:
            return
        selection = context["params"].get(SELECTION_PARAM)
        try:
            named = check_selection(selection, self.selectable_shards)
        except ShardMigrateError as exc:
            self._refuse(context, exc)
        self.log.info("'%s' selection %s: named %s", SELECTION_PARAM, selection, ", ".join(named) or "none")

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_shardmigrate.core.errors import ShardMigrateError
        from airflow_provider_shardmigrate.operators.shard import load_checked_migration

        if self.plan is not None:
            context["ti"].xcom_push(key=self.plan_xcom_key, value={**self.plan.to_dict(), **self.plan_extra})
        self._check_conf(context)
        self._check_selection(context)
        try:
            migration = load_checked_migration(self.migration_path, self.migration_checksum)
        except ShardMigrateError as exc:
            self._refuse(context, exc)
        self._check_scripts(context, migration)
        if not self.check_drift:
            return {"checked": []}
        return self._check_drift(context, migration)

    def _check_scripts(self, context: Context, migration: Any) -> None:
        """Refuse the run when a targeted shard's engine has no script in the migration (engines/coverage.py):
        the engines are known only now, from the connections, never at parse time."""
        from airflow_provider_shardmigrate.core.topology import Shard
        from airflow_provider_shardmigrate.engines.coverage import missing_scripts, refusal

        shards = [Shard(shard_id, conn_id) for shard_id, conn_id in self.shard_conn_ids.items()]
        missing = missing_scripts(shards, migration, max_workers=self.max_workers)
        if missing:
            self._refuse(
                context, refusal(migration, missing), {"missing_scripts": {k: list(v) for k, v in missing.items()}}
            )

    def _check_drift(self, context: Context, migration: Any) -> dict[str, Any]:
        from airflow_provider_shardmigrate.core.topology import Shard
        from airflow_provider_shardmigrate.engines.preflight import check_touched_tables

        shards = [Shard(shard_id, conn_id) for shard_id, conn_id in self.shard_conn_ids.items()]
        result = check_touched_tables(shards, migration, timeout=self.timeout, max_workers=self.max_workers)
        summary: dict[str, Any] = {
            "checked": list(result.tables),
            "tables": list(result.tables),
            "conflicts": {table: list(ids) for table, ids in result.conflicts.items()},
            "already_applied": len(result.already_applied),
            "unreadable": dict(list(result.unreadable.items())[:20]),
        }
        error = result.error()
        if error is not None:
            self._refuse(context, error, summary)
        self.log.info(
            "preflight: tables %s are identical on every shard still to migrate (%d already applied)",
            ", ".join(result.tables) or "(none)",
            len(result.already_applied),
        )
        return summary
