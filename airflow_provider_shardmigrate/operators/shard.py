"""One task instance per shard: apply (or roll back) a migration on that shard.

The task's state tells the truth in the Grid -- failed when the shard failed, skipped when the shard was
left pending by a stop or was not selected -- and its ``return_value`` XCom carries the ShardStatus either
way, so the report can account for every shard.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from enum import StrEnum
from typing import TYPE_CHECKING, Any, NoReturn

from airflow.sdk import BaseOperator

from airflow_provider_shardmigrate.core.errors import InvalidScriptError
from airflow_provider_shardmigrate.core.scripts import Migration, load_migration
from airflow_provider_shardmigrate.core.status import Outcome, ShardStatus
from airflow_provider_shardmigrate.core.topology import Shard
from airflow_provider_shardmigrate.operators._context import failed_count, gate_refused, statuses_in
from airflow_provider_shardmigrate.operators._stop import StopsOnKill

if TYPE_CHECKING:
    from airflow.sdk import Context


class ShardAction(StrEnum):
    APPLY = "apply"
    ROLLBACK = "rollback"

    @classmethod
    def parse(cls, value: str | ShardAction) -> ShardAction:
        """The action, or a ValueError naming the accepted ones (a typo must never run a rollback)."""
        try:
            return cls(value)
        except ValueError:
            raise ValueError(f"action must be one of {', '.join(a.value for a in cls)}, not {value!r}") from None


def load_checked_migration(path: str, checksum: str) -> Migration:
    """The migration as it is on disk now, refused if it changed since the DAG was parsed."""
    migration = load_migration(path)
    if migration.checksum != checksum:
        raise InvalidScriptError(
            f"migration '{migration.id}' changed since this DAG was parsed (DAG has {checksum}, the files hash to "
            f"{migration.checksum}); wait for the DAG to be re-parsed and trigger again"
        )
    return migration


def migration_id_of_path(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


class ShardMigrationOperator(StopsOnKill, BaseOperator):
    """Apply or roll back one migration on one shard, following the per-shard protocol (docs/architecture.md).

    :param migration_path: Folder of the migration (re-read at run time and checked against the checksum).
    :param migration_checksum: Checksum of the migration when the DAG was built.
    :param shard_id: Shard id from the topology.
    :param conn_id: Airflow connection of the shard.
    :param action: ``apply`` or ``rollback`` (:class:`ShardAction`); anything else is refused here.
    :param strategy: Strategy of the rollout (for metrics and spans).
    :param stop_watch: Task ids whose failed instances count against the failure threshold
        (``stop_on_first_failure``, ``max_failed_shards``, ``max_failure_ratio``): every shard task before
        this one can start (a rolling batch does not watch itself: a batch that started completes).
    :param stop_after: Task ids of the previous wave (chain link or rolling batch): a shard there that was
        stopped stops this one too.
    :param requires: Gate task ids (the preflight) that must not have failed, whatever the trigger rule:
        chained shards run ``all_done`` and would otherwise start after a refused preflight.
    :param target_count: Shards the rollout targets (the base of ``max_failure_ratio``).
    :param in_all: Rollback: whether the selection ``all`` includes this shard (active shards do; an inactive
        shard is rolled back only when the ``shards`` Param names it).
    :param required_migrations: Migrations the shard must hold before this one is applied (the earlier ones of
        the folder, or ``depends_on``); a shard lacking one fails with ``shardmigrate.out_of_order``, nothing run.
    """

    template_fields: Sequence[str] = ()
    ui_color = "#d8f0e0"

    def __init__(
        self,
        *,
        migration_path: str,
        migration_checksum: str,
        shard_id: str,
        conn_id: str,
        action: str | ShardAction = ShardAction.APPLY,
        strategy: str = "",
        stop_watch: Sequence[str] = (),
        stop_after: Sequence[str] = (),
        requires: Sequence[str] = (),
        target_count: int = 0,
        in_all: bool = True,
        required_migrations: Sequence[str] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.target_count = int(target_count)
        self.required_migrations = list(required_migrations)
        self.migration_path = migration_path
        self.migration_checksum = migration_checksum
        self.shard_id = shard_id
        self.conn_id = conn_id
        self.action = ShardAction.parse(action)
        self.strategy = strategy
        self.stop_watch = list(stop_watch)
        self.stop_after = list(stop_after)
        self.requires = list(requires)
        self.in_all = in_all

    def _skip(self, context: Context, outcome: Outcome, reason: str) -> NoReturn:
        from airflow.sdk.exceptions import AirflowSkipException

        context["ti"].xcom_push(
            key="return_value", value=ShardStatus(self.shard_id, outcome, 0, None, reason).to_xcom()
        )
        raise AirflowSkipException(f"shard '{self.shard_id}': {reason}")

    def _stopped_by_failure(self, context: Context) -> bool:
        """Whether the failure threshold is passed, or the previous link of a chain was stopped (task ids
        given at build time: one count and one XCom read, whatever the fleet size)."""
        from airflow_provider_shardmigrate.core.outcomes import HaltPolicy, stops_followers

        params = context["params"]
        policy = HaltPolicy.from_limits(
            stop_on_first_failure=bool(params.get("stop_on_first_failure")),
            max_failed_shards=params.get("max_failed_shards"),
            max_failure_ratio=params.get("max_failure_ratio"),
            targets=self.target_count,
        )
        if policy.max_failed is None:
            return False
        if policy.exceeded(failed_count(context, sorted(set(self.stop_watch) | set(self.stop_after)))):
            return True
        if self.stop_after:
            previous = context["ti"].xcom_pull(task_ids=self.stop_after, key="return_value") or []
            return any(stops_followers(status) for status in statuses_in(previous))
        return False

    def _check_may_start(self, context: Context, dry_run: bool) -> None:
        """Skip (with the shard's status pushed) when this shard must not run in this run."""
        params = context["params"]
        if gate_refused(context, self.requires):
            self._skip(context, Outcome.PENDING, f"not started: {', '.join(self.requires)} refused the rollout")
        # A dry run ignores the failure threshold: its point is that every shard says what it would do.
        if self.action is ShardAction.APPLY and not dry_run and self._stopped_by_failure(context):
            self._skip(context, Outcome.PENDING, "not started: the failure threshold was passed (another shard failed)")
        if self.action is ShardAction.ROLLBACK:
            from airflow_provider_shardmigrate.core.selection import SELECTION_PARAM, selects

            if not selects(params.get(SELECTION_PARAM), self.shard_id, in_all=self.in_all):
                self._skip(context, Outcome.NOT_SELECTED, f"not selected in the '{SELECTION_PARAM}' param")

    def _run(self, context: Context, dry_run: bool) -> tuple[str, ShardStatus]:
        from airflow_provider_shardmigrate.engines.runner import RunInfo, apply_to_shard, failure_status, rollback_shard

        shard = Shard(self.shard_id, self.conn_id)
        try:
            migration = load_checked_migration(self.migration_path, self.migration_checksum)
        except Exception as exc:  # a changed or vanished folder fails this shard with its code
            return migration_id_of_path(self.migration_path), failure_status(
                shard, time.monotonic(), exc, InvalidScriptError.code
            )
        ti = context["ti"]
        run = RunInfo(dag_id=ti.dag_id, run_id=ti.run_id)
        if self.action is ShardAction.ROLLBACK:
            return migration.id, rollback_shard(shard, migration, dry_run=dry_run, run=run)
        return migration.id, apply_to_shard(
            shard, migration, dry_run=dry_run, run=run, requires=self.required_migrations
        )

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowFailException

        from airflow_provider_shardmigrate.observability import record_shard, span

        dry_run = bool(context["params"].get("dry_run", False))
        self._check_may_start(context, dry_run)
        with span("shardmigrate.shard", **{"shard.id": self.shard_id, "strategy": self.strategy}) as current:
            migration_id, status = self._run(context, dry_run)
            current.set_attribute("migration.id", migration_id)
            current.set_attribute("migration.shard.outcome", status.outcome.value)
            if status.error_code:
                current.set_attribute("migration.error", status.error_code)
        record_shard(status, migration_id=migration_id, strategy=self.strategy)
        if status.outcome is Outcome.FAILED:
            context["ti"].xcom_push(key="return_value", value=status.to_xcom())
            # The error is stated once, here, before Airflow logs the exception with its traceback.
            self.log.error("shard %s failed: [%s] %s", self.shard_id, status.error_code, status.error_message)
            raise AirflowFailException(f"[{status.error_code}] shard '{self.shard_id}' failed (the error is above)")
        if status.error_message:
            self.log.info("shard %s: %s (%s)", self.shard_id, status.outcome.value, status.error_message)
        return status.to_xcom()
