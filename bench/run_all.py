"""Run every benchmark in turn (``make bench``). Each prints its own ratio against a baseline measured
in the same run; this script only sequences them and stops at the first that fails.

The end-to-end benchmarks start real Airflow deployments and take minutes: include them with ``--e2e``
(``bench_e2e_rollout.py``: 16 shards per shard vs the physical limit; ``bench_e2e_lanes.py``: lanes at 100 and
1,000 PostgreSQL shards and 10,000 SQLite shards, with the api-server DB pool of 25 + 25 the README's sizing
asks for).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
FAST = ("bench_parse.py", "bench_apply_overhead.py", "bench_drift.py", "bench_split.py")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--e2e", action="store_true", help="also run the end-to-end benchmarks (real deployments)")
    args = parser.parse_args()
    scripts: list[tuple[str, ...]] = [(script,) for script in FAST]
    if args.e2e:
        scripts += [("bench_e2e_rollout.py",), ("bench_e2e_lanes.py",)]
    for script, *options in scripts:
        print(f"\n=== {script} {' '.join(options)} ===", flush=True)
        result = subprocess.run([sys.executable, str(HERE / script), *options], check=False)
        if result.returncode != 0:
            print(f"{script} failed with exit code {result.returncode}", file=sys.stderr)
            return result.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
