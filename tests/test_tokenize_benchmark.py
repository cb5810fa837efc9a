"""The tokenization benchmark runs in CI at a small size: the builders agree on the ids (and
the new one learns a subset of the old one's tokens), and every case reports its figures."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import ROOT

pytest.importorskip("transformers")


def test_benchmark_compares_the_builders_on_the_same_conversations():
    result = subprocess.run(
        [
            sys.executable,
            "benchmarks/tokenize_speed.py",
            "--conversations",
            "300",
            "--repeats",
            "1",
            "--json",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout)
    assert figures["conversations"] == 300 and figures["assistant_turns"] >= 600
    cases = {"baseline", "builder", "datasets.map", "cached"}
    assert set(figures["examples_per_second"]) == cases
    assert all(value > 0 for value in figures["examples_per_second"].values())
    assert figures["speedup_vs_baseline"]["baseline"] == 1.0
