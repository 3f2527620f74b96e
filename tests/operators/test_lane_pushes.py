"""What a lane asks of Airflow per shard (operators/lanes.py): the statuses of finished shards pushed as lists --
at once for a shard that ends a second or more after the previous push, quicker ones together, a failure at
once with the lane's state --, and the other lanes' state read at most every ``board_interval`` seconds. The
lane talks to a recording stand-in of the task instance, on a clock the test moves."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_shardmigrate.core.outcomes import HaltPolicy
from airflow_provider_shardmigrate.core.status import Outcome, ShardStatus
from airflow_provider_shardmigrate.core.topology import Shard
from airflow_provider_shardmigrate.operators import lanes
from airflow_provider_shardmigrate.operators.lanes import LaneBoard, _Lane, board_interval


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class RecordingTi:
    """Records every call a lane makes to Airflow; ``peers`` is what the board read answers."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any]] = []
        self.peers: list[dict[str, Any]] = []

    def xcom_push(self, *, key: str, value: Any) -> None:
        self.calls.append(("push", key, value))

    def xcom_pull(self, *, task_ids: list[str], key: str) -> list[dict[str, Any]]:
        self.calls.append(("pull", key, None))
        return list(self.peers)


class Operator:
    import logging

    log = logging.getLogger("test.lane")


def make_lane(clock: Clock, durations: dict[str, float], *, stop: bool = True, lanes_count: int = 4) -> Any:
    ti = RecordingTi()

    def action(shard: Shard) -> ShardStatus:
        clock.now += durations.get(shard.id, 0.01)
        outcome = Outcome.FAILED if shard.id.startswith("bad") else Outcome.SUCCEEDED
        return ShardStatus(shard.id, outcome, int(durations.get(shard.id, 0.01) * 1000), None, None)

    policy = HaltPolicy.from_limits(
        stop_on_first_failure=stop, max_failed_shards=None, max_failure_ratio=None, targets=10
    )
    board = LaneBoard(ti, "shards.lanes", 0, board_interval(lanes_count))
    lane = _Lane(Operator(), {"ti": ti}, action, policy, False, board)  # type: ignore[arg-type]
    return lane, ti


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(lanes.time, "monotonic", clock)
    return clock


def pushed(ti: RecordingTi) -> list[list[str]]:
    return [[status["shard_id"] for status in value] for kind, key, value in ti.calls if key.startswith("statuses:")]


def test_shards_of_a_second_or_more_are_pushed_one_by_one_at_once(clock: Clock) -> None:
    lane, ti = make_lane(clock, {"s0": 1.2, "s1": 1.5, "s2": 1.1}, stop=False)
    for shard_id in ("s0", "s1", "s2"):
        lane.run_one(Shard(shard_id, shard_id))
    assert pushed(ti) == [["s0"], ["s1"], ["s2"]]
    assert [key for _, key, _ in ti.calls] == ["statuses:0", "statuses:1", "statuses:2"]  # no board read: no limit


def test_quick_shards_are_pushed_together_about_once_a_second(clock: Clock) -> None:
    lane, ti = make_lane(clock, {}, stop=False)  # 10 ms each
    for i in range(250):
        lane.run_one(Shard(f"s{i}", f"s{i}"))
    lane.flush(force=True)
    batches = pushed(ti)
    assert [shard for batch in batches for shard in batch] == [f"s{i}" for i in range(250)]
    assert batches[0] == ["s0"]  # the first one at once
    assert len(batches) == 4  # 2.5 s of shards: a push about every second (and the rest at the end)


def test_a_failure_is_pushed_at_once_with_the_lane_state_and_stops_the_lane(clock: Clock) -> None:
    lane, ti = make_lane(clock, {})
    for shard_id in ("s0", "s1", "bad2", "s3"):
        lane.run_one(Shard(shard_id, shard_id))
    assert pushed(ti) == [["s0"], ["s1", "bad2"]]  # s1 was held back (quick), the failure pushed it along
    state = [value for kind, key, value in ti.calls if kind == "push" and key == "lane_state"]
    assert state == [{"lane": 0, "failures": 1, "done": False}]
    assert lane.statuses["s3"].outcome is Outcome.PENDING  # not started: the threshold (stop on first failure)


def test_the_board_is_read_at_most_every_interval_and_stops_the_lane(clock: Clock) -> None:
    lane, ti = make_lane(clock, {}, lanes_count=4)  # 10 ms shards, board read at most every 0.5 s
    for i in range(100):
        lane.run_one(Shard(f"s{i}", f"s{i}"))
    reads = [kind for kind, _, _ in ti.calls if kind == "pull"]
    assert 2 <= len(reads) <= 3  # 1 s of shards
    ti.peers = [{"lane": 1, "failures": 1, "done": False}]
    clock.now += 0.5
    lane.run_one(Shard("s100", "s100"))
    assert lane.statuses["s100"].outcome is Outcome.PENDING  # another lane failed: this one starts nothing


@pytest.mark.parametrize(("lanes_count", "interval"), [(1, 0.5), (25, 0.5), (40, 0.8), (50, 1.0), (500, 1.0)])
def test_many_lanes_read_the_board_less_often_but_at_least_every_second(lanes_count: int, interval: float) -> None:
    assert board_interval(lanes_count) == pytest.approx(interval)


# -- the courier: a real task process makes the lane's Airflow calls on a thread of their own ----------------------


def test_the_courier_pushes_in_order_and_reads_the_board_in_the_background(clock: Clock) -> None:
    from airflow_provider_shardmigrate.operators.lanes import _Courier

    ti = RecordingTi()
    board = LaneBoard(ti, "shards.lanes", 0, 0.5, background=True)
    courier = _Courier(ti, board, watch=True)
    lane = _Lane(
        Operator(),
        {"ti": ti},
        lambda s: ShardStatus(s.id, Outcome.SUCCEEDED, 1, None, None),  # type: ignore[arg-type]
        HaltPolicy.from_limits(stop_on_first_failure=True, max_failed_shards=None, max_failure_ratio=None, targets=3),
        False,
        board,
        courier,
    )
    courier.start()  # reads the board first, in the lane's thread
    assert [kind for kind, _, _ in ti.calls] == ["pull"]
    ti.peers = [{"lane": 1, "failures": 1, "done": False}]  # another lane fails: the lane does not read itself...
    for shard_id in ("s0", "s1"):
        lane.run_one(Shard(shard_id, shard_id))
    assert lane.statuses["s1"].outcome is Outcome.SUCCEEDED  # ... until the courier's next read
    lane.flush(force=True)
    lane.publish_state(done=True)
    courier.close(timeout=10)
    assert [key for kind, key, _ in ti.calls if kind == "push"] == ["statuses:0", "statuses:1", "lane_state"]
    assert pushed(ti) == [["s0"], ["s1"]]


def test_the_courier_reads_the_board_every_interval_and_the_lane_then_stops() -> None:
    import time

    from airflow_provider_shardmigrate.operators.lanes import _Courier

    ti = RecordingTi()
    board = LaneBoard(ti, "shards.lanes", 0, 0.05, background=True)
    courier = _Courier(ti, board, watch=True)
    courier.start()
    ti.peers = [{"lane": 2, "failures": 1, "done": False}]
    end = time.monotonic() + 10
    while board.failed_elsewhere() == 0 and time.monotonic() < end:
        time.sleep(0.01)
    courier.close(timeout=10)
    assert board.failed_elsewhere() == 1


def test_a_call_that_failed_on_the_courier_fails_the_lane() -> None:
    from airflow_provider_shardmigrate.operators.lanes import _Courier

    class Broken(RecordingTi):
        def xcom_push(self, *, key: str, value: Any) -> None:
            raise RuntimeError("API_SERVER_ERROR: timed out")

    ti = Broken()
    courier = _Courier(ti, LaneBoard(ti, "shards.lanes", 0, background=True), watch=False)
    courier.start()
    courier.push("statuses:0", [])
    with pytest.raises(RuntimeError, match="API_SERVER_ERROR"):
        courier.close(timeout=10)


def test_a_courier_only_where_the_channel_to_airflow_serves_two_threads() -> None:
    """dag.test()'s in-process channel swaps a module global per request: no courier there (a real task process
    has the supervisor's socket channel, one request at a time under its lock -- checked here too, so an
    Airflow that drops that lock fails this test)."""
    import attrs
    from airflow.sdk.execution_time.comms import CommsDecoder

    from airflow_provider_shardmigrate.operators.lanes import threadsafe_comms

    assert "_thread_lock" in {a.name for a in attrs.fields(CommsDecoder)}
    assert threadsafe_comms() is False  # no task running here
