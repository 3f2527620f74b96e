"""Run every benchmark in turn (``make bench``). Each prints its own ratio against a baseline measured
in the same run; this script only sequences them and stops at the first that fails.

The end-to-end rollout benchmark starts a real Airflow deployment and takes minutes: include it with
``--e2e``.
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
    parser.add_argument("--e2e", action="store_true", help="also run bench_e2e_rollout.py (a real deployment)")
    args = parser.parse_args()
    scripts = [*FAST, *(("bench_e2e_rollout.py",) if args.e2e else ())]
    for script in scripts:
        print(f"\n=== {script} ===", flush=True)
        result = subprocess.run([sys.executable, str(HERE / script)], check=False)
        if result.returncode != 0:
            print(f"{script} failed with exit code {result.returncode}", file=sys.stderr)
            return result.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
