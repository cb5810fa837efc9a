"""What train.py reports while it trains, and what it leaves at the end (issue 15)."""

from __future__ import annotations

import importlib.util
import json
import sys
from types import SimpleNamespace

import pytest
import yaml

import tiny
from conftest import run_cli
from smoke import generate, run_script, write_spec

# What TensorBoard must hold after a CPU run (GPU memory and utilization need a GPU: see
# test_monitor_adds_gpu_memory_and_utilization_on_a_gpu).
TRAIN_TAGS = {
    "train/loss",
    "train/grad_norm",
    "train/learning_rate",
    "train/epoch",
    "train/global_step",
    "train/samples_per_second",
    "train/tokens_per_second",
}
EVAL_TAGS = {"eval/loss", "eval/perplexity"}


def scalar_tags(log_root):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set()
    values = {}
    for folder in sorted(p for p in log_root.iterdir() if p.is_dir()):
        events = EventAccumulator(str(folder))
        events.Reload()
        for tag in events.Tags()["scalars"]:
            tags.add(tag)
            values[tag] = [event.value for event in events.Scalars(tag)]
    return tags, values


@pytest.mark.slow
def test_smoke_run_logs_every_metric_and_leaves_a_summary_and_a_curve(tmp_path, tiny_models):
    model = tiny_models("llama")
    data = tiny.write_alpaca(tmp_path / "alpaca.jsonl", rows=40)
    run = generate(write_spec(tmp_path, model, data, method="lora"), tmp_path / "run")
    result = run_script(run, "train.py", "--max-steps", "12", "--output-dir", "out")
    assert result.returncode == 0, result.stderr[-4000:]
    assert "tensorboard --logdir out/runs" in result.stdout

    tags, values = scalar_tags(run / "out" / "runs")
    assert TRAIN_TAGS | EVAL_TAGS <= tags, sorted(TRAIN_TAGS | EVAL_TAGS - tags)
    assert all(v > 0 for v in values["train/tokens_per_second"])
    # Real tokens only: the collator pads, so the counted tokens are fewer than padded ones.
    summary = json.loads((run / "out" / "run_summary.json").read_text())
    state = json.loads((run / "out" / "trainer_state.json").read_text())
    assert summary["steps"] == 12 == state["global_step"]
    assert summary["tokens_seen"] == state["num_input_tokens_seen"] > 0
    for key in ("wall_time_s", "tokens_per_second", "final_train_loss", "final_eval_loss", "final_eval_perplexity"):
        assert isinstance(summary[key], (int, float)), key
    assert summary["peak_gpu_memory_gb"] is None and summary["device"] == "cpu"
    estimate = json.loads((run / "resources.json").read_text())
    assert summary["measured_vs_estimate"]["gpu_memory_gb"]["estimated"] == estimate["gpu_memory_gb"]
    assert summary["measured_vs_estimate"]["tokens_per_second"]["estimated"] == estimate["tokens_per_second"]
    assert "final_model" in summary
    assert "Run summary: 12 steps" in result.stdout

    png = run / "out" / "loss_curve.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 5000


@pytest.mark.slow
def test_missing_trackers_and_matplotlib_are_skipped_with_a_message(tmp_path, tiny_models):
    model = tiny_models("llama")
    data = tiny.write_alpaca(tmp_path / "alpaca.jsonl", rows=20)
    run = generate(write_spec(tmp_path, model, data, method="lora"), tmp_path / "run")
    blocked = tmp_path / "blocked" / "matplotlib"
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text("raise ImportError('matplotlib blocked for this test')\n")
    import os

    env_path = f"{blocked.parent}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    os.environ["PYTHONPATH"], saved = env_path, os.environ.get("PYTHONPATH")
    try:
        result = run_script(run, "train.py", "--max-steps", "3", "--output-dir", "out", "--report-to", "tensorboard,mlflow")
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH")
        else:
            os.environ["PYTHONPATH"] = saved
    assert result.returncode == 0, result.stderr[-4000:]
    assert "no loss curve" in result.stdout
    assert not (run / "out" / "loss_curve.png").exists()
    assert (run / "out" / "run_summary.json").exists()
    if importlib.util.find_spec("mlflow") is None:
        assert "mlflow is not installed" in result.stdout


def load_train_module(folder):
    spec = importlib.util.spec_from_file_location("generated_train", folder / "train.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(folder))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(folder))
    return module


def catalog_spec(tmp_path, **training):
    spec = {
        "base_model": "meta-llama/Llama-3.1-8B",
        "task_type": "instruction",
        "dataset": {"path": "tatsu-lab/alpaca", "format": "alpaca", "num_examples": 2000, "avg_tokens_per_example": 300},
        "training_config": {"method": "lora", **training},
        "hardware": {"gpus": 1, "vram_per_gpu": "80GB", "gpu_type": "a100_80gb"},
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.slow
def test_monitor_adds_gpu_memory_and_utilization_on_a_gpu(tmp_path, monkeypatch):
    run_cli("generate", catalog_spec(tmp_path), "-o", tmp_path / "run", check=True)
    train = load_train_module(tmp_path / "run")
    cuda = train.torch.cuda
    monkeypatch.setattr(cuda, "is_available", lambda: True)
    monkeypatch.setattr(cuda, "reset_peak_memory_stats", lambda: None)
    monkeypatch.setattr(cuda, "memory_allocated", lambda: 2e9)
    monkeypatch.setattr(cuda, "memory_reserved", lambda: 3e9)
    monkeypatch.setattr(cuda, "max_memory_allocated", lambda: 2.5e9)
    monitor = train.RunMonitor(samples_per_step=8)
    monitor.utilization = lambda: 87
    state = SimpleNamespace(global_step=0, num_input_tokens_seen=0)
    monitor.on_train_begin(None, state, None)
    monitor.last = (monitor.last[0] - 2.0, 0, 0)  # two seconds ago
    state.global_step, state.num_input_tokens_seen = 4, 10000
    logs = {"loss": 1.5, "grad_norm": 0.3, "learning_rate": 1e-4}
    monitor.on_log(None, state, None, logs=logs)
    assert logs["gpu_memory_allocated_gb"] == 2.0
    assert logs["gpu_memory_reserved_gb"] == 3.0
    assert logs["gpu_peak_memory_gb"] == 2.5
    assert logs["gpu_utilization_percent"] == 87
    assert 15 < logs["samples_per_second"] <= 16  # 4 steps x 8 samples in ~2 s
    assert 4900 < logs["tokens_per_second"] <= 5000
    # eval_perplexity is the Trainer's token-weighted one (token_nll); the monitor keeps it.
    evaluation = {"eval_loss": 2.0, "eval_perplexity": 6.5}
    monitor.on_log(None, state, None, logs=evaluation)
    assert evaluation["eval_perplexity"] == 6.5
    assert "samples_per_second" not in evaluation


def plan_of(tmp_path, **training):
    result = run_cli("plan", catalog_spec(tmp_path, **training), "--json", check=True)
    return json.loads(result.stdout)["plan"]


def test_tensorboard_is_the_default_tracker(tmp_path):
    assert plan_of(tmp_path)["report_to"] == ["tensorboard"]
    run_cli("generate", catalog_spec(tmp_path), "-o", tmp_path / "run", check=True)
    source = (tmp_path / "run" / "train.py").read_text()
    assert "REPORT_TO = [\"tensorboard\"]" in source
    assert '"include_num_input_tokens_seen": "non_padding"' in source
    requirements = (tmp_path / "run" / "requirements.txt").read_text()
    assert "tensorboard" in requirements and "matplotlib" in requirements and "wandb" not in requirements


def test_a_wandb_project_adds_wandb(tmp_path):
    plan = plan_of(tmp_path, wandb_project="my-project")
    assert plan["report_to"] == ["tensorboard", "wandb"] and plan["wandb_project"] == "my-project"
    run_cli("generate", catalog_spec(tmp_path, wandb_project="my-project"), "-o", tmp_path / "run", check=True)
    source = (tmp_path / "run" / "train.py").read_text()
    assert 'WANDB_PROJECT = "my-project"' in source and "WANDB_MODE" in source
    assert "wandb" in (tmp_path / "run" / "requirements.txt").read_text()


@pytest.mark.parametrize("report_to, expected", [("mlflow", ["mlflow"]), (["trackio", "tensorboard"], ["trackio", "tensorboard"]), ("none", ["none"])])
def test_report_to_from_the_spec(tmp_path, report_to, expected):
    assert plan_of(tmp_path, report_to=report_to)["report_to"] == expected


def test_unknown_tracker_is_one_message(tmp_path):
    result = run_cli("validate", catalog_spec(tmp_path, report_to="neptune"))
    assert result.returncode == 2
    assert "training_config.report_to" in result.stderr and "Traceback" not in result.stderr
