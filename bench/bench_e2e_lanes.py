"""Lanes execution on the real Celery deployment of tests/e2e (two workers), against the physical limit.

Scenarios (``--scenario``, default all three, each in a deployment of its own):

* ``pg100``: 100 PostgreSQL shards (a database each), 1 s of DDL per shard (``pg_sleep(1)`` in a DO block, then
  a CREATE TABLE), parallel at max_parallelism 10, **lanes and per_shard side by side** (runs interleaved).
  Physical limit: ceil(100/10) x 1 s = 10 s.
* ``pg1000``: 1,000 PostgreSQL shards, a **database** each (``--pg1000-layout schemas``: a schema each in one
  database, the engine's schema-per-shard layout), 1 s of DDL, lanes at max_parallelism 50. Physical limit:
  ceil(1000/50) x 1 s = 20 s. Databases: 1,000 take ~30 s to create and ~7.5 GB in the benchmark's own cluster
  (removed at the end), affordable here, and it is the layout the engines' tests cover; with schemas every
  backend of every shard opens the same database whose catalog holds all 1,000 tenants (the preflight read
  32 ms per shard instead of 19).
* Each PostgreSQL scenario runs with the migration's default ``validate_before_apply: true`` (the preflight
  reads every shard before any starts) and without it (``no drift gate``), so the lanes' own cost shows apart
  from the gate's.
* ``sqlite10k``: 10,000 SQLite shard files, trivial DDL (``CREATE INDEX`` on a 3-row table), lanes at
  max_parallelism 50. Baselines measured in the same run, in this process, on the same files: the same DDL with
  the raw ``sqlite3`` driver (open, DDL, commit, close) in a plain loop and in 50 threads, and the provider's own
  per-shard function (``apply_to_shard``: Airflow connection, lock, history, DDL + history row) in 50 threads
  without Airflow tasks.

Everything runs on a PostgreSQL cluster of the benchmark's own (``initdb`` on a free port, PostgreSQL's default
settings except ``max_connections = 400``): the Airflow metadata DB and the PostgreSQL shards. 50 lanes hold 50
shard sessions while the deployment holds its own (api-server, scheduler, dag-processor, triggerer, the Celery
result backend of every pool process), more than the machine's shared server (``max_connections = 100``, also
used by other work) can spare. Worker slots: 2 workers x ceil(P / 2) + 2 each, ``[core] parallelism`` above it.

Figures per run (from the REST API and the lanes' XComs): wall = dag_run end - start; ratio = wall / physical;
where the time goes: run start -> preflight end, preflight end -> first lane start, lane start stagger (first ->
last lane start), the lane phase (first lane start -> last lane end), last lane end -> run end (auto_rollback,
report, gate); inside the lanes: time per shard in ``apply_to_shard`` (the lanes' per-shard ``duration_ms``: connect,
lock, history, DDL, commit) and lane time outside it (task start-up, XCom pushes, board reads) per shard. CPU
seconds per component during the run (/proc: the api-server, scheduler, dag-processor, both workers with their
task processes, PostgreSQL), machine busy share, and peak memory of the worker processes (the Celery workers,
their pool processes, task supervisors and task processes: RSS sum and max per process, PSS sum -- RSS counts
pages shared after fork once per process).

Time per shard beyond the DDL (sqlite10k), stated in the output:
  lane view  = (lane phase - raw-DDL wall in 50 threads) x 50 / 10,000: what each lane spends per shard beyond
               the DDL itself (the goal's definition: <= 20 ms);
  fleet view = (run wall - raw-DDL wall in 50 threads) / 10,000: what the whole rollout adds per shard.

The deployment is the e2e harness's (tuned as the README's "Faster fan-out" says) with one addition, the metadata
DB pool of every component at 25 + 25 (``--api-pool``; 0 keeps Airflow's 5 + 10, with which 50 lanes stalled the
api-server for its 30 s pool timeout); ``--heartbeat`` sets ``[workers] min_heartbeat_interval`` (the harness: 1 s).

Run: .venv/bin/python bench/bench_e2e_lanes.py [--scenario pg100 pg1000 sqlite10k] [--repeat 3] [--gate both|on|off]
(needs PostgreSQL 15 binaries and redis-server; the machine's own servers are not used).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import sqlite3
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# The harness reads where its PostgreSQL is when imported: point it (and its reaper) at the cluster of our own.
PG_PORT = _free_port()
os.environ["SHARDMIGRATE_TEST_PG_HOST"] = "127.0.0.1"
os.environ["SHARDMIGRATE_TEST_PG_PORT"] = str(PG_PORT)
os.environ["SHARDMIGRATE_TEST_PG_USER"] = "postgres"

from tests.e2e.deployment import Deployment, new_output_dir, process_tree  # noqa: E402
from tests.e2e.project import MigrationSpec, migration_dag_id, write_migrations_project  # noqa: E402
from tests.e2e.servers import PostgresInstance  # noqa: E402
from tests.e2e.timeline import intervals, seconds, ts  # noqa: E402

SLEEP_S = 1.0
PG_SLEEP = "DO $$ BEGIN PERFORM pg_sleep(1); END $$;"
CUSTOMERS_PG = "CREATE TABLE customers (id SERIAL PRIMARY KEY, name TEXT NOT NULL);" + (
    "INSERT INTO customers (name) VALUES ('ada'), ('grace'), ('linus');"
)
CUSTOMERS_SQLITE = (
    "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL);"
    "INSERT INTO customers (name) VALUES ('ada'), ('grace'), ('linus');"
)
LANES_TASK_ID = "shards.lanes"


class BenchPostgres(PostgresInstance):
    """The benchmark's PostgreSQL cluster: the defaults of PostgreSQL (fsync on, 128 MB shared buffers) except
    room for 400 sessions."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.port = PG_PORT

    def args(self) -> list[str]:
        args = super().args()
        drop = {"fsync=off", "shared_buffers=16MB", "max_connections=40"}
        kept: list[str] = []
        for arg in args:
            if arg in drop:
                kept.pop()  # its "-c"
                continue
            kept.append(arg)
        return [*kept, "-c", "max_connections=400", "-c", "shared_buffers=128MB"]


# -- fleets -----------------------------------------------------------------------------------------------
@dataclass
class Fleet:
    shard_ids: list[str]
    env: dict[str, str]
    #: Run ``up`` DDL the raw way on every shard (sqlite10k baselines); None for PostgreSQL fleets.
    sqlite_paths: list[Path] = field(default_factory=list)

    def topology(self) -> str:
        lines = ["shards:"] + [f"  - {{id: {s}, conn_id: {s.replace('-', '_')}}}" for s in self.shard_ids]
        return "\n".join(lines) + "\n"


def _conn_env_var(shard_id: str) -> str:
    return f"AIRFLOW_CONN_{shard_id.replace('-', '_').upper()}"


def pg_databases(pg: BenchPostgres, count: int) -> Fleet:
    ids, env = [], {}
    with pg.connect() as admin:
        for i in range(count):
            name = f"bench_shard_{i:03d}"
            admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
            admin.execute(f'CREATE DATABASE "{name}"')
            with pg.connect(name) as conn:
                conn.execute(CUSTOMERS_PG)
            shard_id = f"pg-{i:03d}"
            ids.append(shard_id)
            spec = {"conn_type": "postgres", "host": "127.0.0.1", "port": PG_PORT, "login": "postgres", "schema": name}
            env[_conn_env_var(shard_id)] = json.dumps(spec)
    return Fleet(ids, env)


def pg_schemas(pg: BenchPostgres, count: int) -> Fleet:
    ids, env = [], {}
    with pg.connect() as admin:
        admin.execute('DROP DATABASE IF EXISTS "bench_tenants"')
        admin.execute('CREATE DATABASE "bench_tenants"')
    with pg.connect("bench_tenants", autocommit=False) as conn:
        for i in range(count):
            schema = f"t{i:04d}"
            conn.execute(f"CREATE SCHEMA {schema}")
            conn.execute(CUSTOMERS_PG.replace("customers", f"{schema}.customers"))
            shard_id = f"t-{i:04d}"
            ids.append(shard_id)
            spec = {
                "conn_type": "postgres",
                "host": "127.0.0.1",
                "port": PG_PORT,
                "login": "postgres",
                "schema": "bench_tenants",
                "extra": {"options": f"-c search_path={schema}"},
            }
            env[_conn_env_var(shard_id)] = json.dumps(spec)
        conn.commit()
    return Fleet(ids, env)


def sqlite_files(folder: Path, count: int) -> Fleet:
    folder.mkdir(parents=True, exist_ok=True)
    ids, env, paths = [], {}, []
    for i in range(count):
        path = folder / f"s{i:05d}.db"
        conn = sqlite3.connect(path)
        conn.executescript(CUSTOMERS_SQLITE)
        conn.close()
        shard_id = f"s-{i:05d}"
        ids.append(shard_id)
        paths.append(path)
        env[_conn_env_var(shard_id)] = json.dumps({"conn_type": "sqlite", "host": str(path)})
    return Fleet(ids, env, paths)


# -- /proc sampling: CPU per component, memory of the workers ----------------------------------------------
_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _cpu_of(pid: int) -> float:
    """CPU seconds of ``pid`` and its reaped children (task processes, PostgreSQL backends that ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rfind(")") + 2 :].split()
    return sum(int(v) for v in fields[11:15]) / _TICK  # utime, stime, cutime, cstime


def _rss_of(pid: int) -> int:
    """RSS of ``pid`` in bytes (0 when it is gone): /proc/<pid>/statm, cheap enough to read every second."""
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


def _pss_of(pid: int) -> int:
    """PSS of ``pid`` in bytes: its private pages plus its share of the pages shared after fork."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, IndexError, ValueError):
        pass
    return 0


def _machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return float(sum(values) - idle), float(sum(values))


class Sampler:
    """While a run goes: CPU seconds per component (trees, sampled at the start and end) and the peak memory of
    the worker processes (every 0.5 s)."""

    def __init__(self, roots: dict[str, int], workers: list[int]) -> None:
        self.roots, self.workers = roots, workers
        self.peak_rss_sum = self.peak_pss_sum = self.peak_rss_max = 0
        self.peak_processes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _cpu(self) -> dict[str, float]:
        return {name: sum(_cpu_of(pid) for pid in process_tree(root)) for name, root in self.roots.items()}

    def _loop(self) -> None:
        tick = 0
        while not self._stop.is_set():
            pids = [pid for root in self.workers for pid in process_tree(root)]
            rss = [_rss_of(pid) for pid in pids]
            self.peak_rss_sum = max(self.peak_rss_sum, sum(rss))
            self.peak_rss_max = max([self.peak_rss_max, *rss])
            self.peak_processes = max(self.peak_processes, len(pids))
            if tick % 3 == 0:  # smaps_rollup walks the page tables: every 3 s only
                self.peak_pss_sum = max(self.peak_pss_sum, sum(_pss_of(pid) for pid in pids))
            tick += 1
            self._stop.wait(1.0)

    @contextmanager
    def measure(self) -> Iterator[dict[str, Any]]:
        out: dict[str, Any] = {}
        before, machine = self._cpu(), _machine_cpu()
        load = os.getloadavg()[0]
        self._thread.start()
        try:
            yield out
        finally:
            self._stop.set()
            self._thread.join()
            after, machine_after = self._cpu(), _machine_cpu()
            busy = (machine_after[0] - machine[0]) / max(1.0, machine_after[1] - machine[1])
            out["cpu_s"] = {name: max(0.0, after[name] - before[name]) for name in after}
            out["machine_busy"] = busy
            out["load_before"] = load
            out["load_after"] = os.getloadavg()[0]
            out["worker_rss_peak_sum_mb"] = self.peak_rss_sum / 2**20
            out["worker_pss_peak_sum_mb"] = self.peak_pss_sum / 2**20
            out["worker_rss_peak_max_mb"] = self.peak_rss_max / 2**20
            out["worker_processes_peak"] = self.peak_processes


# -- one deployment per scenario ----------------------------------------------------------------------------
def migration(name: str, up: str, down: str, parallelism: int, execution: str, gate: bool = True) -> MigrationSpec:
    return MigrationSpec(
        name,
        up=up,
        down=down,
        options={
            "strategy": "parallel",
            "max_parallelism": parallelism,
            "execution": execution,
            "validate_before_apply": gate,
            "depends_on": [],
        },
    )


@dataclass
class Bench:
    label: str
    fleet: Fleet
    parallelism: int
    output: Path
    pg: BenchPostgres
    #: Airflow settings of this benchmark run beyond the harness's (``--heartbeat``, ``--api-pool``).
    settings: dict[str, str] = field(default_factory=dict)
    deployment: Deployment | None = None

    def start(self, specs: list[MigrationSpec]) -> None:
        slots = math.ceil(self.parallelism / 2) + 2
        env = {
            **self.fleet.env,
            "AIRFLOW__CORE__PARALLELISM": str(2 * slots + 8),
            "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(2 * slots + 8),
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "tests.e2e.hostname.worker_hostname",
            **self.settings,
        }
        root = self.output / self.label
        dags = root / "dags"
        expected = write_migrations_project(dags / "bench", self.fleet.topology(), specs, rollback=False)
        self.deployment = Deployment(
            output_dir=root, dags_folder=dags, extra_env=env, worker_concurrency=slots, own_redis=True
        )
        self.deployment.register_server(self.pg)
        began = time.monotonic()
        self.deployment.start(timeout=600, expect_dags=expected)
        print(
            f"[{self.label}] deployment ready in {time.monotonic() - began:.1f}s: 2 workers x {slots} slots, "
            f"{len(self.fleet.shard_ids)} shards",
            flush=True,
        )

    def roots(self) -> dict[str, int]:
        assert self.deployment is not None and self.pg.pid is not None
        roots = {c.name: c.proc.pid for c in self.deployment.components if c.proc is not None}
        roots["postgres"] = self.pg.pid
        return roots

    def run(self, spec: MigrationSpec, *, timeout: float = 900.0) -> dict[str, Any]:
        assert self.deployment is not None
        api = self.deployment.api()
        dag_id = migration_dag_id(spec.id)
        workers = [c.proc.pid for c in self.deployment.components if c.name.startswith("worker") and c.proc]
        sampler = Sampler(self.roots(), workers)
        with sampler.measure() as usage:
            run_id = api.trigger(dag_id)["dag_run_id"]  # the defaults: stop_on_first_failure (lanes read the board)
            run = self._wait(api, dag_id, run_id, timeout)
        if run["state"] != "success":
            raise SystemExit(f"{dag_id} run {run_id} ended {run['state']}; logs in {self.deployment.logs}")
        tis = api.task_instances(dag_id, run_id)
        result = timeline(run, tis, spec, len(self.fleet.shard_ids), self.parallelism)
        if spec.options["execution"] == "lanes":
            result |= lanes_detail(api, dag_id, run_id, tis)
        mode = spec.options["execution"] + ("" if spec.options["validate_before_apply"] else ", no drift gate")
        return result | usage | {"migration": spec.id, "execution": mode}

    def _wait(self, api: Any, dag_id: str, run_id: str, timeout: float) -> dict[str, Any]:
        """Poll the run until it ends (an api-server too busy to answer within 30 s is asked again)."""
        import httpx

        assert self.deployment is not None
        end = time.monotonic() + timeout
        while True:
            self.deployment.check_alive()
            try:
                run = api.run(dag_id, run_id)
                if run["state"] in ("success", "failed"):
                    return dict(run)
            except httpx.TimeoutException:
                print(f"[{self.label}] the api-server did not answer within 30 s; asking again", flush=True)
            if time.monotonic() > end:
                raise SystemExit(f"{dag_id} run {run_id} not over after {timeout:g}s; logs in {self.deployment.logs}")
            time.sleep(0.5)

    def stop(self) -> None:
        if self.deployment is not None:
            self.deployment.stop()


def timeline(
    run: dict[str, Any], tis: list[dict[str, Any]], spec: MigrationSpec, shards: int, p: int
) -> dict[str, Any]:
    start, end = ts(run["start_date"]), ts(run["end_date"])
    assert start is not None and end is not None
    by_id = {(t["task_id"], t["map_index"]): t for t in tis}
    preflight = by_id[("preflight", -1)]
    spans = intervals(tis)
    starts, ends = sorted(s.start for s in spans), sorted(s.end for s in spans)
    physical = math.ceil(shards / p) * SLEEP_S if "sleep" in spec.id else 0.0
    wall = seconds(start, end)
    return {
        "wall_s": wall,
        "physical_s": physical,
        "ratio": wall / physical if physical else None,
        "preflight_s": seconds(ts(preflight["start_date"]) or start, ts(preflight["end_date"]) or start),
        "start_to_preflight_end_s": seconds(start, ts(preflight["end_date"]) or start),
        "preflight_end_to_first_shard_task_s": seconds(ts(preflight["end_date"]) or start, starts[0]),
        "shard_tasks": len(spans),
        "shard_task_start_stagger_s": seconds(starts[0], starts[min(len(starts), p) - 1]),
        "shard_phase_s": seconds(starts[0], ends[-1]),
        "after_shards_s": seconds(ends[-1], end),
    }


def lanes_detail(api: Any, dag_id: str, run_id: str, tis: list[dict[str, Any]]) -> dict[str, Any]:
    """Inside the lanes: time in the per-shard function vs the rest of the lane, lanes per worker."""
    lanes = [t for t in tis if t["task_id"] == LANES_TASK_ID]
    inside, outside, count = [], [], 0
    hosts: dict[str, int] = {}
    for lane in lanes:
        statuses = api.xcom(dag_id, run_id, LANES_TASK_ID, lane["map_index"]) or []
        lane_s = seconds(ts(lane["start_date"]), ts(lane["end_date"]))  # type: ignore[arg-type]
        in_shards = sum(s["duration_ms"] for s in statuses) / 1000
        count += len(statuses)
        inside += [s["duration_ms"] / 1000 for s in statuses]
        outside.append((lane_s - in_shards) / max(1, len(statuses)))
        hosts[lane.get("hostname") or "?"] = hosts.get(lane.get("hostname") or "?", 0) + 1
    return {
        "lanes": len(lanes),
        "lane_shards": count,
        "per_shard_in_apply_ms": 1000 * statistics.median(inside) if inside else None,
        "per_shard_outside_apply_ms": 1000 * statistics.median(outside) if outside else None,
        "lanes_per_worker": hosts,
    }


# -- baselines of sqlite10k ---------------------------------------------------------------------------------
def raw_sqlite(paths: list[Path], sql: str, threads: int) -> float:
    def one(path: Path) -> None:
        conn = sqlite3.connect(path)
        try:
            conn.execute(sql)
            conn.commit()
        finally:
            conn.close()

    began = time.perf_counter()
    if threads == 1:
        for path in paths:
            one(path)
    else:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            list(pool.map(one, paths))
    return time.perf_counter() - began


def ours_in_process(fleet: Fleet, folder: Path, index: str, threads: int) -> float:
    """The provider's per-shard function on every shard, ``threads`` at a time, in this process (no Airflow
    task): what the per-shard protocol costs without the lanes around it."""
    from airflow_provider_shardmigrate.core.scripts import load_migration
    from airflow_provider_shardmigrate.core.topology import Shard
    from airflow_provider_shardmigrate.engines.runner import apply_to_shard

    os.environ.update(fleet.env)
    spec = MigrationSpec(
        f"bench_inprocess_{index}", up=f"CREATE INDEX {index} ON customers (name);", down=f"DROP INDEX {index};"
    )
    loaded = load_migration(spec.write(folder))
    shards = [Shard(s, s.replace("-", "_")) for s in fleet.shard_ids]
    began = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        outcomes = {status.outcome.value for status in pool.map(lambda s: apply_to_shard(s, loaded), shards)}
    took = time.perf_counter() - began
    assert outcomes == {"succeeded"}, outcomes
    return took


# -- scenarios ----------------------------------------------------------------------------------------------
def sleep_spec(name: str, p: int, execution: str, gate: bool) -> MigrationSpec:
    table = name.replace("-", "_")
    return migration(name, f"{PG_SLEEP}\nCREATE TABLE {table} (id int);", f"DROP TABLE {table};", p, execution, gate)


def scenario_pg(
    label: str, fleet_factory: Callable[[], Fleet], p: int, executions: list[tuple[str, bool]], args: Any, ctx: Any
) -> list[dict[str, Any]]:
    began = time.monotonic()
    fleet = fleet_factory()
    print(f"[{label}] {len(fleet.shard_ids)} shards created in {time.monotonic() - began:.1f}s", flush=True)
    warmup = sleep_spec(f"bench_{label}_warmup", p, "lanes", False)  # not counted; a run like the measured ones
    gates = {"both": (True, False), "on": (True,), "off": (False,)}[args.gate]
    runs = [(r, e, g) for r in range(1, args.repeat + 1) for e, g in executions if g in gates]
    specs = [warmup] + [
        sleep_spec(f"bench_{label}_sleep_{e}{'' if g else '_nogate'}_r{r}", p, e, g) for r, e, g in runs
    ]
    bench = Bench(label, fleet, p, ctx.output, ctx.pg, ctx.settings)
    results = []
    try:
        bench.start(specs)
        bench.run(specs[0])
        for spec in specs[1:]:
            result = bench.run(spec) | {"scenario": label, "shards": len(fleet.shard_ids), "p": p}
            print_run(result)
            results.append(result)
    finally:
        bench.stop()
    return results


def scenario_sqlite(args: Any, ctx: Any) -> list[dict[str, Any]]:
    label, p, count = "sqlite10k", 50, args.sqlite_shards
    began = time.monotonic()
    fleet = sqlite_files(ctx.output / "sqlite", count)
    print(f"[{label}] {count} SQLite files created in {time.monotonic() - began:.1f}s", flush=True)
    baselines = {
        "raw_loop_s": raw_sqlite(fleet.sqlite_paths, "CREATE INDEX idx_raw_loop ON customers (name)", 1),
        "raw_threads_s": raw_sqlite(fleet.sqlite_paths, "CREATE INDEX idx_raw_threads ON customers (name)", p),
        "ours_threads_s": ours_in_process(fleet, ctx.output / "inprocess", "idx_ours_threads", p),
    }
    print(f"[{label}] baselines: " + ", ".join(f"{k} {v:.2f}" for k, v in baselines.items()), flush=True)
    warmup = migration(
        "bench_sqlite10k_warmup",
        "CREATE INDEX idx_warm ON customers (name);",
        "DROP INDEX idx_warm;",
        p,
        "lanes",
        False,
    )
    gates = {"both": (True, False), "on": (True,), "off": (False,)}[args.gate]
    specs = [warmup] + [
        migration(
            f"bench_sqlite10k_r{r}{s}",
            f"CREATE INDEX idx_r{r}{s} ON customers (name);",
            f"DROP INDEX idx_r{r}{s};",
            p,
            "lanes",
            gate,
        )
        for r in range(1, args.repeat + 1)
        for gate, s in ((g, "" if g else "_nogate") for g in gates)
    ]
    bench = Bench(label, fleet, p, ctx.output, ctx.pg, ctx.settings)
    results = []
    try:
        bench.start(specs)
        bench.run(specs[0])
        for spec in specs[1:]:
            result = bench.run(spec) | {"scenario": label, "shards": count, "p": p, **baselines}
            result["lane_view_ms"] = 1000 * (result["shard_phase_s"] - baselines["raw_threads_s"]) * p / count
            result["fleet_view_ms"] = 1000 * (result["wall_s"] - baselines["raw_threads_s"]) / count
            print_run(result)
            results.append(result)
    finally:
        bench.stop()
    return results


def print_run(r: dict[str, Any]) -> None:
    ratio = f", ratio {r['ratio']:.2f}x" if r.get("ratio") else ""
    total = sum(r["cpu_s"].values())
    cpu = ", ".join(f"{k} {v:.1f}" for k, v in sorted(r["cpu_s"].items())) + f" (total {total:.1f}, "
    cpu += f"{1000 * total / r['shards']:.1f} ms per shard)"
    lanes = ""
    if r["execution"].startswith("lanes"):
        lanes = (
            f"; {r['lanes']} lanes {r['lanes_per_worker']}, per shard in apply_to_shard "
            f"{r['per_shard_in_apply_ms']:.0f} ms, "
            f"outside it {r['per_shard_outside_apply_ms']:.0f} ms"
        )
    print(
        f"[{r['scenario']}] {r['migration']}: wall {r['wall_s']:.2f}s (physical {r['physical_s']:g}s{ratio}); "
        f"preflight {r['preflight_s']:.2f}s, run start->preflight end {r['start_to_preflight_end_s']:.2f}s, "
        f"->first shard task {r['preflight_end_to_first_shard_task_s']:.2f}s, "
        f"stagger {r['shard_task_start_stagger_s']:.2f}s, "
        f"shard phase {r['shard_phase_s']:.2f}s, after {r['after_shards_s']:.2f}s{lanes}; machine busy "
        f"{100 * r['machine_busy']:.0f}% (load {r['load_before']:.1f}->{r['load_after']:.1f}); CPU s: {cpu}; workers "
        f"peak RSS sum {r['worker_rss_peak_sum_mb']:.0f} MB, PSS sum {r['worker_pss_peak_sum_mb']:.0f} MB, "
        f"max/process {r['worker_rss_peak_max_mb']:.0f} MB, {r['worker_processes_peak']} processes",
        flush=True,
    )
    if "lane_view_ms" in r:
        print(
            f"[{r['scenario']}] time per shard beyond the DDL: lane view (shard phase {r['shard_phase_s']:.2f}s"
            " - raw DDL "
            f"in 50 threads {r['raw_threads_s']:.2f}s) x 50 / {r['shards']} = {r['lane_view_ms']:.1f} ms (goal <= 20); "
            f"fleet view (wall - raw DDL in 50 threads) / shards = {r['fleet_view_ms']:.2f} ms",
            flush=True,
        )


def report(results: list[dict[str, Any]]) -> None:
    print(
        "\n| scenario | execution | runs | wall median (min-max) s | physical s | wall / physical | preflight s "
        "| lane/shard-task phase s | after s | machine busy | worker peak RSS sum / PSS sum / max per process MB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["scenario"], r["execution"]), []).append(r)
    for (scenario, execution), rows in groups.items():
        walls = [r["wall_s"] for r in rows]
        wall = statistics.median(walls)
        physical = rows[0]["physical_s"]
        ratio = f"**{wall / physical:.2f}x**" if physical else "-"
        print(
            f"| {scenario} ({rows[0]['shards']} shards, P={rows[0]['p']}) | {execution} | {len(rows)} "
            f"| {wall:.2f} ({min(walls):.2f}-{max(walls):.2f}) | {physical:g} | {ratio} "
            f"| {statistics.median(r['preflight_s'] for r in rows):.2f} "
            f"| {statistics.median(r['shard_phase_s'] for r in rows):.2f} "
            f"| {statistics.median(r['after_shards_s'] for r in rows):.2f} "
            f"| {100 * statistics.median(r['machine_busy'] for r in rows):.0f}% "
            f"| {max(r['worker_rss_peak_sum_mb'] for r in rows):.0f} "
            f"/ {max(r['worker_pss_peak_sum_mb'] for r in rows):.0f}"
            f" / {max(r['worker_rss_peak_max_mb'] for r in rows):.0f} |"
        )
    lanes = [r["wall_s"] for r in results if r["scenario"] == "pg100" and r["execution"] == "lanes"]
    per_shard = [r["wall_s"] for r in results if r["scenario"] == "pg100" and r["execution"] == "per_shard"]
    if lanes and per_shard:
        print(
            f"pg100: per_shard / lanes = {statistics.median(per_shard) / statistics.median(lanes):.2f}x (wall medians)"
        )
    sqlite = [r for r in results if r["scenario"] == "sqlite10k"]
    if sqlite:
        r = sqlite[0]
        print(
            f"sqlite10k baselines (same files, this process): raw DDL plain loop {r['raw_loop_s']:.2f}s "
            f"({1000 * r['raw_loop_s'] / r['shards']:.2f} ms/shard), raw DDL 50 threads {r['raw_threads_s']:.2f}s, "
            f"apply_to_shard 50 threads {r['ours_threads_s']:.2f}s; time per shard beyond the DDL, lane view "
            f"median {statistics.median(x['lane_view_ms'] for x in sqlite):.1f} ms (goal <= 20), fleet view "
            f"{statistics.median(x['fleet_view_ms'] for x in sqlite):.2f} ms"
        )


@dataclass
class Context:
    output: Path
    pg: BenchPostgres
    settings: dict[str, str]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--scenario", nargs="+", choices=("pg100", "pg1000", "sqlite10k"), default=["pg100", "pg1000", "sqlite10k"]
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sqlite-shards", type=int, default=10_000)
    parser.add_argument("--pg1000", type=int, default=1_000, help="shards of the pg1000 scenario")
    parser.add_argument("--pg1000-layout", choices=("databases", "schemas"), default="databases")
    parser.add_argument("--pg-databases", type=int, default=100)
    parser.add_argument("--gate", choices=("both", "on", "off"), default="both", help="validate_before_apply runs")
    parser.add_argument(
        "--heartbeat",
        type=float,
        help="[workers] min_heartbeat_interval (the harness tunes it to 1 s for per-shard fan-out; Airflow's is 5)",
    )
    parser.add_argument(
        "--api-pool",
        type=int,
        default=25,
        help="[database] sql_alchemy_pool_size and max_overflow of every component (README, deployment sizing: "
        "50 lanes need more than Airflow's 5 + 10 in the api-server); 0 keeps Airflow's",
    )
    args = parser.parse_args()
    output = new_output_dir("bench-lanes")
    os.environ.setdefault("AIRFLOW_HOME", str(output / "bench-airflow-home"))  # the in-process baseline imports Airflow
    pg = BenchPostgres(output / "postgres")
    pg.start(timeout=120)
    print(
        f"PostgreSQL of the benchmark on 127.0.0.1:{PG_PORT} ({output / 'postgres'}); load {os.getloadavg()}",
        flush=True,
    )
    settings = {}
    if args.heartbeat is not None:
        settings["AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL"] = f"{args.heartbeat:g}"
    if args.api_pool:
        settings["AIRFLOW__DATABASE__SQL_ALCHEMY_POOL_SIZE"] = str(args.api_pool)
        settings["AIRFLOW__DATABASE__SQL_ALCHEMY_MAX_OVERFLOW"] = str(args.api_pool)
    print(f"settings beyond the harness's: {settings or 'none'}", flush=True)
    ctx = Context(output, pg, settings)
    results: list[dict[str, Any]] = []
    try:
        for scenario in args.scenario:
            if scenario == "pg100":
                results += scenario_pg(
                    "pg100",
                    lambda: pg_databases(pg, args.pg_databases),
                    10,
                    [("lanes", True), ("per_shard", True), ("lanes", False)],
                    args,
                    ctx,
                )
            elif scenario == "pg1000":
                layout = (lambda: pg_schemas(pg, args.pg1000)) if args.pg1000_layout == "schemas" else None
                results += scenario_pg(
                    "pg1000",
                    layout or (lambda: pg_databases(pg, args.pg1000)),
                    50,
                    [("lanes", True), ("lanes", False)],
                    args,
                    ctx,
                )
            else:
                results += scenario_sqlite(args, ctx)
            (output / "results.json").write_text(json.dumps(results, indent=2, default=str))
    finally:
        pg.remove()
    report(results)
    print(f"\nper-run data: {output / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
