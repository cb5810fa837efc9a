"""The data benchmark runs quickly in CI (5,000 rows) under a memory limit; 1M rows behind --rows."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT


def test_benchmark_streams_under_a_memory_limit():
    result = subprocess.run(
        [
            sys.executable,
            "benchmarks/data_check.py",
            "--rows",
            "5000",
            "--memory-limit-mb",
            "1500",
            "--json",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    check, count = figures["check_data"], figures["planner_count"]
    assert check["rows"] == count["rows"] == 5000 and not count["extrapolated"]
    assert (
        check["problems"] == 0
        and check["exact_duplicate_rows"] > 0
        and check["near_duplicate_rows"] > 0
    )
    assert check["peak_rss_mb"] < 1500 and count["peak_rss_mb"] < 1500
