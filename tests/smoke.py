"""Helpers to generate a run folder for a tiny model and run its scripts in a subprocess."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import yaml

from conftest import ROOT, run_cli


def write_spec(folder: Path, model: Path, data: Path, **overrides) -> Path:
    """A spec for a tiny local model; `overrides` go into training_config (dataset.* and task_type too)."""
    training = {
        "learning_rate": 5e-3,
        "epochs": 1,
        "batch_size": 4,
        "gradient_accumulation_steps": 1,
        "max_seq_length": 256,
    }
    task = overrides.pop("task_type", "instruction")
    data_format = overrides.pop("format", "alpaca")
    dataset = {"path": str(data), "format": data_format, "train_split": 0.8, "eval_split": 0.2}
    dataset.update(overrides.pop("dataset", {}))
    training.update(overrides)
    spec = {
        "base_model": str(model),
        "task_type": task,
        "dataset": dataset,
        "training_config": training,
        "hardware": {"gpus": 1, "vram_per_gpu": "24GB", "gpu_type": "rtx_4090"},
    }
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def generate(spec: Path, out: Path) -> Path:
    run_cli("generate", spec, "-o", out, check=True)
    return out


def run_script(folder: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    # One thread per run: on a busy 2-core machine two torch threads made a 7 s run take a minute.
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, *args],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def losses(output_dir: Path) -> list[float]:
    state = json.loads((output_dir / "trainer_state.json").read_text())
    return [entry["loss"] for entry in state["log_history"] if "loss" in entry]


def assert_trained(
    result: subprocess.CompletedProcess, output_dir: Path, artifact: str
) -> list[float]:
    """Exit 0, a saved artifact, finite losses, and the last 5 logged below the first 5."""
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    assert (output_dir / artifact).exists(), sorted(p.name for p in output_dir.iterdir())
    assert (output_dir / "train_results.json").exists()
    assert (output_dir / "all_results.json").exists()
    values = losses(output_dir)
    assert len(values) >= 10, values
    assert all(math.isfinite(v) for v in values), values
    first, last = sum(values[:5]) / 5, sum(values[-5:]) / 5
    assert last < first, f"loss did not fall: first 5 {values[:5]}, last 5 {values[-5:]}"
    return values


__all__ = ["ROOT", "write_spec", "generate", "run_script", "losses", "assert_trained"]
