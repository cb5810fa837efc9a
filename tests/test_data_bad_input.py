"""Malformed data files get exact messages and exit codes from check-data, never a traceback.

Each tests/bad_data/NAME (a data file) has NAME.expected: the check-data arguments on the first
line (`args: ...`), the exit code on the second (`exit N`), then the exact stderr. Update a
snapshot only after reading it (the message is the interface): UPDATE_BAD_DATA=1 pytest ... writes
missing ones. Big or odd inputs (a 40 MB row, a directory, a FIFO, a file over the CSV module's
128 KiB field limit) are made in the tests, not committed.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

BAD = Path(__file__).parent / "bad_data"
CASES = sorted(p.name[: -len(".expected")] for p in BAD.glob("*.expected"))
TIME_LIMIT_S = 60


def _run(*args: str, cwd: Path = BAD) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "finetune_gen", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=TIME_LIMIT_S,
        env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "100"},
    )


def _run_in_process(*args: str) -> tuple[int, str]:
    """The CLI in this process (imports once: the corpus runs in seconds), from BAD."""
    from click.testing import CliRunner

    from finetune_gen.cli import main

    cwd = os.getcwd()
    os.chdir(BAD)
    try:
        result = CliRunner().invoke(main, list(args))
    finally:
        os.chdir(cwd)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        import traceback

        raise AssertionError("".join(traceback.format_exception(result.exception)))
    return result.exit_code, result.stderr


def test_corpus_is_large_enough():
    assert len(CASES) >= 40


@pytest.mark.parametrize("case", CASES)
def test_bad_data_message(case):
    expected = (BAD / f"{case}.expected").read_text()
    args_line, exit_line, stderr = expected.split("\n", 2)
    assert args_line.startswith("args: ") and exit_line.startswith("exit ")
    code, got = _run_in_process("check-data", case, *shlex.split(args_line[len("args: ") :]))
    assert "Traceback" not in got
    assert f"exit {code}\n{got}" == f"{exit_line}\n{stderr}"
    assert code == 2


def test_directory_is_refused(tmp_path):
    (tmp_path / "data.jsonl").mkdir()
    result = _run("check-data", "data.jsonl", "--format", "alpaca", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr == (
        "error: dataset.path: data.jsonl is a directory; name one data file (.jsonl, .json, .csv, .parquet)\n"
    )


def test_fifo_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "data.jsonl")
    result = _run("check-data", "data.jsonl", "--format", "alpaca", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert (
        result.stderr
        == "error: dataset.path: data.jsonl is a FIFO, not a regular file; name a data file\n"
    )


def _spec(tmp_path: Path, data: str) -> Path:
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "base_model: meta-llama/Llama-3.1-8B\ntask_type: instruction\n"
        f"dataset: {{path: {data}, format: alpaca}}\n"
        "training_config: {method: qlora, epochs: 1}\nhardware: {gpus: 1, vram_per_gpu: 24GB}\n"
    )
    return spec


@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_planner_refuses_a_directory_or_fifo_dataset(tmp_path, kind):
    target = tmp_path / "train.jsonl"
    target.mkdir() if kind == "directory" else os.mkfifo(target)
    result = _run("plan", "spec.yaml", cwd=_spec(tmp_path, "train.jsonl").parent)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert ("is a directory" if kind == "directory" else "is a FIFO") in result.stderr
    assert result.stderr.startswith("error: dataset.path: ")


def _peak_rss_mb_of_child(args: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess, float]:
    """Run in a fresh process and report that process's own peak RSS (ru_maxrss of children)."""
    code = (
        "import resource, subprocess, sys, json;"
        f"r = subprocess.run({[sys.executable, '-m', 'finetune_gen', *args]!r}, capture_output=True, text=True);"
        "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024;"
        "print(json.dumps({'rc': r.returncode, 'err': r.stderr, 'peak': peak}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=TIME_LIMIT_S,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    info = json.loads(out.stdout)
    return subprocess.CompletedProcess(args, info["rc"], "", info["err"]), info["peak"]


def test_one_huge_row_is_reported_not_held(tmp_path):
    """A 40 MB single-line row (over the 32 MiB row limit) is named and skipped in bounded memory."""
    row = {"instruction": "x" * (40 * 2**20), "input": "", "output": "y"}
    good = {"instruction": "Name a colour", "input": "", "output": "Blue is a colour."}
    with open(tmp_path / "big.jsonl", "w") as handle:
        handle.write(json.dumps(good) + "\n" + json.dumps(row) + "\n" + json.dumps(good) + "\n")
    result, peak = _peak_rss_mb_of_child(
        ["check-data", "big.jsonl", "--format", "alpaca"], tmp_path
    )
    assert result.returncode == 2, result.stderr
    assert "row 2: row larger than the 32 MiB row limit (40.0 MiB); not read" in result.stderr
    assert peak < 400, f"peak RSS {peak:.0f} MB: the row was held more than once"


def test_planner_refuses_a_huge_row(tmp_path):
    row = {"instruction": "x" * (33 * 2**20), "input": "", "output": "y"}
    (tmp_path / "train.jsonl").write_text(json.dumps(row) + "\n")
    result = _run("plan", "spec.yaml", cwd=_spec(tmp_path, "train.jsonl").parent)
    assert result.returncode == 2 and "row 1: row larger than the 32 MiB row limit" in result.stderr


def test_a_csv_row_over_the_row_limit_is_reported(tmp_path):
    path = tmp_path / "huge.csv"
    path.parent.mkdir(exist_ok=True)
    path.write_text("text,label\ngood film,pos\n" + "x" * (33 * 2**20) + ",neg\nbad film,neg\n")
    try:
        code, stderr = _run_in_process(
            "check-data", str(path), "--format", "custom", "--columns", "text=text,label=label"
        )
    finally:
        path.unlink()
    assert code == 2
    assert "row 2 (line 3): row larger than the 32 MiB row limit (33.0 MiB); not read" in stderr
    assert "1 of 3 rows do not match" in stderr


def test_csv_field_over_128_kib_is_read(tmp_path):
    long_text = "word " * 40_000  # 200 KB in one field: over csv's default 131072-character limit
    (tmp_path / "data.csv").write_text(f'text,label\n"{long_text}",pos\nshort one,neg\n')
    result = _run(
        "check-data",
        "data.csv",
        "--format",
        "custom",
        "--columns",
        "text=text",
        "--columns",
        "label=label",
        "--json",
        cwd=tmp_path,
    )
    assert "Traceback" not in result.stderr
    report = json.loads(result.stdout)
    assert report["rows"] == 2 and report["problems"]["count"] == 0


def test_no_traceback_on_random_bytes(tmp_path):
    """Fuzz a little: random bytes under every suffix end in exit 0 or 2, never a traceback."""
    import random

    rng = random.Random(14)
    for number in range(40):
        suffix = (".jsonl", ".json", ".csv", ".parquet")[number % 4]
        path = tmp_path / f"f{number}{suffix}"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400))))
        try:
            code, _ = _run_in_process("check-data", str(path), "--format", "alpaca")
        finally:
            path.unlink()
        assert code in (0, 2), path


def write_missing_snapshots() -> None:  # pragma: no cover - run by hand after reading the output
    for data in sorted(BAD.iterdir()):
        if data.suffix in (".expected", ".args"):
            continue
        expected = BAD / f"{data.name}.expected"
        args_file = BAD / f"{data.name}.args"
        if expected.exists():
            continue
        args = args_file.read_text().strip()
        code, stderr = _run_in_process("check-data", data.name, *shlex.split(args))
        expected.write_text(f"args: {args}\nexit {code}\n{stderr}")
        args_file.unlink()


if __name__ == "__main__":  # pragma: no cover
    write_missing_snapshots()
