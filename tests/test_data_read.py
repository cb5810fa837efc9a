"""Data reading streams and counts: every row counted (or an extrapolation that says so), bounded memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from finetune_gen.data import stats as data_stats
from finetune_gen.data.read import DataReader
from finetune_gen.data.stats import read_stats

ALPACA = {"prompt": "instruction", "input": "input", "response": "output"}


def write_rows(path: Path, n: int) -> Path:
    with path.open("w") as handle:
        for i in range(n):
            handle.write(f'{{"instruction": "q{i}", "input": "", "output": "answer {i}"}}\n')
    return path


def test_every_row_is_counted_past_the_old_200k_limit(tmp_path):
    stats = read_stats(
        str(write_rows(tmp_path / "d.jsonl", 250_001)), "instruction", "alpaca", ALPACA
    )
    assert stats.rows == 250_001 and not stats.rows_extrapolated
    assert stats.count_note == "250001 rows counted"


def test_past_the_read_limit_the_count_is_extrapolated_and_said(tmp_path):
    path = write_rows(tmp_path / "d.jsonl", 20_000)
    stats = read_stats(str(path), "instruction", "alpaca", ALPACA, max_bytes=100_000)
    assert stats.rows_extrapolated and stats.rows_read < 20_000
    assert abs(stats.rows - 20_000) / 20_000 < 0.05
    assert "extrapolated from the first" in stats.count_note


def test_the_plan_says_when_rows_are_extrapolated(tmp_path, monkeypatch):
    from finetune_gen.api import plan_file

    write_rows(tmp_path / "train.jsonl", 5_000)
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "base_model: meta-llama/Llama-3.1-8B\ntask_type: instruction\n"
        "dataset: {path: train.jsonl, format: alpaca}\n"
        "training_config: {method: qlora, epochs: 1}\nhardware: {gpus: 1, vram_per_gpu: 24GB}\n"
    )
    plan = plan_file(spec).plan
    assert plan.dataset.num_examples == 5_000
    assert not any("extrapolated" in w for w in plan.warnings)
    monkeypatch.setattr(data_stats, "PLAN_READ_LIMIT_BYTES", 20_000)
    plan = plan_file(spec).plan
    assert any(
        w.startswith("dataset rows extrapolated: about ") for w in plan.warnings
    ), plan.warnings
    assert abs(plan.dataset.num_examples - 5_000) < 250


def test_json_array_and_object_forms_are_streamed_with_line_numbers(tmp_path):
    rows = [{"instruction": f"q{i}", "input": "", "output": f"a{i}"} for i in range(3)]
    (tmp_path / "a.json").write_text(json.dumps(rows, indent=2))
    (tmp_path / "b.json").write_text(json.dumps({"version": 1, "train": rows}))
    a = list(DataReader(tmp_path / "a.json"))
    b = list(DataReader(tmp_path / "b.json"))
    assert [r.value for r in a] == rows == [r.value for r in b]
    assert [r.line for r in a] == [2, 7, 12]


def test_parquet_rows_are_counted_from_metadata(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    rows = [{"instruction": f"q{i}", "input": "", "output": f"a{i}"} for i in range(3000)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet", row_group_size=500)
    stats = read_stats(str(tmp_path / "d.parquet"), "instruction", "alpaca", ALPACA, max_bytes=1)
    assert stats.rows == 3000 and not stats.rows_extrapolated


def _peak_rss_mb(code: str) -> float:
    """Peak RSS of a fresh interpreter running ``code`` (ru_maxrss of the child, in MB)."""
    wrapper = (
        "import resource, subprocess, sys;"
        f"subprocess.run([sys.executable, '-c', {code!r}], check=True);"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)"
    )
    out = subprocess.run(
        [sys.executable, "-c", wrapper],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=300,
    )
    return float(out.stdout.strip().splitlines()[-1])


def test_a_large_json_array_is_read_in_bounded_memory(tmp_path):
    """60 MB of .json: the old reader held the whole text and its objects (~5x the file)."""
    path = tmp_path / "big.json"
    row = json.dumps({"instruction": "q" * 200, "input": "", "output": "a" * 300})
    with path.open("w") as handle:
        handle.write("[" + ",\n".join([row] * 120_000) + "]")
    assert path.stat().st_size > 60e6
    baseline = _peak_rss_mb("import finetune_gen.data.stats")
    code = (
        "from finetune_gen.data.stats import read_stats;"
        f"s = read_stats({str(path)!r}, 'instruction', 'alpaca', {ALPACA!r});"
        "assert s.rows == 120000, s.rows"
    )
    peak = _peak_rss_mb(code)
    assert peak - baseline < 40, f"peak {peak:.0f} MB vs {baseline:.0f} MB at start"
