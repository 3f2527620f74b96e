"""Parse cost: building every DAG of a migrations folder with ``load_migration_dags`` (rollout + rollback per
migration, catch-up, status, baseline) against the same DAG shapes built of EmptyOperator after the same reading
and planning (topology, migrations, plans, task layouts), measured in one run, interleaved.

Configurations (default: all three; the strategies cycle sequential, parallel, rolling, canary_first):

* 20 migrations x 1,000 shards, ``execution: per_shard`` (one task instance per shard; goal <= 1.5x);
* 50 migrations x 1,000 shards and 50 x 10,000 shards, ``execution: auto`` = lanes beyond 256 shards (goal
  <= 1.2x and <= 5 s at 10,000); the 10,000 / 1,000 time ratio shows what grows with the fleet.

Prints medians of several repetitions and the ratio ours / baseline.
Run: .venv/bin/python bench/bench_parse.py [--shards 1000 --migrations 20 --execution per_shard] [--repeat 5]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

STRATEGIES = ("sequential", "parallel", "rolling", "canary_first")


def make_project(root: Path, shards: int, migrations: int, execution: str = "auto") -> None:
    lines = ["shards:"] + [f"  - {{id: shard-{i:04d}, conn_id: shard_{i:04d}}}" for i in range(shards)]
    (root / "shards.yaml").write_text("\n".join(lines) + "\n")
    for m in range(migrations):
        folder = root / "migrations" / f"2026{m:04d}_change_{m}"
        folder.mkdir(parents=True)
        (folder / "up.sql").write_text(f"CREATE INDEX idx_{m} ON orders (status);\n")
        (folder / "down.sql").write_text(f"DROP INDEX idx_{m};\n")
        options = f"strategy: {STRATEGIES[m % 4]}\nmax_parallelism: 8\nexecution: {execution}\n"
        (folder / "migration.yaml").write_text(options)


def build_ours(root: Path) -> int:
    from airflow_provider_shardmigrate import load_migration_dags

    dags = load_migration_dags(root / "migrations", topology=root / "shards.yaml")
    return sum(len(d.task_dict) for d in dags.values())


def _shard_tasks(layout: Any) -> tuple[Any, Any]:
    """The shard tasks of ``layout`` (one per shard, mapped over shards, or mapped over lanes) as EmptyOperator,
    chained like ours; returns (first, last)."""
    from contextlib import nullcontext

    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.sdk import TaskGroup

    first = previous = None
    for wave_task in layout:
        with TaskGroup(wave_task.group) if wave_task.group else nullcontext():
            if wave_task.is_lanes:
                task = EmptyOperator.partial(
                    task_id=wave_task.name, max_active_tis_per_dagrun=wave_task.lanes
                ).expand_kwargs([{"doc": str(lane)} for lane in range(wave_task.lanes)])
            elif wave_task.mapped:
                task = EmptyOperator.partial(
                    task_id=wave_task.name, max_active_tis_per_dagrun=wave_task.wave.concurrency
                ).expand_kwargs([{"doc": shard.id} for shard in wave_task.shards])
            else:
                task = EmptyOperator(task_id=wave_task.name, trigger_rule="all_done")
        if previous is not None and previous.task_id.endswith(".canary"):
            gate = EmptyOperator(task_id="canary_gate")
            previous >> gate
            previous = gate
        if previous is not None:
            previous >> task
        first, previous = first or task, task
    return first, previous


def _around(dag_id: str, layout: Any, *, rollbacks: bool) -> Any:
    """preflight -> the shard tasks -> (auto_rollback -> rollbacks) -> report -> gate, of EmptyOperator."""
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.sdk import DAG, TaskGroup, chain

    with DAG(dag_id, schedule=None) as dag:
        preflight = EmptyOperator(task_id="preflight")
        with TaskGroup("shards"):
            first, last = _shard_tasks(layout)
        preflight >> first
        report = EmptyOperator(task_id="report", trigger_rule="all_done")
        if rollbacks:
            decide = EmptyOperator(task_id="auto_rollback", trigger_rule="all_done")
            with TaskGroup("rollbacks"):
                undo = EmptyOperator.partial(task_id="rollback").expand_kwargs(decide.output)
            last >> decide
            [decide, undo] >> report
        else:
            last >> report
        chain(report, EmptyOperator(task_id="gate", trigger_rule="all_done"))
    return dag


def build_baseline(root: Path) -> int:
    """The same DAGs as ``load_migration_dags`` -- rollout, rollback, catch-up, status, baseline; per-shard tasks
    or lanes as each plan says -- with EmptyOperator, after the same reading and planning (topology,
    migrations, plans, task layouts)."""

    from airflow_provider_shardmigrate.core.plans import shared_plans
    from airflow_provider_shardmigrate.core.scripts import load_migrations
    from airflow_provider_shardmigrate.core.topology import load_topology
    from airflow_provider_shardmigrate.dags.common import max_map_length

    topology = load_topology(root / "shards.yaml")
    found = load_migrations(root / "migrations")
    chunk = max_map_length()
    with shared_plans():  # planned as load_migration_dags plans: once per topology and shaping options
        return _baseline_dags(topology, found, chunk)


def _baseline_dags(topology: Any, found: Any, chunk: int) -> int:
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.sdk import DAG

    from airflow_provider_shardmigrate.core.plans import plan_rollout
    from airflow_provider_shardmigrate.dags.catchup import CATCHUP_PARALLELISM, catchup_plan
    from airflow_provider_shardmigrate.dags.layout import TaskLayout
    from airflow_provider_shardmigrate.dags.rollback import rollback_plan

    dags = []
    for migration in found.migrations:
        layout = TaskLayout.of(plan_rollout(topology.shards, migration.options), map_chunk=chunk)
        dags.append(_around(f"baseline__{migration.id}", layout, rollbacks=True))
        undo = TaskLayout.of(rollback_plan(migration, topology), rollback=True, map_chunk=chunk)
        dags.append(_around(f"baseline__{migration.id}__rollback", undo, rollbacks=False))
    catchup = TaskLayout.catchup(catchup_plan(topology, CATCHUP_PARALLELISM), map_chunk=chunk)
    dags.append(_around("baseline_catchup", catchup, rollbacks=False))
    for name in ("status", "baseline"):
        with DAG(f"baseline_{name}", schedule=None) as dag:
            EmptyOperator(task_id="publish")
        dags.append(dag)
    return sum(len(dag.task_dict) for dag in dags)


def timed(func, root: Path, repeat: int) -> tuple[float, int]:
    samples = []
    tasks = 0
    for _ in range(repeat):
        gc.collect()
        started = time.perf_counter()
        tasks = func(root)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples), tasks


def measure(shards: int, migrations: int, execution: str, repeat: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_project(root, shards, migrations, execution)
        build_baseline(root)  # warm imports for both sides
        build_ours(root)
        ours, base = [], []
        tasks_ours = tasks_base = 0
        for _ in range(repeat):  # interleaved, to share the machine's noise
            t, tasks_base = timed(build_baseline, root, 1)
            base.append(t)
            t, tasks_ours = timed(build_ours, root, 1)
            ours.append(t)
    o, b = statistics.median(ours), statistics.median(base)
    goal = "<= 1.5x" if execution == "per_shard" else "<= 1.2x and <= 5 s at 10,000 shards"
    print(f"parse cost: {migrations} migrations x {shards} shards, execution {execution}, {repeat} runs")
    print(f"  baseline (EmptyOperator, same shapes): {b:.3f}s median ({tasks_base} tasks)")
    print(f"  load_migration_dags:                   {o:.3f}s median ({tasks_ours} tasks)")
    print(f"  ratio ours/baseline: {o / b:.2f}x  (goal {goal})", flush=True)
    return {"ours": o, "baseline": b, "tasks": tasks_ours}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", type=int, help="one configuration: this many shards (else the three above)")
    parser.add_argument("--migrations", type=int, default=20)
    parser.add_argument("--execution", choices=("auto", "per_shard", "lanes"), default="auto")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="bench-airflow-"))
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    if args.shards is not None:
        measure(args.shards, args.migrations, args.execution, args.repeat)
        return 0
    measure(1000, 20, "per_shard", args.repeat)
    small = measure(1000, 50, "auto", args.repeat)
    large = measure(10_000, 50, "auto", args.repeat)
    print(
        f"lanes, 50 migrations: 10,000 shards / 1,000 shards = {large['ours'] / small['ours']:.2f}x for ours "
        f"({small['tasks']} -> {large['tasks']} tasks), {large['baseline'] / small['baseline']:.2f}x for the baseline"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
