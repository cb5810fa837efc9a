"""benchmarks/train_efficiency.py: the generated train.py wastes little compute on padding.

The fraction test counts one epoch's batches without training (seconds); the --quick run trains
both arms and is slow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT

pytest.importorskip("transformers")


def benchmark(*args: str, timeout: int = 900) -> dict:
    env = {
        **os.environ,
        "CUDA_VISIBLE_DEVICES": "",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(ROOT),
    }
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "train_efficiency.py"), "--json", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_generated_batches_are_almost_all_useful_tokens():
    arms = benchmark("--count-only")["arms"]
    generated, naive = arms["generated"], arms["naive"]
    assert generated["collation"] == "group_by_length"  # the CPU has no varlen kernel
    assert generated["useful_tokens"] == naive["useful_tokens"]  # the same examples
    assert generated["useful_fraction"] >= 0.95
    assert naive["useful_fraction"] < 0.4


@pytest.mark.slow
def test_quick_run_trains_both_arms_and_the_generated_one_is_faster():
    summary = benchmark("--quick")
    generated, naive = summary["arms"]["generated"], summary["arms"]["naive"]
    assert generated["processed_tokens"] < naive["processed_tokens"]
    assert summary["speedup"] > 1.5, summary
