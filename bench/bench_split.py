"""Statement splitting (core/sqltext.split_sql) on 1, 2, 10 and 50 MB scripts: time and peak memory,
against a baseline measured in the same run on the same file (reading it and hashing it, as loading a
migration does, and a plain ``str.split(';')``).

Two shapes per size: one INSERT of many rows (a single statement of the whole size) and many small
statements. Each measurement runs in a fresh process so its peak RSS is its own.
Run: .venv/bin/python bench/bench_split.py [--sizes 1 2 10 50]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROW = "(12345, 'customer name; with a semicolon', 'it''s', 3.14159, NULL, '2026-02-16')"
STATEMENT = f"INSERT INTO orders (a, b, c, d, e, f) VALUES {ROW}, {ROW};\n-- a comment; with a semicolon\n"


def make_script(path: Path, megabytes: int, shape: str) -> None:
    target = megabytes * 1024 * 1024
    with path.open("w", encoding="utf-8") as out:
        if shape == "one_insert":
            out.write("INSERT INTO orders (a, b, c, d, e, f) VALUES\n" + ROW)
            written = len(ROW)
            while written < target:
                out.write(",\n" + ROW)
                written += len(ROW) + 2
            out.write(";\n")
        else:
            out.write(STATEMENT * (target // len(STATEMENT)))


def _status_mb(field: str) -> float:
    """VmRSS (now) or VmHWM (peak since the last reset) of this process, in MB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak() -> None:
    """Restart VmHWM from the current RSS (Linux >= 4.0), so the peak measured is the splitter's own."""
    Path("/proc/self/clear_refs").write_text("5")


def measure(path: Path) -> dict[str, float]:
    """In a child process: the baselines, then the splitter, on the file's text."""
    from airflow_provider_shardmigrate.core.scripts import canonical_text
    from airflow_provider_shardmigrate.core.sqltext import lexer, split_sql

    lexer()  # build the lexer (imports sqlparse) outside the timings
    started = time.perf_counter()
    text = canonical_text(path.read_bytes())
    hashlib.sha256(text.encode("utf-8")).hexdigest()
    read_hash = time.perf_counter() - started
    _reset_peak()
    before = _status_mb("VmRSS")
    started = time.perf_counter()
    statements = split_sql(text)
    split = time.perf_counter() - started
    peak = _status_mb("VmHWM")
    started = time.perf_counter()
    text.split(";")
    str_split = time.perf_counter() - started
    return {
        "read_hash_s": read_hash,
        "str_split_s": str_split,
        "split_s": split,
        "statements": len(statements),
        "text_mb": len(text) / 1e6,
        "rss_before_mb": before,
        "rss_peak_mb": peak,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 10, 50], help="script sizes in MB")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(Path(args.child))))
        return 0
    print(
        f"{'shape':<11} {'MB':>4} {'split s':>8} {'s/MB':>5} {'read+hash s':>11} {'ratio':>6} "
        f"{'str.split s':>11} {'statements':>10} {'RSS before':>10} {'peak RSS':>8} {'growth/MB':>9}"
    )
    with tempfile.TemporaryDirectory(prefix="bench-split-") as tmp:
        for megabytes in args.sizes:
            for shape in ("one_insert", "many"):
                path = Path(tmp) / f"{shape}-{megabytes}.sql"
                make_script(path, megabytes, shape)
                child = subprocess.run(
                    [sys.executable, __file__, "--child", str(path)], check=True, capture_output=True, text=True
                )
                r = json.loads(child.stdout.strip().splitlines()[-1])
                path.unlink()
                print(
                    f"{shape:<11} {megabytes:>4} {r['split_s']:>8.2f} {r['split_s'] / r['text_mb']:>5.2f} "
                    f"{r['read_hash_s']:>11.3f} {r['split_s'] / r['read_hash_s']:>5.0f}x {r['str_split_s']:>11.3f} "
                    f"{r['statements']:>10} {r['rss_before_mb']:>10.0f} {r['rss_peak_mb']:>8.0f} "
                    f"{(r['rss_peak_mb'] - r['rss_before_mb']) / r['text_mb']:>9.2f}",
                    flush=True,
                )
    print(
        "ratio = split time / (read + canonicalise + sha256 of the same file); RSS in MB, before splitting (the "
        "script's text is held) and at the peak while splitting; growth/MB = (peak - before) per MB of script"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
