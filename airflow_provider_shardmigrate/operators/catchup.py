"""The catch-up and baseline DAGs' tasks: bring each selected shard up to date with the migrations folder.

- ``FleetPreflightOperator``: the first task -- refuses unknown ``conf`` keys, unknown shards, and migrations
  edited since the DAG was parsed, before any shard is touched.
- ``ShardCatchupOperator``: one task instance per shard (mapped, labelled by shard id).
- ``CatchupLaneOperator``: the lanes of a large fleet; the lane loop is operators/lanes.py's, only the action
  on each shard differs (:meth:`ShardLaneOperator.shard_action`).
- ``CatchupReportOperator``: every shard's catch-up, assembled by core/outcomes.py (kind ``catchup``).
- ``BaselineOperator``: records migrations up to an id as ``baselined`` on one shard.

Each shard goes through engines/runner.catch_up_shard: every migration it lacks, in id order, through the
per-shard protocol, stopping at its first failure; the other shards go on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from airflow.sdk import BaseOperator

from airflow_provider_shardmigrate.core.catchup import CatchupStatus, CatchupStep, is_selected, up_to
from airflow_provider_shardmigrate.core.status import Outcome
from airflow_provider_shardmigrate.core.topology import Shard
from airflow_provider_shardmigrate.operators._context import gate_refused
from airflow_provider_shardmigrate.operators._stop import StopsOnKill
from airflow_provider_shardmigrate.operators.lanes import LaneAction, ShardLaneOperator, observed
from airflow_provider_shardmigrate.operators.preflight import MigrationPreflightOperator
from airflow_provider_shardmigrate.operators.report import MigrationReportOperator, _since_trigger_ms

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_shardmigrate.core.status import MigrationResult, ShardStatus

#: Strategy name of catch-up runs (metrics, spans, the report).
CATCHUP = "catchup"
BASELINE = "baseline"


def migration_specs(steps: Sequence[CatchupStep]) -> list[dict[str, Any]]:
    """The folder's migrations as task arguments (built at parse time): id, folder, checksum and what each
    needs first -- or the error of a folder that cannot be loaded."""
    specs: list[dict[str, Any]] = []
    for step in steps:
        if step.migration is None:
            specs.append({"id": step.id, "error": step.error})
        else:
            specs.append(
                {
                    "id": step.id,
                    "path": str(step.migration.path),
                    "checksum": step.migration.checksum,
                    "requires": list(step.requires),
                }
            )
    return specs


def _requested(params: Mapping[str, Any], name: str) -> list[str]:
    value = params.get(name) or []
    return [value] if isinstance(value, str) else [str(item) for item in value]


def load_steps(specs: Sequence[Mapping[str, Any]], last: str | None) -> list[CatchupStep]:
    """The steps up to ``last``, each migration re-read from disk and checked against its parse-time checksum;
    one that cannot be loaded (or changed) becomes a step that fails the shards lacking it, with the reason."""
    from airflow_provider_shardmigrate.core.errors import ShardMigrateError
    from airflow_provider_shardmigrate.operators.shard import load_checked_migration

    wanted = set(up_to([str(spec["id"]) for spec in specs], last))
    steps = []
    for spec in (spec for spec in specs if spec["id"] in wanted):
        if "error" in spec:
            steps.append(CatchupStep(str(spec["id"]), None, error=str(spec["error"])))
            continue
        try:
            migration = load_checked_migration(str(spec["path"]), str(spec["checksum"]))
        except ShardMigrateError as exc:
            steps.append(CatchupStep(str(spec["id"]), None, error=str(exc)))
            continue
        steps.append(CatchupStep(migration.id, migration, tuple(spec.get("requires") or ())))
    return steps


def not_selected(shard: Shard, params: Mapping[str, Any]) -> CatchupStatus | None:
    """The ``not_selected`` status of a shard the ``shards`` Param leaves out (inactive ones unless named)."""
    requested = _requested(params, "shards")
    if is_selected(shard, requested):
        return None
    reason = "not selected in the 'shards' param" if requested else "inactive: name it in 'shards' to catch up"
    return CatchupStatus(shard.id, Outcome.NOT_SELECTED, 0, None, reason)


def catchup_action(context: Context, specs: Sequence[Mapping[str, Any]], dry_run: bool) -> LaneAction:
    """What a catch-up does to one shard: nothing for a shard left out of the ``shards`` selection
    (``not_selected``), else every migration it lacks up to the ``up_to`` Param. Reads the migrations once."""
    from airflow_provider_shardmigrate.engines.runner import RunInfo, catch_up_shard

    params = context["params"]
    steps = load_steps(specs, params.get("up_to"))
    ti = context["ti"]
    run = RunInfo(dag_id=ti.dag_id, run_id=ti.run_id)
    target = steps[-1].id if steps else CATCHUP

    def act(shard: Shard) -> ShardStatus:
        left_out = not_selected(shard, params)
        if left_out is not None:
            return left_out
        return observed(
            shard,
            migration_id=target,
            strategy=CATCHUP,
            work=lambda: catch_up_shard(shard, steps, dry_run=dry_run, run=run),
        )

    return act


class FleetPreflightOperator(MigrationPreflightOperator):
    """The first task of the catch-up and baseline DAGs: refuse the run before any shard is touched when its
    ``conf`` has a key the DAG does not accept, names a shard the topology does not have, an ``up_to`` that is
    not a migration of the folder, or when a migration up to ``up_to`` changed since the DAG was parsed.

    :param migrations: The folder's migrations (:func:`migration_specs`).
    :param shard_ids: Every shard of the topology.
    :param shard_param: The Param naming shards (``shards``: a list, or ``shard``: one, required).
    :param accepted_params: The DAG's Param names.
    """

    def __init__(
        self,
        *,
        migrations: Sequence[Mapping[str, Any]],
        shard_ids: Sequence[str],
        shard_param: str = "shards",
        accepted_params: Sequence[str] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(
            migration_path="",
            migration_checksum="",
            shard_conn_ids={},
            accepted_params=accepted_params,
            check_drift=False,
            **kwargs,
        )
        self.migrations = [dict(spec) for spec in migrations]
        self.shard_ids = list(shard_ids)
        self.shard_param = shard_param

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_shardmigrate.core.errors import InvalidParamsError, ShardMigrateError
        from airflow_provider_shardmigrate.operators.shard import load_checked_migration

        self._check_conf(context)
        params = context["params"]
        requested = _requested(params, self.shard_param)
        known = {shard_id.casefold() for shard_id in self.shard_ids}
        unknown = [item for item in requested if item.casefold() not in known]
        if unknown or (self.shard_param == "shard" and not requested):
            self._refuse(context, InvalidParamsError(self._shard_problem(unknown)))
        try:
            wanted = up_to([str(spec["id"]) for spec in self.migrations], params.get("up_to"))
            for spec in (spec for spec in self.migrations if spec["id"] in wanted and "path" in spec):
                load_checked_migration(str(spec["path"]), str(spec["checksum"]))
        except ShardMigrateError as exc:
            self._refuse(context, exc)
        return {"migrations": wanted, "shards": requested}

    def _shard_problem(self, unknown: Sequence[str]) -> str:
        if not unknown:
            return f"the '{self.shard_param}' param is required: the id of the shard to work on -- nothing was run"
        shown = ", ".join(self.shard_ids[:20]) + (" ..." if len(self.shard_ids) > 20 else "")
        return (
            f"'{self.shard_param}' names {', '.join(repr(item) for item in unknown)}, not a shard of the topology "
            f"(shards: {shown}) -- nothing was run"
        )


class ShardCatchupOperator(StopsOnKill, BaseOperator):
    """Catch one shard up: every migration it lacks, in id order, up to the ``up_to`` Param, stopping at the
    first failure (``engines/runner.catch_up_shard``). The task fails when the shard did; its ``return_value``
    says what was applied, what failed and what is left pending.

    :param shard_id: Shard id from the topology.
    :param conn_id: Airflow connection of the shard.
    :param shard_active: Whether the topology marks the shard active (inactive ones run only when selected).
    :param migrations: The folder's migrations (:func:`migration_specs`).
    :param requires: Gate task ids (the preflight) that must not have failed.
    """

    template_fields: Sequence[str] = ()
    ui_color = "#d8f0e0"

    def __init__(
        self,
        *,
        shard_id: str,
        conn_id: str,
        shard_active: bool = True,
        migrations: Sequence[Mapping[str, Any]],
        requires: Sequence[str] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.shard_id = shard_id
        self.conn_id = conn_id
        self.shard_active = bool(shard_active)
        self.migrations = [dict(spec) for spec in migrations]
        self.requires = list(requires)

    def _skip(self, context: Context, status: ShardStatus) -> NoReturn:
        from airflow.sdk.exceptions import AirflowSkipException

        context["ti"].xcom_push(key="return_value", value=status.to_xcom())
        raise AirflowSkipException(f"shard '{self.shard_id}': {status.error_message}")

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowFailException

        if gate_refused(context, self.requires):
            reason = f"not started: {', '.join(self.requires)} refused the run"
            self._skip(context, CatchupStatus(self.shard_id, Outcome.PENDING, 0, None, reason))
        shard = Shard(self.shard_id, self.conn_id, self.shard_active)
        left_out = not_selected(shard, context["params"])
        if left_out is not None:  # before reading any migration: most shards of a targeted run skip here
            self._skip(context, left_out)
        status = catchup_action(context, self.migrations, bool(context["params"].get("dry_run")))(shard)
        if status.outcome is Outcome.FAILED:
            context["ti"].xcom_push(key="return_value", value=status.to_xcom())
            raise AirflowFailException(f"[{status.error_code}] shard '{self.shard_id}': {status.error_message}")
        self.log.info("shard %s: %s (%s)", self.shard_id, status.outcome.value, status.error_message)
        return status.to_xcom()


class CatchupLaneOperator(ShardLaneOperator):
    """A lane of the catch-up DAG: the lane loop of :class:`ShardLaneOperator`, catching up each of its shards.

    :param migrations: The folder's migrations (:func:`migration_specs`).
    """

    def __init__(self, *, migrations: Sequence[Mapping[str, Any]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.migrations = [dict(spec) for spec in migrations]

    def shard_action(self, context: Context, dry_run: bool) -> LaneAction:
        return catchup_action(context, self.migrations, dry_run)


class CatchupReportOperator(MigrationReportOperator):
    """The catch-up report: per shard, the migrations applied, the one that failed (code, message) and those
    left pending; success when no selected shard failed (core/outcomes.py, kind ``catchup``).

    :param migration_ids: Every migration id of the folder, in order (the report lists those up to ``up_to``).
    """

    def __init__(self, *, migration_ids: Sequence[str], **kwargs: Any) -> None:
        super().__init__(migration_id=CATCHUP, strategy=CATCHUP, kind=CATCHUP, **kwargs)
        self.migration_ids = list(migration_ids)

    def _range(self, context: Context) -> list[str]:
        from airflow_provider_shardmigrate.core.errors import ShardMigrateError

        try:
            return up_to(self.migration_ids, context["params"].get("up_to"))
        except ShardMigrateError:
            return []  # the preflight refused the run

    def assemble(self, context: Context) -> MigrationResult:
        from airflow_provider_shardmigrate.core.catchup import catchup_statuses_in
        from airflow_provider_shardmigrate.core.outcomes import RunKind, assemble_result

        ti = context["ti"]
        values = ti.xcom_pull(task_ids=self._result_tasks(), key="return_value") or []
        reported: list[ShardStatus] = list(catchup_statuses_in(list(values)))
        recovered, lost_in_lanes = self._recover_lanes(context, reported)
        reported += recovered
        covered = self._range(context)
        return assemble_result(
            kind=RunKind.CATCHUP,
            migration_id=covered[-1] if covered else CATCHUP,
            dag_run_id=ti.run_id,
            strategy=CATCHUP,
            targets=self.target_shard_ids,
            reported=reported,
            lost=[*self._lost(context, reported), *lost_in_lanes],
            refused=self._refusal(context),
            total_duration_ms=_since_trigger_ms(context),
        )

    def execute(self, context: Context) -> dict[str, Any]:
        data = super().execute(context)
        shards = data.pop("shards")
        params = context["params"]
        return {
            **data,
            "up_to": params.get("up_to") or None,
            "dry_run": bool(params.get("dry_run")),
            "migrations": self._range(context),
            "shards": shards,
        }


class BaselineOperator(BaseOperator):
    """Record every migration up to the ``up_to`` Param as ``baselined`` on the shard the ``shard`` Param names,
    without running any (``engines/runner.baseline_up_to``): a shard restored or cloned from a snapshot that
    already has them. Fails when one cannot be baselined (a ``failed`` or ``running`` row: look first).

    :param shard_conn_ids: Shard id -> Airflow connection id, for every shard of the topology.
    :param migrations: The folder's migrations (:func:`migration_specs`).
    :param requires: Gate task ids (the preflight) that must not have failed.
    """

    template_fields: Sequence[str] = ()
    ui_color = "#e0f0f8"

    def __init__(
        self,
        *,
        shard_conn_ids: Mapping[str, str],
        migrations: Sequence[Mapping[str, Any]],
        requires: Sequence[str] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.shard_conn_ids = dict(shard_conn_ids)
        self.migrations = [dict(spec) for spec in migrations]
        self.requires = list(requires)

    def _shard_id(self, requested: str) -> str:
        """The topology's spelling of the requested shard (the preflight refused an unknown one already)."""
        from airflow_provider_shardmigrate.core.errors import InvalidParamsError

        for shard_id in self.shard_conn_ids:
            if shard_id.casefold() == requested.casefold():
                return shard_id
        raise InvalidParamsError(f"'shard' names {requested!r}, not a shard of the topology")

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

        from airflow_provider_shardmigrate.engines.runner import RunInfo, baseline_up_to

        if gate_refused(context, self.requires):
            raise AirflowSkipException(f"not started: {', '.join(self.requires)} refused the run")
        params = context["params"]
        shard_id = self._shard_id(str(params.get("shard") or ""))
        steps = load_steps(self.migrations, params.get("up_to"))
        ti = context["ti"]
        shard = Shard(shard_id, self.shard_conn_ids[shard_id])
        run = RunInfo(ti.dag_id, ti.run_id)
        status = observed(
            shard,
            migration_id=steps[-1].id if steps else BASELINE,
            strategy=BASELINE,
            work=lambda: baseline_up_to(shard, steps, run=run),
        )
        result = {**status.to_xcom(), "up_to": steps[-1].id if steps else None}
        if status.outcome is Outcome.FAILED:
            ti.xcom_push(key="return_value", value=result)
            raise AirflowFailException(f"[{status.error_code}] shard '{shard_id}': {status.error_message}")
        self.log.info("shard %s: %s", shard_id, status.error_message)
        return result
