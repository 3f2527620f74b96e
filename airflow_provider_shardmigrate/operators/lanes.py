"""Lanes: a few task instances that each work through many shards, so a fleet of any size costs its DDL.

A per-shard task pays a task start-up and a scheduler slot refill for every shard; a lane pays them once
and then runs its shards one after another through the same per-shard function (lock, history, in-database
timeout, resume). Lanes are ordinary mapped task instances, so Celery spreads them over every worker.

- Which shards a lane runs is decided when the DAG is built (dealt round-robin, core/plans.deal) and kept in
  a registry the DAG builder fills at parse time, so the mapped task's serialized form stays the same size
  whatever the fleet size. The run checks that every lane works from the plan the run published.
- The statuses of the shards a lane finished are pushed as it goes (XCom keys ``statuses:0``, ``statuses:1``,
  ...: a list each), so progress and the report see them before the lane ends: a shard that ends at least
  ``FLUSH_SECONDS`` after the previous push is pushed at once, quicker shards together, at most every
  ``FLUSH_SECONDS`` (a failure at once). The lane's ``return_value`` lists every shard it accounted for. Which
  shard a running lane is on follows from the deal (the first of its shards without a status), so nothing
  else is pushed: at most one Airflow call per shard -- 50 lanes of sub-second shards would otherwise keep a
  single api-server busy with their bookkeeping -- plus the board read below.
- The lanes of one run coordinate through one small XCom each (``lane_state``: failures, done), published when
  a shard of the lane fails and when the lane ends: before starting a shard a lane reads the others' (at most
  every 0.5 s, up to 1 s with 50 lanes: ``board_interval``) and starts no further shard once the failure
  threshold is passed.
- Rolling batches run inside one lane instance with ``max_parallelism`` worker threads, batch k+1 after
  batch k: a barrier across task instances would deadlock when the deployment has fewer free slots than
  lanes.
"""

from __future__ import annotations

import contextlib
import hashlib
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_shardmigrate.core.status import Outcome, ShardStatus
from airflow_provider_shardmigrate.core.topology import Shard
from airflow_provider_shardmigrate.operators._context import LANE_STATE_KEY, gate_refused, lane_statuses_key
from airflow_provider_shardmigrate.operators._stop import StopsOnKill

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_shardmigrate.core.outcomes import HaltPolicy

#: How often at most a lane re-reads the other lanes' state before starting a shard: every 0.5 s, up to every
#: 1 s with 50 lanes or more (``board_interval``) -- a failure elsewhere stops it within that long plus one
#: read, and the lanes of one run read the board at most 50 times a second together.
BOARD_READ_SECONDS = 0.5
BOARD_READS_PER_SECOND = 50
#: How often at most a lane pushes the statuses of the shards it finished (a shard that ends later than this
#: after the previous push is pushed at once; a failure at once): 50 lanes of quick shards, 50 pushes a second.
FLUSH_SECONDS = 1.0


def board_interval(lanes: int) -> float:
    """Seconds between two board reads of a lane: BOARD_READ_SECONDS, longer when many lanes would read together
    more than BOARD_READS_PER_SECOND times a second, never above 1 s (a stop must be seen within about a
    second)."""
    return min(1.0, max(BOARD_READ_SECONDS, lanes / BOARD_READS_PER_SECOND))


#: Grid label length limit (Airflow keeps at most 250 characters of a rendered map index).
LABEL_LIMIT = 240

#: ``[batch][lane] -> shards`` of every lanes task, filled by the DAG builder at parse time.
_LANE_WORK: dict[str, list[list[tuple[Shard, ...]]]] = {}

#: What a lane does to one of its shards (see :meth:`ShardLaneOperator.shard_action`).
LaneAction = Callable[[Shard], ShardStatus]


def work_key(dag_id: str, task_id: str) -> str:
    return f"{dag_id}/{task_id}"


def register_lane_work(dag_id: str, task_id: str, batches: list[list[tuple[Shard, ...]]]) -> str:
    """Record what the lanes of ``task_id`` run (called by the DAG builder); returns the fingerprint (computed
    once per batches object: the DAGs of one topology share their layouts, see core/plans.memo_by_identity)."""
    from airflow_provider_shardmigrate.core.plans import memo_by_identity

    _LANE_WORK[work_key(dag_id, task_id)] = batches
    return memo_by_identity(batches, "fingerprint", lambda: fingerprint(batches))


def lane_assignments(dag_id: str, task_id: str) -> list[list[Shard]]:
    """Lane -> every shard it runs (all batches), from the work registered at parse time; [] if unknown."""
    batches = _LANE_WORK.get(work_key(dag_id, task_id)) or []
    lanes = max((len(batch) for batch in batches), default=0)
    return [[shard for batch in batches if lane < len(batch) for shard in batch[lane]] for lane in range(lanes)]


def fingerprint(batches: Sequence[Sequence[Sequence[Shard]]]) -> str:
    """A short hash of who runs what, so lanes parsed at different moments can tell they agree."""
    digest = hashlib.sha256()
    for batch in batches:
        for lane in batch:
            digest.update("\0".join([shard.id for shard in lane]).encode() + b"\1")
        digest.update(b"\2")
    return digest.hexdigest()[:16]


def lane_label(lane: int, lanes: int, shards: Sequence[Shard]) -> str:
    """``lane 3/10: s2, s12, s22 ... s992 (100 shards)`` -- the Grid label of a lane instance."""
    if not shards:
        return f"lane {lane + 1}/{lanes}: no shard"
    head = ", ".join(shard.id for shard in shards[:3])
    text = f"lane {lane + 1}/{lanes}: {head}"
    if len(shards) > 3:
        text += f" ... {shards[-1].id}"
    text += f" ({len(shards)} shard{'s' if len(shards) != 1 else ''})"
    return text if len(text) <= LABEL_LIMIT else text[: LABEL_LIMIT - 3] + "..."


@dataclass
class LaneBoard:
    """The lanes of one run telling each other their failures, through one XCom per lane.

    Read in the lane's own thread when a read is due (at most every ``interval`` seconds), or -- ``background``
    -- by the lane's :class:`_Courier` every ``interval`` seconds, the lane then using what it read last.
    """

    ti: Any
    task_id: str
    lane: int
    #: Seconds between two reads (:func:`board_interval`).
    interval: float = BOARD_READ_SECONDS
    background: bool = False
    log: Any = None
    failures: int = 0
    _peers: list[dict[str, Any]] = field(default_factory=list)
    _read_at: float = float("-inf")
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def read_at(self) -> float:
        return self._read_at

    def state(self, *, done: bool = False) -> dict[str, Any]:
        return {"lane": self.lane, "failures": self.failures, "done": done}

    def publish(self, *, done: bool = False) -> None:
        self.ti.xcom_push(key=LANE_STATE_KEY, value=self.state(done=done))

    def refresh(self) -> None:
        """Read the other lanes' state now (one call); log when their failures grew."""
        values = self.ti.xcom_pull(task_ids=[self.task_id], key=LANE_STATE_KEY) or []
        peers = [v for v in values if isinstance(v, dict) and v.get("lane") != self.lane]
        with self._lock:
            before = self._elsewhere()
            self._peers, self._read_at = peers, time.monotonic()
            after = self._elsewhere()
        if after > before and self.log is not None:
            self.log.info("lane %d: the other lanes report %d failed shard(s)", self.lane + 1, after)

    def failed_elsewhere(self) -> int:
        """Failures the other lanes have published (re-read here when due, unless read in the background)."""
        if not self.background and time.monotonic() - self._read_at >= self.interval:
            self.refresh()
        with self._lock:
            return self._elsewhere()

    def _elsewhere(self) -> int:
        return sum(int(peer.get("failures") or 0) for peer in self._peers)

    def note_failure(self) -> None:
        with self._lock:
            self.failures += 1


def threadsafe_comms() -> bool:
    """Whether this task talks to Airflow through the supervisor's socket channel, which serves one request at
    a time under a lock of its own (safe from a second thread) -- not ``dag.test()``'s in-process channel, which
    swaps a module global for every request. Reads an Airflow internal (docs/architecture.md)."""
    try:
        from airflow.sdk.execution_time import task_runner
        from airflow.sdk.execution_time.comms import CommsDecoder
    except ImportError:  # pragma: no cover - an Airflow without them: the lane talks to it itself
        return False
    return isinstance(getattr(task_runner, "SUPERVISOR_COMMS", None), CommsDecoder)


class _Courier:
    """A lane's Airflow calls on a thread of their own, so its shards never wait for the api-server: what the
    lane hands it is pushed in order, and (when the lane has a failure threshold) the board is re-read every
    ``board.interval`` seconds. While it runs, the lane's own thread makes no XCom call (a shard's connection
    lookup may still ask the supervisor: the channel's lock serves the two threads one at a time). A failed call
    is raised in the lane at its next hand-over (or when the courier is closed)."""

    def __init__(self, ti: Any, board: LaneBoard, *, watch: bool) -> None:
        self.ti, self.board, self.watch = ti, board, watch
        self.error: BaseException | None = None
        self._queue: queue.SimpleQueue[tuple[str, Any] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name=f"lane-{board.lane + 1}-courier", daemon=True)

    def start(self) -> None:
        if self.watch:
            self.board.refresh()  # before the first shard: a lane starting after a failure elsewhere starts nothing
        self._thread.start()

    def push(self, key: str, value: Any) -> None:
        self.raise_error()
        self._queue.put((key, value))

    def raise_error(self) -> None:
        if self.error is not None:
            raise self.error

    def close(self, timeout: float | None = None) -> None:
        """Push what is left, stop, and raise the error of a call that failed."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout)
        self.raise_error()

    def _loop(self) -> None:
        try:
            while True:
                due = self.board.read_at + self.board.interval if self.watch else None
                try:
                    item = self._queue.get(timeout=None if due is None else max(0.0, due - time.monotonic()))
                except queue.Empty:
                    self.board.refresh()
                    continue
                if item is None:
                    return
                self.ti.xcom_push(key=item[0], value=item[1])
                if due is not None and time.monotonic() >= due:  # pushes never hold the reads back
                    self.board.refresh()
        except BaseException as exc:  # handed to the lane's thread
            self.error = exc


def observed(shard: Shard, *, migration_id: str, strategy: str, work: Callable[[], ShardStatus]) -> ShardStatus:
    """``work()`` on ``shard`` inside a ``shardmigrate.shard`` span, its status counted in the metrics. No Airflow
    call: safe in a lane's worker threads."""
    from airflow_provider_shardmigrate.observability import record_shard, span

    with span("shardmigrate.shard", **{"shard.id": shard.id, "strategy": strategy, "id": migration_id}) as current:
        status = work()
        current.set_attribute("migration.shard.outcome", status.outcome.value)
        if status.error_code:
            current.set_attribute("migration.error", status.error_code)
    record_shard(status, migration_id=migration_id, strategy=strategy)
    return status


@dataclass
class _Lane:
    """One lane's run: the shards it was dealt, what happened to each, and when to stop starting more."""

    operator: ShardLaneOperator
    context: Any
    action: LaneAction
    policy: HaltPolicy
    dry_run: bool
    board: LaneBoard
    #: The thread making the lane's Airflow calls (None: the lane's own thread makes them, e.g. in dag.test()).
    courier: _Courier | None = None
    statuses: dict[str, ShardStatus] = field(default_factory=dict)
    #: Finished shards not pushed yet, the number of pushes so far, and when the last one was.
    unpushed: list[ShardStatus] = field(default_factory=list)
    pushes: int = 0
    pushed_at: float = float("-inf")

    def halted(self) -> bool:
        if self.dry_run or self.policy.max_failed is None:
            return False
        return self.policy.exceeded(self.board.failures + self.board.failed_elsewhere())

    def skip(self, shards: Sequence[Shard]) -> None:
        reason = "not started: the failure threshold was passed (another shard failed)"
        for shard in shards:
            self._record(ShardStatus(shard.id, Outcome.PENDING, 0, None, reason), push=False)

    def apply(self, shard: Shard) -> ShardStatus:
        """The lane's action on one shard. No Airflow call here: it may run in a worker thread (only the lane's
        own thread talks to Airflow -- ``finish`` -- because ``dag.test()``'s in-process channel to Airflow is
        not safe to use from two threads at once)."""
        return self.action(shard)

    def finish(self, status: ShardStatus) -> None:
        """Record a shard's status and push it (with the ones before it not pushed yet) unless the last push was
        less than FLUSH_SECONDS ago; a failure is pushed at once, and told to the other lanes."""
        self._record(status, push=True)
        failed = status.outcome is Outcome.FAILED
        if failed:
            self.board.note_failure()
        self.flush(force=failed)
        if failed:
            self.publish_state()

    def publish_state(self, *, done: bool = False) -> None:
        self._send(LANE_STATE_KEY, self.board.state(done=done))

    def _send(self, key: str, value: Any) -> None:
        if self.courier is not None:
            self.courier.push(key, value)
        else:
            self.context["ti"].xcom_push(key=key, value=value)

    def flush(self, *, force: bool = False) -> None:
        """Push the statuses not pushed yet as one XCom (``statuses:<n>``): now if ``force``, else when the last
        push was at least FLUSH_SECONDS ago."""
        if not self.unpushed or (not force and time.monotonic() - self.pushed_at < FLUSH_SECONDS):
            return
        self._send(lane_statuses_key(self.pushes), [status.to_xcom() for status in self.unpushed])
        self.unpushed, self.pushes, self.pushed_at = [], self.pushes + 1, time.monotonic()

    def run_one(self, shard: Shard) -> None:
        if self.halted():
            self.skip([shard])
            return
        self.flush()  # statuses held back while earlier shards were quick: before a shard that may take long
        self.finish(self.apply(shard))

    def run_batch(self, shards: Sequence[Shard], workers: int) -> None:
        """A rolling batch, ``workers`` shards at once; the threshold is checked before the batch (a batch
        that started completes)."""
        if self.halted():
            self.skip(shards)
            return
        self.flush()
        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(shards)))) as pool:
            for done in as_completed([pool.submit(self.apply, shard) for shard in shards]):
                self.finish(done.result())

    def _record(self, status: ShardStatus, *, push: bool) -> None:
        self.statuses[status.shard_id] = status
        if push:
            self.unpushed.append(status)
        detail = f" [{status.error_code}] {status.error_message}" if status.error_code else ""
        log = self.operator.log
        log.info("shard %s: %s (%d ms)%s", status.shard_id, status.outcome.value, status.duration_ms, detail)


class ShardLaneOperator(StopsOnKill, BaseOperator):
    """Run a lane of a rollout: the shards dealt to it, one after another (or ``workers`` at a time, batch
    by batch, for rolling), through the per-shard protocol.

    :param migration_path: Folder of the migration (re-read at run time and checked against the checksum).
    :param migration_checksum: Checksum of the migration when the DAG was built.
    :param lane: This instance's lane number (the mapped argument).
    :param lanes: Number of lanes of the task.
    :param plan_fingerprint: Fingerprint of the lane work at parse time (see :func:`fingerprint`).
    :param workers: Shards of a batch run at once inside this lane (rolling); 1 otherwise.
    :param target_count: Shards the rollout targets (the base of ``max_failure_ratio``).
    :param strategy: Strategy of the rollout (metrics, spans).
    :param requires: Gate task ids (the preflight, the canary gate) that must not have failed.
    :param required_migrations: Migrations each shard must hold before this one is applied (``out_of_order``).

    Subclasses change what a lane does to each shard by overriding :meth:`shard_action` (the catch-up DAG's
    lanes apply every pending migration instead of one); the lane loop, the stop and the reporting stay here.
    """

    template_fields: Sequence[str] = ()
    ui_color = "#d8f0e0"

    def __init__(
        self,
        *,
        migration_path: str = "",
        migration_checksum: str = "",
        lane: int,
        lanes: int,
        plan_fingerprint: str,
        workers: int = 1,
        target_count: int = 0,
        strategy: str = "",
        requires: Sequence[str] = (),
        required_migrations: Sequence[str] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.required_migrations = list(required_migrations)
        self.migration_path = migration_path
        self.migration_checksum = migration_checksum
        self.lane = int(lane)
        self.lanes = int(lanes)
        self.plan_fingerprint = plan_fingerprint
        self.workers = max(1, int(workers))
        self.target_count = int(target_count)
        self.strategy = strategy
        self.requires = list(requires)

    def _batches(self, dag_id: str) -> list[tuple[Shard, ...]]:
        from airflow_provider_shardmigrate.core.errors import InvalidTopologyError

        batches = _LANE_WORK.get(work_key(dag_id, self.task_id))
        if batches is None or fingerprint(batches) != self.plan_fingerprint:
            raise InvalidTopologyError(
                f"lane {self.lane + 1} of {self.task_id}: the topology or the migration's options changed since this "
                "run's DAG was parsed (the lanes would not agree on who runs which shard); trigger a new run"
            )
        return [batch[self.lane] if self.lane < len(batch) else () for batch in batches]

    def _policy(self, params: Any) -> HaltPolicy:
        from airflow_provider_shardmigrate.core.outcomes import HaltPolicy

        return HaltPolicy.from_limits(
            stop_on_first_failure=bool(params.get("stop_on_first_failure")),
            max_failed_shards=params.get("max_failed_shards"),
            max_failure_ratio=params.get("max_failure_ratio"),
            targets=self.target_count,
        )

    def shard_action(self, context: Context, dry_run: bool) -> LaneAction:
        """What this lane does to each of its shards: the hook subclasses override.

        Called once, in the lane's own thread (it may talk to Airflow and read files); the callable it returns
        runs per shard, possibly in worker threads, and must not call Airflow. Default: apply the migration
        (re-read and checked against the DAG's checksum) through the per-shard protocol.
        """
        from airflow_provider_shardmigrate.engines.runner import RunInfo, apply_to_shard
        from airflow_provider_shardmigrate.operators.shard import load_checked_migration

        migration = load_checked_migration(self.migration_path, self.migration_checksum)
        ti = context["ti"]
        run = RunInfo(dag_id=ti.dag_id, run_id=ti.run_id)
        requires = tuple(self.required_migrations)

        def apply(shard: Shard) -> ShardStatus:
            return observed(
                shard,
                migration_id=migration.id,
                strategy=self.strategy,
                work=lambda: apply_to_shard(shard, migration, dry_run=dry_run, run=run, requires=requires),
            )

        return apply

    def execute(self, context: Context) -> list[dict[str, Any]]:
        from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

        ti = context["ti"]
        batches = self._batches(ti.dag_id)
        shards = [shard for batch in batches for shard in batch]
        context["lane_label"] = lane_label(self.lane, self.lanes, shards)  # type: ignore[typeddict-unknown-key]
        if gate_refused(context, self.requires):
            raise AirflowSkipException(f"not started: {', '.join(self.requires)} refused the rollout")
        params = context["params"]
        dry_run = bool(params.get("dry_run"))
        lane = self._lane(context, dry_run)
        try:
            if lane.courier is not None:
                lane.courier.start()
            for batch in batches:
                self._run_batch(lane, batch)
        except BaseException:  # stopped by Airflow (timeout, termination): keep what the shards that ended said
            with contextlib.suppress(BaseException):
                lane.flush(force=True)
                if lane.courier is not None:
                    lane.courier.close(timeout=5)
            raise
        lane.flush(force=True)
        lane.publish_state(done=True)
        if lane.courier is not None:
            lane.courier.close()
        results = [lane.statuses[shard.id].to_xcom() for shard in shards if shard.id in lane.statuses]
        failed = [s for s in lane.statuses.values() if s.outcome is Outcome.FAILED]
        if failed:
            ti.xcom_push(key="return_value", value=results)
            raise AirflowFailException(
                f"{len(failed)} of {len(shards)} shard(s) of this lane failed: "
                + "; ".join(f"{s.shard_id} [{s.error_code}]" for s in failed[:20])
            )
        return results

    def _lane(self, context: Context, dry_run: bool) -> _Lane:
        """The lane's run; its Airflow calls on a courier thread when the channel to Airflow allows a second
        thread (a real task process; not dag.test())."""
        ti = context["ti"]
        policy = self._policy(context["params"])
        threaded = threadsafe_comms()
        board = LaneBoard(ti, self.task_id, self.lane, board_interval(self.lanes), background=threaded, log=self.log)
        watch = not dry_run and policy.max_failed is not None
        courier = _Courier(ti, board, watch=watch) if threaded else None
        return _Lane(self, context, self.shard_action(context, dry_run), policy, dry_run, board, courier)

    def _run_batch(self, lane: _Lane, batch: tuple[Shard, ...]) -> None:
        """A lane's shards one at a time (each checking the threshold first), or a rolling batch at once."""
        if self.workers == 1:
            for shard in batch:
                lane.run_one(shard)
        elif batch:
            lane.run_batch(batch, self.workers)
