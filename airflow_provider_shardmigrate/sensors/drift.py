"""``SchemaDriftSensor``: wait until the fleet's schemas agree; fail when they have disagreed too long.

Drift is normal for a moment -- a rolling migration leaves shards on different versions for minutes --
so one poke that sees drift must not alert. The sensor keeps poking (reschedule mode, so no worker
slot is held in between) and fails only once drift has lasted past ``grace_period``.

When drift was first seen is kept in the task's ``task_state_store`` (Airflow 3.3), which survives
reschedules (each poke is a new process) and is scoped to this task instance, so the next scheduled
run starts a fresh grace period. The stored value carries the try number: clearing the task to re-check
starts a fresh grace period too. Without a state store (older runtimes, direct ``execute`` calls) the
sensor falls back to the first reschedule date Airflow records, or its own first poke.

Every poke pushes the compact report and health under the XCom key ``drift_report`` before deciding,
so the report is there for the publish step whether the sensor succeeds or fails.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue

from airflow_provider_shardmigrate.core.errors import ErrorCode, ShardMigrateError
from airflow_provider_shardmigrate.engines.introspect import DEFAULT_MAX_WORKERS, DEFAULT_TIMEOUT

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_shardmigrate.core.drift import DriftReport
    from airflow_provider_shardmigrate.core.health import FleetHealth
    from airflow_provider_shardmigrate.core.topology import Topology

#: XCom key of the latest poke's ``{"report": ..., "health": ...}``.
REPORT_KEY = "drift_report"
#: task_state_store key of ``{"try": n, "at": iso}``: when this try first saw drift.
FIRST_SEEN_KEY = "drift_first_seen"


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def parse_tables(value: Any) -> tuple[str, ...] | None:
    """Critical tables from a list, a JSON list (a rendered ``tojson`` template) or a comma-separated string."""
    if _blank(value):
        return None
    if isinstance(value, str):
        text = value.strip()
        value = json.loads(text) if text.startswith("[") else text.split(",")
    return tuple(str(item).strip() for item in value if str(item).strip())


class SchemaDriftSensor(BaseSensorOperator):
    """Poke until every active shard's schema matches the baseline's; fail once drift outlasts the grace period.

    Each poke introspects the whole fleet (concurrently, each shard bounded by ``introspection_timeout``
    enforced in its database) and compares it at ``depth``. A fleet healthier than ``fail_on`` (no drift,
    or only degraded drift with ``fail_on: unhealthy``): the sensor succeeds and returns ``{"report",
    "health"}``. Otherwise it reschedules, and once the fleet has been out of agreement for ``grace_period``
    seconds it fails (no retry) with code
    ``shardmigrate.drift_detected`` -- or ``shardmigrate.schema_comparison_failed`` when shards could
    not be read at all. A wrong setting (unknown baseline, bad depth, broken topology) fails at once.

    :param topology_path: Path of the topology file, re-read at every poke.
    :param baseline: Baseline shard id; empty: the topology's ``drift.baseline``, else the first active shard.
    :param depth: ``tables_only``, ``tables_and_columns`` or ``full``; empty: the topology's ``drift.depth``.
    :param critical_tables: Tables whose drift makes the fleet unhealthy (a list, a JSON list or a
        comma-separated string); empty: the topology's ``drift.critical_tables``.
    :param grace_period: Seconds drift may last before the sensor fails; empty: the topology's
        ``drift.grace_period``.
    :param fail_on: ``degraded`` (any drift) or ``unhealthy`` (only drift in a critical table, or a shard that
        could not be read) fails once it outlasts the grace period; below it the sensor succeeds at once with
        the report; empty: the topology's ``drift.fail_on``.
    :param introspection_timeout: Seconds one shard's introspection may take.
    :param max_workers: Shards introspected at once.
    """

    template_fields: Sequence[str] = (
        "topology_path",
        "baseline",
        "depth",
        "critical_tables",
        "grace_period",
        "fail_on",
    )
    ui_color = "#f3e6cf"

    def __init__(
        self,
        *,
        topology_path: str,
        baseline: str | None = None,
        depth: str | None = None,
        critical_tables: Sequence[str] | str | None = None,
        grace_period: float | str | None = None,
        fail_on: str | None = None,
        introspection_timeout: float = DEFAULT_TIMEOUT,
        max_workers: int = DEFAULT_MAX_WORKERS,
        mode: str = "reschedule",
        poke_interval: float = 60.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(mode=mode, poke_interval=poke_interval, **kwargs)
        self.topology_path = topology_path
        self.baseline = baseline
        self.depth = depth
        self.critical_tables = critical_tables
        self.grace_period = grace_period
        self.fail_on = fail_on
        self.introspection_timeout = introspection_timeout
        self.max_workers = max_workers
        self._first_poke: datetime | None = None

    # -- settings -------------------------------------------------------------------------------------
    def _settings(self, topology: Topology) -> tuple[str | None, str, tuple[str, ...], float]:
        from airflow_provider_shardmigrate.core.errors import SchemaComparisonFailedError
        from airflow_provider_shardmigrate.core.topology import DriftDepth

        drift = topology.drift
        depth = drift.depth.value if _blank(self.depth) else str(self.depth).strip()
        try:
            DriftDepth(depth)
        except ValueError:
            allowed = ", ".join(d.value for d in DriftDepth)
            raise SchemaComparisonFailedError(f"unknown drift depth '{depth}'; use one of: {allowed}") from None
        critical = parse_tables(self.critical_tables)
        try:
            grace = drift.grace_period if _blank(self.grace_period) else float(self.grace_period)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise SchemaComparisonFailedError(f"grace_period must be seconds, got {self.grace_period!r}") from None
        if grace < 0:
            raise SchemaComparisonFailedError(f"grace_period must be >= 0, got {grace:g}")
        baseline = None if _blank(self.baseline) else str(self.baseline).strip()
        return baseline, depth, critical if critical is not None else drift.critical_tables, grace

    def threshold(self, topology: Topology) -> str:
        """``fail_on`` as set on the task (the trigger form), else the topology's ``drift.fail_on``."""
        from airflow_provider_shardmigrate.core.errors import SchemaComparisonFailedError
        from airflow_provider_shardmigrate.core.topology import DriftFailOn

        value = topology.drift.fail_on.value if _blank(self.fail_on) else str(self.fail_on).strip()
        try:
            return DriftFailOn(value).value
        except ValueError:
            allowed = ", ".join(f.value for f in DriftFailOn)
            raise SchemaComparisonFailedError(f"unknown fail_on '{value}'; use one of: {allowed}") from None

    # -- poking ---------------------------------------------------------------------------------------
    def detect(self, context: Context) -> tuple[DriftReport, FleetHealth, float, str]:
        """Compare the fleet once: ``(report, health, grace_period, fail_on)``; raises ShardMigrateError for bad
        settings."""
        from airflow_provider_shardmigrate.core.health import assess_health
        from airflow_provider_shardmigrate.core.topology import load_topology
        from airflow_provider_shardmigrate.engines.introspect import detect_drift

        topology = load_topology(self.topology_path)
        baseline, depth, critical, grace = self._settings(topology)
        fail_on = self.threshold(topology)
        report = detect_drift(
            topology,
            depth=depth,
            baseline=baseline,
            timeout=self.introspection_timeout,
            max_workers=self.max_workers,
        )
        return report, assess_health(report, critical), grace, fail_on

    def poke(self, context: Context) -> bool | PokeReturnValue:
        from airflow.sdk.exceptions import AirflowFailException

        try:
            report, health, grace, fail_on = self.detect(context)
        except ShardMigrateError as exc:  # a setting that no amount of waiting fixes
            raise AirflowFailException(str(exc)) from exc
        payload = {"report": report.to_xcom(), "health": health.to_dict()}
        context["ti"].xcom_push(key=REPORT_KEY, value=payload)
        if not health.status.fails(fail_on):
            if report.has_drift:
                self.log.warning("%s -- not failing: drift.fail_on is %s", health.description, fail_on)
            else:
                self.log.info("%s", health.description)
            return PokeReturnValue(is_done=True, xcom_value=payload)
        now = datetime.now(UTC)
        first_seen = self._first_seen(context, now)
        lasted = (now - first_seen).total_seconds()
        self.log.warning("fleet not in agreement for %.0fs (grace period %gs): %s", lasted, grace, health.description)
        for shard, diffs in list(report.diffs.items())[:10]:  # enough to act on; the full list is in XCom
            for diff in diffs[:10]:
                self.log.info("  %s: table %s %s %s", shard, diff.table, diff.kind.value, "; ".join(diff.details()))
        if lasted >= grace:
            code = ErrorCode.DRIFT_DETECTED if report.has_drift else ErrorCode.SCHEMA_COMPARISON_FAILED
            raise AirflowFailException(
                f"[{code}] schema drift has lasted {lasted:.0f}s, past the grace period of {grace:g}s: "
                f"{health.description}"
            )
        return False

    def _first_seen(self, context: Context, now: datetime) -> datetime:
        """When this try of the task first saw the fleet out of agreement (``now`` on the first time)."""
        ti = context["ti"]
        try_number = int(getattr(ti, "try_number", 0) or 0)
        store = context.get("task_state_store")
        if store is not None:
            try:
                stored = store.get(FIRST_SEEN_KEY)
                if isinstance(stored, dict) and stored.get("try") == try_number and stored.get("at"):
                    return datetime.fromisoformat(str(stored["at"]))
                store.set(FIRST_SEEN_KEY, {"try": try_number, "at": now.isoformat()})
                return now
            except Exception as exc:  # no state store here: fall back below
                self.log.debug("task_state_store unavailable (%s); using the first poke time", exc)
        if self.reschedule:
            try:
                first = ti.get_first_reschedule_date(context)
            except Exception:
                first = None
            if first is not None:
                return min(first, now)
        if self._first_poke is None:
            self._first_poke = now
        return self._first_poke
