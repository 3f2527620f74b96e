"""The fault matrix on the real Celery deployment, PostgreSQL and MariaDB shards side by side in each run.

Every scenario makes "a shard's DDL is running" a state the test controls: the migration's third statement
(``ALTER TABLE customers``) waits for a row lock the test holds on that shard (tests/e2e/faults.py), so the
fault always hits mid-DDL -- after statements 1-2, before 3-4 -- whatever the machine's load. Then it asserts
what the fault left on each shard, recovers the way README.md ("Retrying a shard") tells users to, and
asserts the end state: the migration's traces on every shard exactly once (a table that cannot be created
twice, one ``before`` and one ``after`` log row, the ALTER's column), the history row ``applied`` with
4 of 4 statements, the run ``success``. The time from the fault to that converged state is measured,
printed and collected into the table in README.md -- never asserted.

1. a Celery worker SIGKILLed while the DDL waits;
2. the shard's database server restarted mid-DDL (servers the test starts itself, tests/e2e/servers.py);
3. the scheduler restarted mid-rollout;
4. Redis (the deployment's own broker) restarted mid-rollout, and down while the scheduler queues shards;
5. two REST triggers of the same migration at once.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e import scenarios
from tests.e2e.conftest import E2E, TASK_HEARTBEAT_TIMEOUT_S
from tests.e2e.deployment import AirflowApi
from tests.e2e.faults import (
    DONE_LOG,
    STEPS_TOTAL,
    FaultResult,
    ShardDb,
    clear_shards,
    record,
    shard_tis,
    wait_until,
)
from tests.e2e.project import MigrationSpec, migration_dag_id
from tests.e2e.servers import MariaDbInstance, PostgresInstance
from tests.e2e.timeline import ts
from tests.server_fixtures import MYSQL_BASE_SCHEMA, PG_BASE_SCHEMA

#: Failure bound of every wait below (a state that does not come within it is a failure, not a slow run).
BOUND_S = 180.0
#: The shards (topology order = map index order) of each fault DAG.
SHARDS_OF = {
    migration_dag_id(spec.id): shards
    for shards, specs in (
        (scenarios.FAULT_PAIR, (scenarios.FAULT_KILL, scenarios.FAULT_TWICE)),
        (scenarios.FAULT_FLEET, (scenarios.FAULT_SCHEDULER, scenarios.FAULT_BROKER, scenarios.FAULT_BROKER_DOWN)),
        (scenarios.FAULT_PRIVATE, (scenarios.FAULT_SERVER,)),
    )
    for spec in specs
}


def tis_of(api: AirflowApi, dag_id: str, run_id: str) -> dict[str, dict[str, Any]]:
    return shard_tis(api, dag_id, run_id, SHARDS_OF[dag_id])


@pytest.fixture(autouse=True)
def _deployment_back_up(e2e: E2E) -> Iterator[None]:
    """After each scenario -- also a failed one -- every component and the broker run again."""
    yield
    started = e2e.deployment.ensure_up(BOUND_S)
    if started:
        print(f"[e2e fault] started again after the test: {', '.join(started)}")


def shared_shard(e2e: E2E, shard_id: str) -> ShardDb:
    """A shard on the machine's PostgreSQL / MariaDB (created by the e2e fixture)."""
    if shard_id in e2e.pg.databases:
        return ShardDb(shard_id, "postgres", e2e.pg.databases[shard_id], functools.partial(e2e.pg.connect, shard_id))
    return ShardDb(shard_id, "mysql", e2e.my.databases[shard_id], functools.partial(e2e.my.connect, shard_id))


def name_of(migration: MigrationSpec) -> str:
    return migration.id.removeprefix("e2e_fault_")


def untouched(state: dict[str, Any]) -> bool:
    return state["log"] is None and not state["column"] and state["history"] is None


def converged(state: dict[str, Any], run_id: str) -> bool:
    return (
        state["log"] == DONE_LOG
        and state["column"]
        and state["history"] == ("applied", STEPS_TOTAL, STEPS_TOTAL)
        and state["run_id"] == run_id
    )


def wait_converged(
    e2e: E2E, dag_id: str, run_id: str, shards: list[ShardDb], migration: MigrationSpec, since: float
) -> tuple[dict[str, Any], dict[str, float]]:
    """Wait for the run to end; return it and, per shard, the seconds from ``since`` until the shard's history
    said ``applied`` (polled alongside the run state)."""
    applied: dict[str, float] = {}
    end = time.monotonic() + BOUND_S
    while True:
        run = e2e.api.run(dag_id, run_id)
        for shard in shards:
            row = shard.history(migration.id) if shard.shard_id not in applied else None
            if row is not None and row["status"] == "applied":
                applied[shard.shard_id] = time.monotonic() - since
        if run["state"] in ("success", "failed"):
            for shard in shards:  # applied between the last poll and the run's end
                applied.setdefault(shard.shard_id, time.monotonic() - since)
            return run, applied
        e2e.alive()
        assert time.monotonic() < end, f"run {run_id} still {run['state']}: {tis_of(e2e.api, dag_id, run_id)}"
        time.sleep(0.2)


def assert_converged_once(
    e2e: E2E, dag_id: str, run_id: str, shards: list[ShardDb], migration: MigrationSpec
) -> dict[str, Any]:
    """The end state every scenario must reach; returns the report."""
    name = name_of(migration)
    for shard in shards:
        state = shard.state(name, migration.id)
        assert converged(state, run_id), (shard.shard_id, state)
    report = e2e.api.xcom(dag_id, run_id, "report")
    assert report["all_succeeded"] is True and report["failed_count"] == 0, report
    return report


def blocked(shards: list[ShardDb], count: int) -> bool:
    return sum(shard.waiting_ddl() for shard in shards) == count


# -- 1. a Celery worker SIGKILLed mid-DDL ----------------------------------------------------------------
def test_worker_sigkill_mid_ddl_converges_after_clearing(e2e: E2E) -> None:
    """Airflow does not retry the task (retries = 0, and a lost worker's Celery message is only redelivered
    after Celery's visibility timeout, 24 h by default): the scheduler fails it once its heartbeat is older than
    ``task_instance_heartbeat_timeout``, the report calls the shard failed "without reporting a result",
    the run fails. The user clears the shard tasks (README "Retrying a shard"); PostgreSQL re-runs the
    whole transaction, MariaDB resumes after statement 2 -- every statement ran exactly once."""
    migration, api, deployment = scenarios.FAULT_KILL, e2e.api, e2e.deployment
    dag_id, name = migration_dag_id(migration.id), name_of(migration)
    pg, my = (shared_shard(e2e, s) for s in scenarios.FAULT_PAIR)
    with pg.row_lock() as pg_lock, my.row_lock() as my_lock:
        run_id = api.trigger(dag_id)["dag_run_id"]
        wait_until(
            "both shards' ALTER waiting for the test's locks", lambda: blocked([pg, my], 2), BOUND_S, alive=e2e.alive
        )
        # Mid-DDL: MariaDB committed statements 1-2 and says so; PostgreSQL's open transaction shows nothing.
        assert my.state(name, migration.id) == {
            "log": ["before"],
            "column": False,
            "history": ("running", 2, 4),
            "run_id": run_id,
        }
        assert untouched(pg.state(name, migration.id))
        tis = tis_of(api, dag_id, run_id)
        assert {s: t["state"] for s, t in tis.items()} == {"fp-pg": "running", "fp-my": "running"}, tis
        hosts = {}
        for shard_id, ti in tis.items():
            component = deployment.component_of(int(ti["pid"]))
            assert component is not None and component.name.startswith("worker-"), (shard_id, ti["pid"])
            hosts[shard_id] = component.name
        fault = time.monotonic()
        killed = {worker: deployment.kill_component(worker) for worker in sorted(set(hosts.values()))}
        for worker in killed:  # like a supervisor (systemd, Kubernetes) bringing the worker back
            deployment.start_component(worker)

        # PostgreSQL: once our lock goes, the orphaned backend finishes the ALTER, finds its client gone and
        # rolls the whole transaction back: nothing half-done.
        pg_lock.release()
        wait_until("the killed worker's PostgreSQL session to end", lambda: pg.ours_connected() == 0, BOUND_S)
        pg_orphan_s = time.monotonic() - fault
        assert untouched(pg.state(name, migration.id)), pg.state(name, migration.id)
        # MariaDB: keep our lock until the killed worker's session is gone, so its ALTER cannot complete
        # unrecorded (README: Known limits). The server checks the client of a statement waiting for a
        # metadata lock and ends the session by itself; per_shard_timeout (the lock wait bound the engine
        # set in the server) would end it at the latest.
        bound = float(migration.options["per_shard_timeout"]) + BOUND_S
        wait_until("the killed worker's MariaDB session to end", lambda: my.ours_connected() == 0, bound)
        my_orphan_s = time.monotonic() - fault
        my_lock.release()
    assert my.state(name, migration.id) == {
        "log": ["before"],
        "column": False,
        "history": ("running", 2, 4),
        "run_id": run_id,
    }

    def both_failed() -> dict[str, dict[str, Any]] | None:
        now = tis_of(api, dag_id, run_id)
        return now if all(t["state"] == "failed" for t in now.values()) else None

    failed = wait_until(
        "the scheduler to fail both tasks (heartbeat timeout)",
        both_failed,
        TASK_HEARTBEAT_TIMEOUT_S + BOUND_S,
        alive=e2e.alive,
    )
    detected = time.monotonic() - fault
    run = api.wait_run(dag_id, run_id, timeout=BOUND_S, alive=e2e.alive)
    assert run["state"] == "failed"
    report = api.xcom(dag_id, run_id, "report")
    for shard_id in scenarios.FAULT_PAIR:
        assert report["shards"][shard_id]["outcome"] == "failed", report
        assert "without reporting a result" in report["shards"][shard_id]["error_message"], report
    deployment.wait_healthy(BOUND_S)

    cleared = clear_shards(api, dag_id, run_id, [t["map_index"] for t in failed.values()])
    assert {("shards.apply", t["map_index"]) for t in failed.values()} <= cleared
    run, applied = wait_converged(e2e, dag_id, run_id, [pg, my], migration, fault)
    assert run["state"] == "success", tis_of(api, dag_id, run_id)
    assert_converged_once(e2e, dag_id, run_id, [pg, my], migration)
    tries = {s: t["try_number"] for s, t in tis_of(api, dag_id, run_id).items()}
    assert tries == {"fp-pg": 2, "fp-my": 2}, tries

    workers = ", ".join(f"{w} ({', '.join(s for s, h in hosts.items() if h == w)})" for w in killed)
    happened = (
        f"{workers} SIGKILLed (whole process tree) while the ALTER waited; no retry: tasks failed by the heartbeat "
        f"timeout ({TASK_HEARTBEAT_TIMEOUT_S} s) {detected:.0f} s after the kill, run failed; user cleared both"
    )
    record(
        FaultResult(
            "worker SIGKILL mid-DDL",
            "PostgreSQL",
            happened,
            "after the kill: nothing (transaction rolled back); after clearing: applied once, 4/4, run success",
            applied[pg.shard_id],
            f"orphaned session gone {pg_orphan_s:.1f} s after the kill (lock released at once)",
        ),
        e2e.output_dir,
    )
    record(
        FaultResult(
            "worker SIGKILL mid-DDL",
            "MariaDB",
            happened + "; MariaDB ended the dead worker's waiting session by itself first",
            "after the kill: `running` 2/4 (statements 1-2 done); after clearing: resumed at 3, applied once, 4/4, "
            "run success",
            applied[my.shard_id],
            f"orphaned session gone {my_orphan_s:.1f} s after the kill (per_shard_timeout 20 s as the bound)",
        ),
        e2e.output_dir,
    )


# -- 2. the shard's database server restarted mid-DDL ----------------------------------------------------
@pytest.fixture(scope="module")
def private_shards(e2e: E2E) -> Iterator[dict[str, tuple[ShardDb, Any]]]:
    """fr-pg and fr-my on a PostgreSQL and a MariaDB server this test starts (and may restart), their
    Airflow connections created through the REST API."""
    folder = e2e.output_dir / "servers"
    pg_server, my_server = PostgresInstance(folder / "postgres"), MariaDbInstance(folder / "mariadb")
    api = e2e.api
    created: list[str] = []
    try:
        for server in (pg_server, my_server):
            server.start()
            e2e.deployment.register_server(server)
        pg_id, my_id = scenarios.FAULT_PRIVATE
        database = "shard_fr"
        with pg_server.connect() as conn:
            conn.execute(f"CREATE DATABASE {database}")
        with pg_server.connect(database) as conn:
            for statement in PG_BASE_SCHEMA.strip().split(";\n"):
                conn.execute(statement)
        conn = my_server.connect()
        try:
            cursor = conn.cursor()
            cursor.execute(f"CREATE DATABASE {database}")
            cursor.execute(f"USE {database}")
            for statement in MYSQL_BASE_SCHEMA.strip().split(";\n"):
                cursor.execute(statement)
        finally:
            conn.close()
        for shard_id, conn_type, server, login in (
            (pg_id, "postgres", pg_server, "postgres"),
            (my_id, "mysql", my_server, "root"),
        ):
            conn_id = shard_id.replace("-", "_")
            body = {
                "connection_id": conn_id,
                "conn_type": conn_type,
                "host": "127.0.0.1",
                "port": server.port,
                "login": login,
                "schema": database,
            }
            api.request("POST", "/api/v2/connections", json=body, expect=201)
            created.append(conn_id)
        yield {
            pg_id: (ShardDb(pg_id, "postgres", database, functools.partial(pg_server.connect, database)), pg_server),
            my_id: (ShardDb(my_id, "mysql", database, functools.partial(my_server.connect, database)), my_server),
        }
    finally:
        for conn_id in created:
            with contextlib.suppress(Exception):
                api.request("DELETE", f"/api/v2/connections/{conn_id}")
        for server in (pg_server, my_server):
            server.remove()


def test_shard_server_restart_mid_ddl_converges_after_clearing(
    e2e: E2E, private_shards: dict[str, tuple[ShardDb, Any]]
) -> None:
    """A restart cuts the shard task's session mid-statement: the task fails at once with the engine's error
    (no retry); PostgreSQL rolled back, MariaDB keeps its ``running`` row at statement 2. Clearing the shards
    once the servers are back converges them, each statement run once."""
    migration, api = scenarios.FAULT_SERVER, e2e.api
    dag_id, name = migration_dag_id(migration.id), name_of(migration)
    (pg, pg_server), (my, my_server) = (private_shards[s] for s in scenarios.FAULT_PRIVATE)
    with pg.row_lock(), my.row_lock():
        run_id = api.trigger(dag_id)["dag_run_id"]
        wait_until(
            "both shards' ALTER waiting for the test's locks", lambda: blocked([pg, my], 2), BOUND_S, alive=e2e.alive
        )
        fault = time.monotonic()
        pg_server.restart()  # a fast shutdown: sessions terminated, open transactions rolled back
        my_server.restart()  # a clean shutdown: client sessions killed
    # (the test's own lock sessions ended with the restarts)
    run = api.wait_run(dag_id, run_id, timeout=BOUND_S, alive=e2e.alive)
    failed_after = time.monotonic() - fault
    tis = tis_of(api, dag_id, run_id)
    assert run["state"] == "failed" and {s: t["state"] for s, t in tis.items()} == {
        "fr-pg": "failed",
        "fr-my": "failed",
    }, tis
    statuses = {s: api.xcom(dag_id, run_id, "shards.apply", t["map_index"]) for s, t in tis.items()}
    for status in statuses.values():
        assert status["outcome"] == "failed" and status["error_code"] == "shardmigrate.migration_failed", status
    assert untouched(pg.state(name, migration.id)), pg.state(name, migration.id)
    my_state = my.state(name, migration.id)
    assert my_state["log"] == ["before"] and not my_state["column"], my_state
    assert my_state["history"] in (("running", 2, 4), ("failed", 2, 4)), my_state

    clear_shards(api, dag_id, run_id, [t["map_index"] for t in tis.values()])
    run, applied = wait_converged(e2e, dag_id, run_id, [pg, my], migration, fault)
    assert run["state"] == "success", tis_of(api, dag_id, run_id)
    assert_converged_once(e2e, dag_id, run_id, [pg, my], migration)

    happened = (
        "server restarted while the ALTER waited; task failed at once (`migration_failed`), no retry; run failed "
        f"{failed_after:.0f} s after the restart; user cleared both"
    )
    record(
        FaultResult(
            "shard server restart mid-DDL",
            "PostgreSQL",
            happened,
            "after the restart: nothing (rolled back); after clearing: applied once, 4/4, run success",
            applied[pg.shard_id],
            statuses["fr-pg"]["error_message"] or "",
        ),
        e2e.output_dir,
    )
    record(
        FaultResult(
            "shard server restart mid-DDL",
            "MariaDB",
            happened,
            f"after the restart: `{my_state['history'][0]}` 2/4; after clearing: resumed at 3, applied once, 4/4, "
            "run success",
            applied[my.shard_id],
            statuses["fr-my"]["error_message"] or "",
        ),
        e2e.output_dir,
    )


# -- 3. / 4. the scheduler or Redis restarted mid-rollout ---------------------------------------------
def _mid_rollout(e2e: E2E, migration: MigrationSpec) -> tuple[str, str, list[ShardDb], contextlib.ExitStack]:
    """Trigger ``migration`` on the fault fleet (4 shards, 2 at a time) with every shard's ALTER blocked;
    return once two shards are running (blocked) and two waiting. The caller releases the locks."""
    dag_id = migration_dag_id(migration.id)
    shards = [shared_shard(e2e, s) for s in scenarios.FAULT_FLEET]
    stack = contextlib.ExitStack()
    for shard in shards:
        stack.enter_context(shard.row_lock())
    run_id = e2e.api.trigger(dag_id)["dag_run_id"]
    wait_until("two shards' ALTER waiting for the test's locks", lambda: blocked(shards, 2), BOUND_S, alive=e2e.alive)
    states = [t["state"] for t in tis_of(e2e.api, dag_id, run_id).values()]
    assert states.count("running") == 2 and all(s in (None, "scheduled", "running") for s in states), states
    return dag_id, run_id, shards, stack


def _record_fleet(e2e: E2E, scenario: str, happened: str, shards: list[ShardDb], applied: dict[str, float]) -> None:
    for label in ("PostgreSQL", "MariaDB"):
        times = [applied[s.shard_id] for s in shards if s.label == label]
        final = "applied once on both shards, 4/4, run success, no task retried or cleared"
        record(FaultResult(scenario, label, happened, final, max(times)), e2e.output_dir)


def test_scheduler_restart_mid_rollout_converges_by_itself(e2e: E2E) -> None:
    """The running shard tasks do not need the scheduler (they report to the api-server): they finish while
    it is down; the restarted scheduler schedules the two waiting shards and the run succeeds untouched."""
    migration, api, deployment = scenarios.FAULT_SCHEDULER, e2e.api, e2e.deployment
    dag_id, run_id, shards, locks = _mid_rollout(e2e, migration)
    with locks:
        running = [s for s, t in tis_of(api, dag_id, run_id).items() if t["state"] == "running"]
        fault = time.monotonic()
        stop_s = deployment.stop_component("scheduler")
    wait_until(
        "the two running shards to succeed while the scheduler is down",
        lambda: all(tis_of(api, dag_id, run_id)[s]["state"] == "success" for s in running),
        BOUND_S,
        alive=e2e.alive,
    )
    assert deployment.component("scheduler").down
    deployment.start_component("scheduler")
    run, applied = wait_converged(e2e, dag_id, run_id, shards, migration, fault)
    assert run["state"] == "success", tis_of(api, dag_id, run_id)
    assert_converged_once(e2e, dag_id, run_id, shards, migration)
    tries = {s: t["try_number"] for s, t in tis_of(api, dag_id, run_id).items()}
    assert set(tries.values()) == {1}, tries
    deployment.wait_healthy(BOUND_S)
    happened = (
        f"scheduler stopped (SIGTERM, {stop_s:.1f} s) with {', '.join(running)} running and 2 shards waiting; "
        "running shards finished meanwhile; scheduler started again"
    )
    _record_fleet(e2e, "scheduler restart mid-rollout", happened, shards, applied)


def test_redis_restart_mid_rollout_converges_by_itself(e2e: E2E) -> None:
    """The broker restarts (its AOF keeps what it held) while two shards' DDL runs; the workers and the
    scheduler reconnect, the two waiting shards go through the restarted broker, the run succeeds."""
    migration, api, deployment = scenarios.FAULT_BROKER, e2e.api, e2e.deployment
    assert deployment.redis is not None, "the e2e deployment runs a Redis of its own"
    dag_id, run_id, shards, locks = _mid_rollout(e2e, migration)
    with locks:
        fault = time.monotonic()
        began = time.monotonic()
        deployment.redis.restart()
        restart_s = time.monotonic() - began
    run, applied = wait_converged(e2e, dag_id, run_id, shards, migration, fault)
    assert run["state"] == "success", tis_of(api, dag_id, run_id)
    assert_converged_once(e2e, dag_id, run_id, shards, migration)
    tries = {s: t["try_number"] for s, t in tis_of(api, dag_id, run_id).items()}
    assert set(tries.values()) == {1}, tries
    deployment.wait_healthy(BOUND_S)
    happened = (
        f"the deployment's Redis restarted ({restart_s:.1f} s down) with 2 shards running and 2 waiting; locks "
        "released once it was back"
    )
    _record_fleet(e2e, "Redis restart mid-rollout", happened, shards, applied)


def test_redis_down_while_shards_are_queued_converges_after_clearing(e2e: E2E) -> None:
    """Not a quick restart: the broker stays down while the scheduler hands out the next shards. The running
    shards still finish (tasks report to the api-server, not through Redis), but the CeleryExecutor fails
    every task it cannot publish (after Celery's publish retries, about a second): the two waiting shards
    fail without having run -- untouched -- and so does everything after them; the run fails. Once Redis
    is back, clearing the failed shards converges the fleet."""
    migration, api, deployment = scenarios.FAULT_BROKER_DOWN, e2e.api, e2e.deployment
    assert deployment.redis is not None, "the e2e deployment runs a Redis of its own"
    name = name_of(migration)
    dag_id, run_id, shards, locks = _mid_rollout(e2e, migration)
    with locks:
        running = {s for s, t in tis_of(api, dag_id, run_id).items() if t["state"] == "running"}
        fault = time.monotonic()
        deployment.redis.stop()
    run = api.wait_run(dag_id, run_id, timeout=BOUND_S, alive=e2e.alive)
    down_s = time.monotonic() - fault
    deployment.redis.start()
    tis = tis_of(api, dag_id, run_id)
    assert run["state"] == "failed", tis
    assert {s for s, t in tis.items() if t["state"] == "success"} == running, tis
    never_ran = {s for s, t in tis.items() if t["state"] == "failed"}
    assert never_ran == set(scenarios.FAULT_FLEET) - running, tis
    by_id = {shard.shard_id: shard for shard in shards}
    for shard_id in never_ran:
        assert untouched(by_id[shard_id].state(name, migration.id)), (
            shard_id,
            by_id[shard_id].state(name, migration.id),
        )
    deployment.wait_healthy(BOUND_S)

    clear_shards(api, dag_id, run_id, [tis[s]["map_index"] for s in never_ran])
    run, applied = wait_converged(e2e, dag_id, run_id, shards, migration, fault)
    assert run["state"] == "success", tis_of(api, dag_id, run_id)
    assert_converged_once(e2e, dag_id, run_id, shards, migration)
    happened = (
        f"Redis stopped with {', '.join(sorted(running))} running and 2 shards waiting, locks released; the "
        f"running shards finished, the 2 queued next failed unpublished (never ran); run failed {down_s:.0f} s "
        "after the stop; Redis started, user cleared the 2"
    )
    for label in ("PostgreSQL", "MariaDB"):
        times = [applied[s.shard_id] for s in shards if s.label == label]
        final = "the 2 failed shards untouched until cleared; then applied once everywhere, 4/4, run success"
        record(FaultResult("Redis down while shards are queued", label, happened, final, max(times)), e2e.output_dir)


# -- 5. two REST triggers of the same migration at once ---------------------------------------------
def test_two_rest_triggers_at_once_apply_once(e2e: E2E) -> None:
    """Both POSTs succeed (two runs); the DAG's ``max_active_runs = 1`` queues the second until the first
    ends, and the shard lock + history make it report ``already_applied``: each statement ran once."""
    migration = scenarios.FAULT_TWICE
    dag_id = migration_dag_id(migration.id)
    shards = [shared_shard(e2e, s) for s in scenarios.FAULT_PAIR]
    token = e2e.deployment.token()
    clients = [AirflowApi(e2e.deployment.url, token) for _ in range(2)]
    barrier = threading.Barrier(2)
    created: list[dict[str, Any]] = []

    def trigger(client: AirflowApi, index: int) -> None:
        barrier.wait()
        created.append(client.trigger(dag_id, run_id=f"e2e_twice_{index}_{e2e.deployment.run_token}"))

    threads = [threading.Thread(target=trigger, args=(client, i)) for i, client in enumerate(clients)]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(created) == 2, created
    runs = {
        r["dag_run_id"]: e2e.api.wait_run(dag_id, r["dag_run_id"], timeout=BOUND_S, alive=e2e.alive) for r in created
    }
    converge_s = time.monotonic() - began
    assert {r["state"] for r in runs.values()} == {"success"}, runs
    name = name_of(migration)
    applier = {shard.state(name, migration.id)["run_id"] for shard in shards}
    assert len(applier) == 1 and applier <= set(runs), applier
    (first,) = applier
    (second,) = set(runs) - applier
    for shard in shards:
        assert converged(shard.state(name, migration.id), first), shard.state(name, migration.id)
    outcomes = {
        run_id: {s: v["outcome"] for s, v in e2e.api.xcom(dag_id, run_id, "report")["shards"].items()}
        for run_id in runs
    }
    assert outcomes == {
        first: dict.fromkeys(scenarios.FAULT_PAIR, "succeeded"),
        second: dict.fromkeys(scenarios.FAULT_PAIR, "already_applied"),
    }, outcomes
    assert ts(runs[second]["start_date"]) >= ts(runs[first]["end_date"]), "max_active_runs = 1: the second waited"
    happened = "two POST dagRuns at the same instant: both accepted (2 runs); max_active_runs = 1 queued the second"
    final = "first run applied once (4/4); second run success with every shard `already_applied`"
    for label in ("PostgreSQL", "MariaDB"):
        record(FaultResult("two REST triggers at once", label, happened, final, converge_s), e2e.output_dir)
