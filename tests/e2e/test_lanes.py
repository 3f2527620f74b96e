"""Lanes execution on the real Celery deployment (two workers, four slots each): lanes spread over both workers,
a failure in one lane stops the lanes on the other worker, and progress shows the shards a lane has finished
while that lane is still running.

Every shard's DDL starts with ``ALTER TABLE customers ADD COLUMN``, which waits for the row lock the test holds
on ``customers`` (``SELECT ... FOR UPDATE`` in an open transaction): when a shard ends is the test's decision,
so "six lanes running at once", "this lane is still running" and "the other lane has seen the failure" are
states the test holds, not races it hopes to win. Waits have generous bounds; durations are printed, never
asserted. A task instance's ``hostname`` is its Celery worker's node name (tests/e2e/hostname.py).
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from tests.e2e import scenarios
from tests.e2e.conftest import E2E
from tests.e2e.faults import LockHolder, ShardDb, wait_until
from tests.e2e.project import MigrationSpec, migration_dag_id

LANES_TASK_ID = "shards.lanes"
BOUND_S = 180.0
SHARDS = scenarios.LANES_SHARDS


def _shards(e2e: E2E) -> dict[str, ShardDb]:
    return {
        shard_id: ShardDb(shard_id, "postgres", e2e.pg.databases[shard_id], functools.partial(e2e.pg.connect, shard_id))
        for shard_id in SHARDS
    }


@contextlib.contextmanager
def _holding(shards: dict[str, ShardDb]) -> Iterator[dict[str, LockHolder]]:
    """Row locks on ``customers`` of every shard, released when the block ends (whatever happens)."""
    with contextlib.ExitStack() as stack:
        yield {shard_id: stack.enter_context(shard.row_lock()) for shard_id, shard in shards.items()}


def _lane_tis(e2e: E2E, dag_id: str, run_id: str) -> dict[int, dict[str, Any]]:
    return {t["map_index"]: t for t in e2e.api.task_instances(dag_id, run_id) if t["task_id"] == LANES_TASK_ID}


def _lanes_blocked(e2e: E2E, dag_id: str, run_id: str, shards: dict[str, ShardDb], lanes: int) -> Any:
    """Probe: ``lanes`` lane instances running, each on a worker (hostname), with ``lanes`` DDLs waiting for the
    test's locks; returns the lane instances then."""
    tis = _lane_tis(e2e, dag_id, run_id)
    running = {i: t for i, t in tis.items() if t["state"] == "running" and t.get("hostname")}
    waiting = sum(shard.waiting_ddl() for shard in shards.values())
    return running if len(running) == lanes and waiting == lanes else False


def _xcom_entry(e2e: E2E, dag_id: str, run_id: str, map_index: int, key: str) -> dict[str, Any] | None:
    """A lane's XCom entry (value and timestamp), or None while the lane has not pushed it."""
    path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{LANES_TASK_ID}/xcomEntries/{key}"
    response = e2e.api.request("GET", path, params={"map_index": map_index}, expect=(200, 404))
    if response.status_code == 404:
        return None
    entry = dict(response.json())
    value = entry["value"]
    entry["value"] = json.loads(value) if isinstance(value, str) and value[:1] in "{[" else value
    return entry


def _report(e2e: E2E, dag_id: str, run_id: str) -> tuple[dict[str, Any], dict[str, str]]:
    report = e2e.api.xcom(dag_id, run_id, "report")
    return report, {shard: status["outcome"] for shard, status in report["shards"].items()}


def _applied(e2e: E2E, shard_id: str, migration: MigrationSpec, run_id: str) -> bool:
    row = e2e.history(shard_id).get(migration.id)
    return row is not None and row["status"] == "applied" and row["run_id"] == run_id


def _column(shard: ShardDb, migration: MigrationSpec) -> bool:
    return shard.has_column("customers", migration.id)


def test_lanes_spread_over_both_workers(e2e: E2E) -> None:
    """Six lanes, each blocked on its first shard: no worker has six slots, so both run lanes -- the task
    instances' hostnames name both workers."""
    migration, shards = scenarios.LANES_SPREAD, _shards(e2e)
    dag_id = migration_dag_id(migration.id)
    with _holding(shards):
        run_id = e2e.api.trigger(dag_id)["dag_run_id"]
        running = wait_until(
            "six lanes running, each with its first shard's DDL waiting for the test's lock",
            lambda: _lanes_blocked(e2e, dag_id, run_id, shards, scenarios.LANES_WIDE),
            BOUND_S,
            alive=e2e.alive,
        )
    run = e2e.api.wait_run(dag_id, run_id, timeout=BOUND_S, alive=e2e.alive)
    hostnames = {i: t["hostname"] for i, t in running.items()}
    print(f"\n[e2e lanes] lane -> worker: {dict(sorted(hostnames.items()))}")
    assert set(hostnames.values()) == set(e2e.deployment.worker_hostnames), hostnames
    assert run["state"] == "success"
    tis = _lane_tis(e2e, dag_id, run_id)
    assert sorted(tis) == list(range(scenarios.LANES_WIDE))
    assert all(t["state"] == "success" and t["hostname"] == hostnames[i] for i, t in tis.items()), tis
    # The Grid labels each lane by the shards it ran (dealt round-robin: lane i runs lpg-i and lpg-(i+6)).
    assert {i: t["rendered_map_index"] for i, t in tis.items()} == {
        i: f"lane {i + 1}/6: lpg-{i}, lpg-{i + 6} (2 shards)" for i in range(6)
    }
    report, outcomes = _report(e2e, dag_id, run_id)
    assert outcomes == dict.fromkeys(SHARDS, "succeeded") and report["all_succeeded"] is True
    for shard_id, shard in shards.items():
        assert _applied(e2e, shard_id, migration, run_id) and _column(shard, migration), shard_id


def _poison_and_release(holder: LockHolder) -> None:
    """Commit the poison row in the transaction that holds the shard's row lock: the waiting DDL goes on, and
    the migration's next statement finds the row and fails."""
    cursor = holder.conn.cursor()
    cursor.execute("INSERT INTO customers (name) VALUES (%s)", (scenarios.LANES_POISON,))
    cursor.execute("COMMIT")
    holder.release()


def _at(entry: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00"))


def _log_line(e2e: E2E, dag_id: str, run_id: str, map_index: int, text: str) -> dict[str, Any] | None:
    """The first line of a lane's task log whose event holds ``text`` (JSON lines, with their timestamp)."""
    folder = e2e.deployment.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={LANES_TASK_ID}"
    path = folder / f"map_index={map_index}" / "attempt=1.log"
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        if text in line and line.startswith("{"):
            with contextlib.suppress(ValueError):
                return dict(json.loads(line))
    return None


def test_a_failure_stops_the_lanes_on_the_other_worker(e2e: E2E) -> None:
    """Lane A (on one worker) fails its shard; lane B (on the other worker) is still running its shard then --
    it ends truthfully -- and starts no further shard: its second shard stays ``pending``, untouched. The other
    lanes likewise finish the shard they were on and start no other."""
    migration, shards = scenarios.LANES_STOP, _shards(e2e)
    dag_id = migration_dag_id(migration.id)
    width = scenarios.LANES_WIDE
    with _holding(shards) as locks:
        run_id = e2e.api.trigger(dag_id)["dag_run_id"]
        running = wait_until(
            "six lanes running, each with its first shard's DDL waiting for the test's lock",
            lambda: _lanes_blocked(e2e, dag_id, run_id, shards, width),
            BOUND_S,
            alive=e2e.alive,
        )
        lane_b = 0
        lane_a = next(i for i, t in sorted(running.items()) if t["hostname"] != running[lane_b]["hostname"])
        failing, b_first, b_second = SHARDS[lane_a], SHARDS[lane_b], SHARDS[lane_b + width]
        _poison_and_release(locks[failing])
        failure = wait_until(
            f"lane {lane_a + 1} to publish the failure of {failing}",
            lambda: (e := _xcom_entry(e2e, dag_id, run_id, lane_a, "lane_state")) and e["value"]["failures"] and e,
            BOUND_S,
            alive=e2e.alive,
        )
        assert running[lane_b]["hostname"] != running[lane_a]["hostname"]
        # Lane B reads the other lanes' state in the background (its courier thread, every 0.5 s) and logs when
        # their failures grow: that line is the state "B has seen the failure", waited for, not slept for.
        seen_line = wait_until(
            f"lane {lane_b + 1} to log that it saw the failure",
            lambda: _log_line(e2e, dag_id, run_id, lane_b, "the other lanes report"),
            BOUND_S,
            alive=e2e.alive,
        )
        assert shards[b_first].waiting_ddl() == 1, "lane B's shard is still running when the failure is known"
        locks[b_first].release()
        done_b = wait_until(
            f"lane {lane_b + 1} to end",
            lambda: (e := _xcom_entry(e2e, dag_id, run_id, lane_b, "lane_state")) and e["value"]["done"] and e,
            BOUND_S,
            alive=e2e.alive,
        )
        # Its first push (statuses:0) is the shard it ran: pushed at once, the lane had pushed nothing before.
        first_b = _xcom_entry(e2e, dag_id, run_id, lane_b, "statuses:0")
        assert first_b is not None and [(s["shard_id"], s["outcome"]) for s in first_b["value"]] == [
            (b_first, "succeeded")
        ], first_b
    run = e2e.api.wait_run(dag_id, run_id, timeout=BOUND_S, alive=e2e.alive)
    seen = (_at(seen_line) - _at(failure)).total_seconds()
    decided = (_at(done_b) - _at(first_b)).total_seconds()
    print(
        f"\n[e2e lanes] {failing} failed in lane {lane_a + 1} on {running[lane_a]['hostname']}; lane {lane_b + 1} on "
        f"{running[lane_b]['hostname']} saw it {seen:.2f}s after the failure was recorded (its log line), while "
        f"its own shard {b_first} was still held; once that shard ended it started no other: {b_second} pending "
        f"({decided:.3f}s from the shard's end to the lane's end)"
    )
    assert run["state"] == "failed"
    report, outcomes = _report(e2e, dag_id, run_id)
    first, second = SHARDS[:width], SHARDS[width:]
    assert outcomes == {
        **{s: "failed" if s == failing else "succeeded" for s in first},  # running when the failure came: the truth
        **dict.fromkeys(second, "pending"),  # no lane started another shard
    }, outcomes
    assert report["halted_reason"].startswith("stop_on_first_failure"), report
    assert (report["failed_count"], report["pending_count"]) == (1, width), report
    tis = _lane_tis(e2e, dag_id, run_id)
    assert tis[lane_a]["state"] == "failed" and tis[lane_b]["state"] == "success", tis
    assert tis[lane_b]["hostname"] == running[lane_b]["hostname"] != tis[lane_a]["hostname"]
    for shard_id in [*second, failing]:  # untouched: neither the column nor a history row of the migration
        assert not _column(shards[shard_id], migration), shard_id
        assert migration.id not in e2e.history(shard_id) or shard_id == failing, e2e.history(shard_id)
    for shard_id in first:
        assert _applied(e2e, shard_id, migration, run_id) == (shard_id != failing), shard_id


def test_progress_shows_the_shards_of_a_lane_still_running(e2e: E2E) -> None:
    """Two lanes of six shards; the test lets lane 1's first shard (lpg-0) finish and holds its second (lpg-2):
    the progress endpoint lists lpg-0 ``succeeded`` while its lane is still running."""
    migration, shards = scenarios.LANES_PROGRESS, _shards(e2e)
    dag_id = migration_dag_id(migration.id)
    api = e2e.api

    def progress() -> dict[str, Any]:
        return dict(api.request("GET", f"/shardmigrate/progress/{dag_id}/{run_id}", expect=200).json())

    with _holding(shards) as locks:
        run_id = api.trigger(dag_id)["dag_run_id"]
        wait_until(
            "two lanes running, each with its first shard's DDL waiting",
            lambda: _lanes_blocked(e2e, dag_id, run_id, shards, 2),
            BOUND_S,
            alive=e2e.alive,
        )
        locks["lpg-0"].release()
        during = wait_until(
            "the progress endpoint to list lpg-0 as succeeded",
            lambda: (p := progress())["shards"]["lpg-0"] == "succeeded" and p,
            BOUND_S,
            alive=e2e.alive,
        )
        wait_until("lane 1's next shard (lpg-2) waiting for the test's lock", shards["lpg-2"].waiting_ddl, BOUND_S)
        lane = _lane_tis(e2e, dag_id, run_id)[0]
        assert lane["state"] == "running", lane
        assert not during["is_finished"] and during["completed_shards"] == 1, during
        later = progress()  # lane 1 is on lpg-2 now, lane 2 still on lpg-1
        states = later["shards"]
        assert states["lpg-0"] == "succeeded" and states["lpg-1"] == states["lpg-2"] == "running", later
        assert later["running_shards"] == 2 and later["completed_shards"] == 1, later
        assert set(states[s] for s in SHARDS[3:]) == {"waiting"}, later
        assert _applied(e2e, "lpg-0", migration, run_id) and not _column(shards["lpg-2"], migration)
    final = wait_until(
        "the rollout to finish", lambda: (p := progress())["is_finished"] and p, BOUND_S, alive=e2e.alive
    )
    assert final["run_state"] == "success" and set(final["shards"].values()) == {"succeeded"}, final
    assert final["completed_shards"] == len(SHARDS)
