"""The e2e session: ONE real Airflow deployment (CeleryExecutor, two workers) shared by every e2e test.

The fixture is package-scoped: in a full ``make test`` run the deployment is stopped as soon as the last
test of tests/e2e is done, instead of idling (and taking CPU) while the rest of the suite runs.

The ``e2e`` fixture creates the shard databases (PostgreSQL + MariaDB, through tests/server_fixtures.py),
writes the dags folder (tests/e2e/scenarios.py), starts the deployment (tests/e2e/deployment.py) with a Redis
of its own as the broker, its metrics sent to a StatsD server of the test (tests/e2e/statsd.py) and its spans
to an OTLP receiver of the test (tests/e2e/otlp.py), and stops it -- processes, metadata DB, Redis, shard
databases -- when the session ends, also after a failure or Ctrl-C. Everything it writes stays under
``test-output/e2e/<timestamp>-<pid>/``; a failing test prints the log paths (and the last lines of every
process log).

A missing server (PostgreSQL, MariaDB, Redis, Chromium) FAILS the test that needs it, naming the server.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.e2e import scenarios
from tests.e2e.deployment import AirflowApi, Deployment, DeploymentError, check_servers, new_output_dir
from tests.e2e.otlp import OtlpReceiver
from tests.e2e.project import topology, write_drift_project, write_migrations_project
from tests.e2e.statsd import StatsdListener
from tests.server_fixtures import (
    PG_BASE_SCHEMA,
    MySqlFleet,
    MySqlServer,
    PostgresFleet,
    PostgresServer,
)

_CURRENT: dict[str, E2E] = {}
#: A task whose worker died is failed by the scheduler once its heartbeat is this old (Airflow's default is
#: 300 s); the supervisor heartbeats every second here (``[workers] min_heartbeat_interval = 1``).
TASK_HEARTBEAT_TIMEOUT_S = 20


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.e2e)
            item.add_marker(pytest.mark.slow)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The fault matrix measured in this run (tests/e2e/test_faults.py), as the README's table."""
    from tests.e2e import faults

    if faults.RESULTS:
        terminalreporter.write_sep("-", "e2e fault matrix (times measured, not asserted)")
        terminalreporter.write_line(faults.table())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    current = _CURRENT.get("e2e")
    if report.failed and current is not None and "e2e" in getattr(item, "fixturenames", ()):
        report.sections.append(("e2e deployment logs", current.deployment.describe_logs()))


@dataclass
class E2E:
    """What a test gets: the deployment, an authenticated API client, the shard fleets, an output folder."""

    deployment: Deployment
    api: AirflowApi
    pg: PostgresFleet
    my: MySqlFleet
    output_dir: Path
    drift_dag_id: str
    timings: dict[str, float] = field(default_factory=dict)
    statsd: StatsdListener | None = None
    otlp: OtlpReceiver | None = None

    def fleet(self, shard_id: str) -> PostgresFleet | MySqlFleet:
        return self.pg if shard_id in self.pg.databases else self.my

    def history(self, shard_id: str) -> dict[str, dict[str, Any]]:
        return self.fleet(shard_id).history(shard_id)

    def tables(self, shard_id: str) -> set[str]:
        return self.fleet(shard_id).tables(shard_id)

    def alive(self) -> None:
        """Fail with the component's log if a process of the deployment died."""
        self.deployment.check_alive()


def _build(
    output: Path, pg: PostgresFleet, my: MySqlFleet, statsd: StatsdListener, otlp: OtlpReceiver
) -> tuple[Deployment, list[str], str]:
    env: dict[str, str] = {
        "AIRFLOW__METRICS__STATSD_ON": "True",
        "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
        "AIRFLOW__METRICS__STATSD_PORT": str(statsd.port),
        "AIRFLOW__METRICS__STATSD_PREFIX": "airflow",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(TASK_HEARTBEAT_TIMEOUT_S),
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
        # A task instance's hostname is its Celery worker's node name (tests/e2e/hostname.py): the two workers
        # of this machine stand for two machines, and the lanes tests tell them apart through the REST API.
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": "tests.e2e.hostname.worker_hostname",
        **otlp.environment(),
    }
    fault_shards = scenarios.FAULT_PAIR + scenarios.FAULT_FLEET
    pg_shards = scenarios.REST_PG + scenarios.CONC_SHARDS + scenarios.DRIFT_SHARDS + scenarios.LANES_SHARDS
    pg_shards += [s for s in fault_shards if "-pg" in s]
    for shard_id in pg_shards:
        if shard_id == scenarios.CONC_FAILING:
            pg.add(shard_id, PG_BASE_SCHEMA + scenarios.CONC_POISON_ROW + "\n")
        else:
            pg.add(shard_id)
        env[f"AIRFLOW_CONN_{shard_id.replace('-', '_').upper()}"] = pg.conn_env(shard_id)
    for shard_id in scenarios.REST_MY + [s for s in fault_shards if "-my" in s]:
        my.add(shard_id)
        env[f"AIRFLOW_CONN_{shard_id.replace('-', '_').upper()}"] = my.conn_env(shard_id)
    dags = output / "dags"
    projects = [
        ("rest", scenarios.REST_SHARDS, scenarios.REST_MIGRATIONS),
        ("conc", scenarios.CONC_SHARDS, scenarios.CONC_MIGRATIONS),
        ("lanes", scenarios.LANES_SHARDS, scenarios.LANES_MIGRATIONS),
        ("fault_pair", scenarios.FAULT_PAIR, [scenarios.FAULT_KILL, scenarios.FAULT_TWICE]),
        (
            "fault_fleet",
            scenarios.FAULT_FLEET,
            [scenarios.FAULT_SCHEDULER, scenarios.FAULT_BROKER, scenarios.FAULT_BROKER_DOWN],
        ),
        # Connections created by tests/e2e/test_faults.py once its own servers run.
        ("fault_private", scenarios.FAULT_PRIVATE, [scenarios.FAULT_SERVER]),
    ]
    expected: list[str] = []
    for index, (name, shards, migrations) in enumerate(projects):
        # the first project's DAG file is the one-line file byte for byte; the others name their fleet DAGs
        fleet = None if index == 0 else name
        expected += write_migrations_project(dags / name, topology(shards), migrations, fleet=fleet)
    drift_dag = write_drift_project(dags / "drift", topology(scenarios.DRIFT_SHARDS, scenarios.DRIFT_SETTINGS))
    databases = {"postgres": list(pg.databases.values()), "mysql": list(my.databases.values())}
    deployment = Deployment(
        output_dir=output, dags_folder=dags, extra_env=env, shard_databases=databases, own_redis=True
    )
    return deployment, expected, drift_dag


@pytest.fixture(scope="package")
def e2e(postgres_server: PostgresServer, mysql_server: MySqlServer) -> Iterator[E2E]:
    missing = None
    try:
        check_servers(redis_needed=False)
    except DeploymentError as exc:
        missing = str(exc)
    if missing:
        pytest.fail(missing, pytrace=False)
    output = new_output_dir()
    monkeypatch = pytest.MonkeyPatch()
    pg, my = PostgresFleet(postgres_server, monkeypatch), MySqlFleet(mysql_server, monkeypatch)
    deployment: Deployment | None = None
    statsd = StatsdListener()
    otlp = OtlpReceiver()
    try:
        began = time.monotonic()
        deployment, expected, drift_dag = _build(output, pg, my, statsd, otlp)
        shards_ready = time.monotonic()
        failure = None
        try:
            deployment.start(timeout=300, expect_dags=expected)
        except DeploymentError as exc:
            failure = f"the e2e Airflow deployment did not start: {exc}"
        if failure:
            pytest.fail(failure, pytrace=False)
        ready = time.monotonic()
        print(
            f"\n[e2e] deployment up in {ready - began:.1f}s (shard DBs {shards_ready - began:.1f}s) at "
            f"{deployment.url}; output {output}"
        )
        current = E2E(
            deployment,
            deployment.api(),
            pg,
            my,
            output,
            drift_dag,
            {"shards_s": shards_ready - began, "start_s": ready - shards_ready},
            statsd,
            otlp,
        )
        _CURRENT["e2e"] = current
        yield current
    finally:
        _CURRENT.pop("e2e", None)
        if deployment is not None:
            forced = deployment.stop()
            left = deployment.leftovers()
            print(
                f"\n[e2e] deployment stopped{' (forced: ' + ', '.join(forced) + ')' if forced else ''}; "
                f"logs kept in {output}"
            )
            if left:
                print(f"[e2e] WARNING: processes still alive after stop: {left}")
        pg.drop_all()
        my.drop_all()
        monkeypatch.undo()
        statsd.close()
        otlp.close()
