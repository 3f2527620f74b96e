"""Parse cost: building the DAGs for 20 migrations over a 1,000-shard topology with
``load_migration_dags`` against the same DAG shapes built of EmptyOperator, measured in one run.

Goal (issue 2): ratio <= 1.5x. Prints medians of several repetitions and the ratio.
Run: .venv/bin/python bench/bench_parse.py [--shards 1000] [--migrations 20] [--repeat 5]
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

STRATEGIES = ("sequential", "parallel", "rolling", "canary_first")


def make_project(root: Path, shards: int, migrations: int) -> None:
    lines = ["shards:"] + [f"  - {{id: shard-{i:04d}, conn_id: shard_{i:04d}}}" for i in range(shards)]
    (root / "shards.yaml").write_text("\n".join(lines) + "\n")
    for m in range(migrations):
        folder = root / "migrations" / f"2026{m:04d}_change_{m}"
        folder.mkdir(parents=True)
        (folder / "up.sql").write_text(f"CREATE INDEX idx_{m} ON orders (status);\n")
        (folder / "down.sql").write_text(f"DROP INDEX idx_{m};\n")
        (folder / "migration.yaml").write_text(f"strategy: {STRATEGIES[m % 4]}\nmax_parallelism: 8\n")


def build_ours(root: Path) -> int:
    from airflow_provider_shardmigrate import load_migration_dags

    dags = load_migration_dags(root / "migrations", topology=root / "shards.yaml")
    return sum(len(d.task_dict) for d in dags.values())


def build_baseline(root: Path) -> int:
    """The same shapes (task ids, groups, chains, mapped tasks, trigger rules) of EmptyOperator."""
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.sdk import DAG, TaskGroup, chain

    from airflow_provider_shardmigrate.core.plans import WaveKind, plan_rollout
    from airflow_provider_shardmigrate.core.scripts import load_migrations
    from airflow_provider_shardmigrate.core.topology import load_topology

    topology = load_topology(root / "shards.yaml")
    found = load_migrations(root / "migrations")
    total = 0
    for migration in found.migrations:
        plan = plan_rollout(topology.shards, migration.options)
        with DAG(f"baseline__{migration.id}", schedule=None) as dag:
            with TaskGroup("shards"):
                previous = None
                for wave in plan.waves:
                    if wave.kind is WaveKind.SHARD:
                        task = EmptyOperator(task_id=wave.shards[0].id, trigger_rule="all_done")
                    elif wave.kind is WaveKind.CANARY:
                        task = EmptyOperator(task_id="canary")
                    else:
                        group = TaskGroup(f"batch_{wave.index}") if wave.kind is WaveKind.BATCH else None
                        if group is not None:
                            group.__enter__()
                        if wave.kind is WaveKind.REST:
                            gate = EmptyOperator(task_id="canary_gate")
                            previous >> gate
                            previous = gate
                        task = EmptyOperator.partial(task_id="apply", max_active_tis_per_dagrun=8).expand_kwargs(
                            [{"doc": shard.id} for shard in wave.shards]
                        )
                        if group is not None:
                            group.__exit__(None, None, None)
                    if previous is not None:
                        previous >> task
                    previous = task
            tail = [EmptyOperator(task_id=t, trigger_rule="all_done") for t in ("auto_rollback", "report", "gate")]
            previous >> tail[0]
            chain(*tail)
        with DAG(f"baseline__{migration.id}__rollback", schedule=None) as rollback:
            with TaskGroup("shards"):
                undo = EmptyOperator.partial(task_id="rollback").expand_kwargs(
                    [{"doc": shard.id} for shard in topology.active_shards]
                )
            chain(undo, EmptyOperator(task_id="report"), EmptyOperator(task_id="gate"))
        total += len(dag.task_dict) + len(rollback.task_dict)
    return total


def timed(func, root: Path, repeat: int) -> tuple[float, int]:
    samples = []
    tasks = 0
    for _ in range(repeat):
        gc.collect()
        started = time.perf_counter()
        tasks = func(root)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples), tasks


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shards", type=int, default=1000)
    parser.add_argument("--migrations", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="bench-airflow-"))
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_project(root, args.shards, args.migrations)
        build_baseline(root)  # warm imports for both sides
        build_ours(root)
        # interleave to share machine noise
        ours, base = [], []
        tasks_ours = tasks_base = 0
        for _ in range(args.repeat):
            t, tasks_base = timed(build_baseline, root, 1)
            base.append(t)
            t, tasks_ours = timed(build_ours, root, 1)
            ours.append(t)
    o, b = statistics.median(ours), statistics.median(base)
    print(
        f"parse cost: {args.migrations} migrations x {args.shards} shards (rollout + rollback DAGs), {args.repeat} runs"
    )
    print(f"  baseline (EmptyOperator, same shapes): {b:.3f}s median ({tasks_base} tasks)")
    print(f"  load_migration_dags:                   {o:.3f}s median ({tasks_ours} tasks)")
    print(f"  ratio ours/baseline: {o / b:.2f}x  (goal <= 1.5x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
