"""``build_drift_dag``: the scheduled drift DAG ``shardmigrate_drift``.

A DAG file holds::

    dag = build_drift_dag(topology="shards.yaml")

and the DAG is::

    detect_drift (SchemaDriftSensor, reschedule)  ->  publish (all_done; the only leaf)

``publish`` writes the report (differences only) and the fleet health to XCom, sets the
``shardmigrate.drifted_shards`` gauge, and ends **failed** when the sensor gave up -- drift that
outlasted the grace period, or shards that could not be read -- so the run state, and whatever
alerting the deployment has on failed runs, tells the truth. One rule decides, ``drift.fail_on``:
``degraded`` (the default) fails on any drift past the grace period, ``unhealthy`` only on drift in a
critical table or a shard that could not be read (degraded drift is published and the run succeeds).

Building reads the topology file only: no database, no connection, no Variable. The schedule and every
Param default come from the topology's ``drift:`` section, so the scheduled DAG always has valid
defaults (Airflow refuses a scheduled DAG whose params lack them).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_provider_shardmigrate.core.topology import DriftDepth, DriftFailOn, Topology, load_topology
from airflow_provider_shardmigrate.dags.common import dag_defaults
from airflow_provider_shardmigrate.dags.loader import _caller_dir, resolve
from airflow_provider_shardmigrate.engines.introspect import DEFAULT_MAX_WORKERS, DEFAULT_TIMEOUT

if TYPE_CHECKING:
    from airflow.sdk import DAG

DRIFT_DAG_ID = "shardmigrate_drift"
SENSOR_TASK_ID = "detect_drift"
PUBLISH_TASK_ID = "publish"
DRIFTED_SHARDS_GAUGE = "shardmigrate.drifted_shards"


def drift_params(topology: Topology) -> dict[str, Any]:
    """Trigger-form / REST ``conf`` params, defaulting to the topology's ``drift:`` settings."""
    from airflow.sdk import Param

    drift = topology.drift
    return {
        "baseline": Param(
            drift.baseline or "",
            type="string",
            enum=["", *(shard.id for shard in topology.shards)],
            title="Baseline shard",
            description="Shard every other active shard is compared with; empty: the first active shard.",
        ),
        "depth": Param(
            drift.depth.value,
            type="string",
            enum=[depth.value for depth in DriftDepth],
            title="Depth",
            description="tables_only: which tables exist; tables_and_columns: + column types, nullability, "
            "defaults; full: + indexes and constraints.",
        ),
        "critical_tables": Param(
            list(drift.critical_tables),
            type="array",
            items={"type": "string", "minLength": 1},
            title="Critical tables",
            description="Drift in any of these makes the fleet unhealthy (case-insensitive).",
        ),
        "grace_period": Param(
            drift.grace_period,
            type="number",
            minimum=0,
            title="Grace period (seconds)",
            description="How long drift may last before the run fails.",
        ),
        "fail_on": Param(
            drift.fail_on.value,
            type="string",
            enum=[value.value for value in DriftFailOn],
            title="Fail on",
            description="degraded: any drift past the grace period fails the run; unhealthy: only drift in a "
            "critical table, or a shard that could not be read (degraded drift is reported, the run succeeds).",
        ),
    }


def publish_drift(
    payload: Any, *, dag_id: str = DRIFT_DAG_ID, fail_on: str = DriftFailOn.DEGRADED.value
) -> tuple[dict[str, Any], str | None]:
    """What the publish step records for the sensor's last ``payload``: ``(xcom, failure or None)``.

    The sensor succeeds only on a fleet healthier than ``fail_on``, so a payload at or past it means the
    sensor failed (drift outlasted the grace period); no payload means it failed before comparing anything.
    Emits the ``shardmigrate.drifted_shards`` gauge.
    """
    from airflow_provider_shardmigrate.core.drift import DriftReport
    from airflow_provider_shardmigrate.core.errors import ErrorCode
    from airflow_provider_shardmigrate.core.health import FleetHealth, HealthStatus

    if not isinstance(payload, dict) or "report" not in payload or "health" not in payload:
        return (
            {"report": None, "health": {"status": HealthStatus.UNHEALTHY.value, "description": "no drift report"}},
            f"[{ErrorCode.SCHEMA_COMPARISON_FAILED}] the drift sensor failed before producing a report; "
            "see its log (topology, baseline or depth settings)",
        )
    report = DriftReport.from_dict(payload["report"])
    health = FleetHealth.from_dict(payload["health"])
    _emit(report, health, dag_id)
    result = {"report": report.to_xcom(), "health": health.to_dict()}
    if not health.status.fails(fail_on):
        return result, None
    code = ErrorCode.DRIFT_DETECTED if report.has_drift else ErrorCode.SCHEMA_COMPARISON_FAILED
    return result, f"[{code}] {health.description}"


def _emit(report: Any, health: Any, dag_id: str) -> None:
    from airflow.sdk.observability import stats

    from airflow_provider_shardmigrate.observability import span

    tags = {"dag_id": dag_id, "baseline": report.baseline, "depth": report.depth.value, "health": health.status.value}
    stats.gauge(DRIFTED_SHARDS_GAUGE, len(report.drifted_shards), tags=tags)
    with span(
        "shardmigrate.drift",
        drift_detected=report.has_drift,
        drifted_shard_count=len(report.drifted_shards),
        baseline_shard_id=report.baseline,
        shard_count=len(report.shards_compared) + 1,
    ):
        pass


def build_drift_dag(
    topology: str | Path = "shards.yaml",
    *,
    dag_id: str = DRIFT_DAG_ID,
    base_dir: str | Path | None = None,
    poke_interval: float = 60.0,
    introspection_timeout: float = DEFAULT_TIMEOUT,
    max_workers: int = DEFAULT_MAX_WORKERS,
    **dag_kwargs: Any,
) -> DAG:
    """Build the scheduled drift DAG ``shardmigrate_drift``.

    :param topology: The topology file; a relative path resolves against the calling DAG file's folder.
    :param dag_id: Override the DAG id.
    :param base_dir: Folder for a relative ``topology`` instead of the caller's.
    :param poke_interval: Seconds between the sensor's pokes (each one introspects the fleet).
    :param introspection_timeout: Seconds one shard's introspection may take.
    :param max_workers: Shards introspected at once.
    :param dag_kwargs: Extra ``DAG`` arguments (``schedule`` overrides the topology's, tags, ...).
    """
    from airflow.sdk import DAG, TriggerRule, task

    from airflow_provider_shardmigrate.sensors.drift import REPORT_KEY, SchemaDriftSensor

    base = Path(base_dir) if base_dir is not None else _caller_dir()
    path = resolve(topology, base).resolve()
    shard_topology = load_topology(path)
    drift = shard_topology.drift
    kwargs = dag_defaults(
        schedule=drift.schedule,
        description=f"Schema drift across {len(shard_topology.active_shards)} active shard(s)"[:500],
        doc_md=_doc(shard_topology, path),
        params=drift_params(shard_topology),
        tags=["shardmigrate", "drift"],
    )
    kwargs.update(dag_kwargs)
    with DAG(dag_id, **kwargs) as dag:
        sensor = SchemaDriftSensor(
            task_id=SENSOR_TASK_ID,
            topology_path=str(path),
            baseline="{{ params.baseline }}",
            depth="{{ params.depth }}",
            critical_tables="{{ params.critical_tables | tojson }}",
            grace_period="{{ params.grace_period }}",
            fail_on="{{ params.fail_on }}",
            introspection_timeout=introspection_timeout,
            max_workers=max_workers,
            poke_interval=poke_interval,
            retries=0,
        )

        @task(task_id=PUBLISH_TASK_ID, trigger_rule=TriggerRule.ALL_DONE, retries=0)
        def publish(**context: Any) -> dict[str, Any]:
            from airflow.sdk.exceptions import AirflowFailException

            ti = context["ti"]
            payload = ti.xcom_pull(task_ids=SENSOR_TASK_ID, key=REPORT_KEY)
            fail_on = str(context["params"].get("fail_on") or shard_topology.drift.fail_on.value)
            result, failure = publish_drift(payload, dag_id=ti.dag_id, fail_on=fail_on)
            if failure is not None:
                ti.xcom_push(key="return_value", value=result)
                raise AirflowFailException(failure)
            return result

        sensor >> publish()
    return dag


def _doc(topology: Topology, path: Path) -> str:
    drift = topology.drift
    return "\n".join(
        [
            "### Schema drift",
            "",
            f"* topology: `{path}` ({len(topology.shards)} shard(s), {len(topology.active_shards)} active)",
            f"* baseline: **{drift.baseline or 'first active shard'}**, depth **{drift.depth.value}**",
            f"* critical tables: {', '.join(drift.critical_tables) or 'none'}",
            f"* grace period: {drift.grace_period:g}s; fail on: **{drift.fail_on.value}**",
            "",
            "`detect_drift` pokes until every active shard matches the baseline; drift lasting past the grace "
            "period fails it and `publish`, which writes the report and health to XCom -- any drift with "
            "`fail_on: degraded`, only unhealthy drift (a critical table, an unreadable shard) with "
            "`fail_on: unhealthy`.",
        ]
    )
