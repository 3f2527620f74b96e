"""Rollout wall time on a real Airflow deployment (CeleryExecutor, two workers; the e2e harness) against the
physical limit, and the scheduler-to-start latency of every shard task.

16 PostgreSQL shards, each shard's DDL takes 1 s inside the database (``DO $$ BEGIN PERFORM pg_sleep(1); END $$;``):

* parallel, max_parallelism 4: physical limit ceil(16/4) x 1 s = 4 s
* sequential: physical limit 16 x 1 s = 16 s

For every run: wall = dag_run end - start (what a user waits for, report and gate included), the shard phase
(first shard start -> last shard end), ratio = wall / physical, peak shards running at once, and per shard task
the latencies from the task instances: queued -> start (executor + worker pick-up), scheduled -> start (for a
mapped wave this includes waiting for a free max_parallelism slot), and the slot refill (a shard ending -> the
next waiting shard starting: the scheduler's reaction plus the start of a task process).
One warm-up run per deployment is not counted. ``--tuning both`` also measures Airflow's default settings
(scheduler_idle_sleep_time 1 s, min_heartbeat_interval 5 s) in a second deployment, for the ratio between them.

Run: .venv/bin/python bench/bench_e2e_rollout.py [--repeat 3] [--sequential-repeat 2] [--tuning tuned|default|both]
(needs the local PostgreSQL and Redis; `make services`).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e.deployment import Deployment, new_output_dir
from tests.e2e.project import PG_SLEEP_1S, MigrationSpec, migration_dag_id, topology, write_migrations_project
from tests.e2e.timeline import intervals, max_concurrent, seconds, start_latencies, summary, ts

SHARDS = 16
PARALLELISM = 4
SLEEP_S = 1.0


def migrations(repeat: int, sequential_repeat: int) -> dict[str, list[MigrationSpec]]:
    def spec(name: str, strategy: str) -> MigrationSpec:
        return MigrationSpec(
            name,
            up=f"{PG_SLEEP_1S}\nCREATE TABLE {name} (id int);",
            down=f"DROP TABLE {name};",
            # unrelated to each other and run in any order (the warm-up first): independent migrations
            options={
                "strategy": strategy,
                "max_parallelism": PARALLELISM,
                "stop_on_first_failure": False,
                "depends_on": [],
            },
        )

    return {
        "warmup": [spec("bench_warmup", "parallel")],
        "parallel": [spec(f"bench_parallel_r{i}", "parallel") for i in range(1, repeat + 1)],
        "sequential": [spec(f"bench_sequential_r{i}", "sequential") for i in range(1, sequential_repeat + 1)],
    }


def measure(deployment: Deployment, spec: MigrationSpec) -> dict[str, Any]:
    api = deployment.api()
    dag_id = migration_dag_id(spec.id)
    run_id = api.trigger(dag_id, {"stop_on_first_failure": False})["dag_run_id"]
    run = api.wait_run(dag_id, run_id, timeout=300, alive=deployment.check_alive)
    if run["state"] != "success":
        raise SystemExit(f"{dag_id} run {run_id} ended {run['state']}; logs in {deployment.logs}")
    tis = api.task_instances(dag_id, run_id)
    spans = intervals(tis)
    assert len(spans) == SHARDS, f"expected {SHARDS} shard task instances, got {len(spans)}"
    start, end = ts(run["start_date"]), ts(run["end_date"])
    assert start is not None and end is not None
    latencies = start_latencies(spans)
    slots = PARALLELISM if spec.options["strategy"] == "parallel" else 1
    starts, ends = sorted(s.start for s in spans), sorted(s.end for s in spans)
    # Slot refill: the k-th shard to start (k >= slots) waited for the (k - slots)-th shard to end.
    refill = [seconds(ends[k - slots], starts[k]) for k in range(slots, len(starts))]
    return {
        "migration": spec.id,
        "strategy": spec.options["strategy"],
        "wall_s": seconds(start, end),
        "queued_to_run_start_s": seconds(ts(run["queued_at"]) or start, start),
        "shard_phase_s": seconds(min(s.start for s in spans), max(s.end for s in spans)),
        "peak_running": max_concurrent(spans),
        "before_shards_s": seconds(start, starts[0]),
        "after_shards_s": seconds(ends[-1], end),
        "shard_task_s": [seconds(s.start, s.end) for s in spans],
        "slot_refill_s": refill,
        **latencies,
    }


def physical(strategy: str) -> float:
    return (SHARDS if strategy == "sequential" else math.ceil(SHARDS / PARALLELISM)) * SLEEP_S


def run_deployment(tuned: bool, args: argparse.Namespace, server: Any, output: Path) -> list[dict[str, Any]]:
    import pytest

    from tests.server_fixtures import PostgresFleet

    monkeypatch = pytest.MonkeyPatch()
    fleet = PostgresFleet(server, monkeypatch)
    label = "tuned" if tuned else "default"
    deployment = None
    try:
        shard_ids = [f"bench-{label}-{i:02d}" for i in range(SHARDS)]
        env = {}
        for shard_id in shard_ids:
            fleet.add(shard_id)
            env[f"AIRFLOW_CONN_{shard_id.replace('-', '_').upper()}"] = fleet.conn_env(shard_id)
        specs = migrations(args.repeat, args.sequential_repeat)
        root = output / label
        dags = root / "dags"
        expected = write_migrations_project(
            dags / "bench", topology(shard_ids), [s for group in specs.values() for s in group], rollback=False
        )
        deployment = Deployment(
            output_dir=root,
            dags_folder=dags,
            extra_env=env,
            tuned=tuned,
            shard_databases={"postgres": list(fleet.databases.values())},
        )
        began = time.monotonic()
        deployment.start(timeout=300, expect_dags=expected)
        print(f"[{label}] deployment ready in {time.monotonic() - began:.1f}s at {deployment.url}", flush=True)
        measure(deployment, specs["warmup"][0])
        results = []
        for strategy in ("parallel", "sequential"):
            for spec in specs[strategy]:
                result = measure(deployment, spec) | {"tuning": label}
                print(
                    f"[{label}] {spec.id}: wall {result['wall_s']:.2f}s, shards {result['shard_phase_s']:.2f}s, "
                    f"peak {result['peak_running']}",
                    flush=True,
                )
                results.append(result)
        return results
    finally:
        if deployment is not None:
            deployment.stop()
        fleet.drop_all()
        monkeypatch.undo()


def report(results: list[dict[str, Any]]) -> None:
    print()
    print(
        "| tuning | strategy | runs | wall median (min-max) s | physical s | wall / physical | shard phase s "
        "| run start -> 1st shard / last shard -> run end s | shard task start->end median s | peak running "
        "| slot refill (shard end -> next shard start) median / p95 s | queued->start median / p95 s "
        "| scheduled->start median / p95 s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for tuning in ("tuned", "default"):
        for strategy in ("parallel", "sequential"):
            rows = [r for r in results if r["tuning"] == tuning and r["strategy"] == strategy]
            if not rows:
                continue
            walls = [r["wall_s"] for r in rows]
            wall = statistics.median(walls)
            sched = summary([v for r in rows for v in r["scheduled_to_start"]])
            queued = summary([v for r in rows for v in r["queued_to_start"]])
            refill = summary([v for r in rows for v in r["slot_refill_s"]])
            task = statistics.median(v for r in rows for v in r["shard_task_s"])
            before = statistics.median(r["before_shards_s"] for r in rows)
            after = statistics.median(r["after_shards_s"] for r in rows)
            print(
                f"| {tuning} | {strategy} (P={PARALLELISM if strategy == 'parallel' else 1}) | {len(rows)} "
                f"| {wall:.2f} ({min(walls):.2f}-{max(walls):.2f}) | {physical(strategy):g} "
                f"| **{wall / physical(strategy):.2f}x** | {statistics.median(r['shard_phase_s'] for r in rows):.2f} "
                f"| {before:.2f} / {after:.2f} | {task:.2f} | {max(r['peak_running'] for r in rows)} "
                f"| {refill['median']:.2f} / {refill['p95']:.2f} | {queued['median']:.2f} / {queued['p95']:.2f} "
                f"| {sched['median']:.2f} / {sched['p95']:.2f} |"
            )
    tuned = {
        s: [r["wall_s"] for r in results if r["tuning"] == "tuned" and r["strategy"] == s]
        for s in ("parallel", "sequential")
    }
    default = {
        s: [r["wall_s"] for r in results if r["tuning"] == "default" and r["strategy"] == s]
        for s in ("parallel", "sequential")
    }
    for strategy in ("parallel", "sequential"):
        if tuned[strategy] and default[strategy]:
            ratio = statistics.median(default[strategy]) / statistics.median(tuned[strategy])
            print(f"{strategy}: default settings / tuned = {ratio:.2f}x (wall medians)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="parallel runs per deployment (default 3)")
    parser.add_argument("--sequential-repeat", type=int, default=2, help="sequential runs (default 2)")
    parser.add_argument("--tuning", choices=("tuned", "default", "both"), default="tuned")
    args = parser.parse_args()

    from tests.server_fixtures import PostgresServer

    try:
        server = PostgresServer()
        server.sweep_stale()
    except Exception as exc:
        print(f"PostgreSQL is not reachable (start it with `make services`): {exc}", file=sys.stderr)
        return 2
    output = new_output_dir("bench")
    results: list[dict[str, Any]] = []
    try:
        for tuned in {"tuned": [True], "default": [False], "both": [True, False]}[args.tuning]:
            results += run_deployment(tuned, args, server, output)
    finally:
        for name in sorted(server.created):
            server.drop_database(name)
    (output / "results.json").write_text(json.dumps(results, indent=2))
    report(results)
    print(f"\nper-run data: {output / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
