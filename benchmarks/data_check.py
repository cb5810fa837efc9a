"""Benchmark: check-data and the planner's row count on a generated JSONL file, in bounded memory.

    python benchmarks/data_check.py                 # quick: 20,000 rows (CI runs this)
    python benchmarks/data_check.py --rows 1000000  # the recorded figure (README, "Checking data")
    python benchmarks/data_check.py --rows 1000000 --memory-limit-mb 1500 --json

Each measurement runs in a fresh process under ``resource.setrlimit(RLIMIT_AS)`` (the memory
limit; exceeding it fails the run) and reports rows/s and the peak RSS (``ru_maxrss``). The rows
are alpaca records of 40-120 words, 1% exact duplicates and 1% near duplicates, so every part
of the check (parsing, record checks, flags, hashing, MinHash, LSH grouping) does real work.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# A 20,000-word vocabulary drawn with a Zipf-like law, as in natural text: unrelated rows share
# common words but few word pairs (a 50-word vocabulary would make every row a near duplicate).
_SYLLABLES = [a + b for a in "bcdfghklmnprstvz" for b in ("a", "e", "i", "o", "u", "ai", "ou")]
WORDS = sorted({"".join(random.Random(i).choices(_SYLLABLES, k=1 + i % 3)) for i in range(20_000)})
_CUMULATIVE = list(itertools.accumulate(1 / (rank + 1) for rank in range(len(WORDS))))


def write_dataset(path: Path, rows: int, seed: int = 0) -> None:
    import numpy as np

    rng = random.Random(seed)
    draw = np.random.default_rng(seed)
    probabilities = np.diff(np.array([0.0, *_CUMULATIVE])) / _CUMULATIVE[-1]
    previous: list[str] = []
    with path.open("w", encoding="utf-8") as handle:
        for start in range(0, rows, 10_000):
            count = min(10_000, rows - start)
            words = draw.choice(len(WORDS), size=(count, 120), p=probabilities)
            lengths = draw.integers(8, 31, size=count), draw.integers(30, 91, size=count)
            for offset in range(count):
                number = start + offset
                if previous and rng.random() < 0.01:  # an exact duplicate
                    handle.write(previous[rng.randrange(len(previous))])
                    continue
                if previous and rng.random() < 0.01:  # a near duplicate: a few words changed
                    row = json.loads(previous[rng.randrange(len(previous))])
                    changed = row["output"].split()
                    for _ in range(2):
                        changed[rng.randrange(len(changed))] = rng.choice(WORDS)
                    row["output"] = " ".join(changed)
                    line = json.dumps(row) + "\n"
                else:
                    ids = words[offset]
                    prompt = " ".join(WORDS[i] for i in ids[: lengths[0][offset]]) + f" {number}"
                    answer = " ".join(WORDS[i] for i in ids[30 : 30 + lengths[1][offset]])
                    line = json.dumps({"instruction": prompt, "input": "", "output": answer}) + "\n"
                handle.write(line)
                if len(previous) < 1000:
                    previous.append(line)
                elif rng.random() < 0.01:
                    previous[rng.randrange(1000)] = line


MEASURE = r"""
import json, resource, sys, time
limit = int(sys.argv[3])
if limit:
    resource.setrlimit(resource.RLIMIT_AS, (limit * 2**20, limit * 2**20))
start = time.perf_counter()
if sys.argv[1] == "check":
    from finetune_gen.data.report import run_check
    report, _ = run_check(sys.argv[2], task_type="instruction", data_format="alpaca",
                          columns={"input": "input", "prompt": "instruction", "response": "output"},
                          progress=False)
    rows, extra = report["rows"], {
        "exact_duplicate_rows": report["duplicates"]["exact"]["extra_rows"],
        "near_duplicate_rows": report["duplicates"]["near"]["extra_rows"],
        "problems": report["problems"]["count"]}
else:
    from finetune_gen.data.stats import read_stats
    stats = read_stats(sys.argv[2], "instruction", "alpaca",
                       {"input": "input", "prompt": "instruction", "response": "output"})
    rows, extra = stats.rows, {"extrapolated": stats.rows_extrapolated}
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"rows": rows, "seconds": round(seconds, 1), "rows_per_s": round(rows / seconds),
                  "peak_rss_mb": round(peak), **extra}))
"""


def measure(kind: str, path: Path, memory_limit_mb: int) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", MEASURE, kind, str(path), str(memory_limit_mb)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    if result.returncode != 0:
        raise SystemExit(
            f"{kind} failed under a {memory_limit_mb} MB limit:\n{result.stderr[-2000:]}"
        )
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument(
        "--memory-limit-mb", type=int, default=1500, help="RLIMIT_AS for each run (0: none)"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.jsonl"
        began = time.perf_counter()
        write_dataset(path, args.rows)
        size_mb = path.stat().st_size / 2**20
        results = {
            "rows": args.rows,
            "file_mb": round(size_mb, 1),
            "memory_limit_mb": args.memory_limit_mb,
            "write_seconds": round(time.perf_counter() - began, 1),
            "check_data": measure("check", path, args.memory_limit_mb),
            "planner_count": measure("count", path, args.memory_limit_mb),
        }
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        check, count = results["check_data"], results["planner_count"]
        print(f"{args.rows:,} rows, {size_mb:.0f} MB JSONL, memory limit {args.memory_limit_mb} MB")
        print(
            f"check-data:    {check['rows_per_s']:>9,} rows/s  {check['seconds']:>7}s  peak RSS {check['peak_rss_mb']} MB"
        )
        print(
            f"planner count: {count['rows_per_s']:>9,} rows/s  {count['seconds']:>7}s  peak RSS {count['peak_rss_mb']} MB"
        )
    return results


if __name__ == "__main__":
    main()
