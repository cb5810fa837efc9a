"""Run-time guards of the generated train.py (issue 13): NaN/Inf stop or rollback, the OOM
ladder with fallbacks.json, resume from the newest complete checkpoint, trust_remote_code.

The planner tests are fast; the ones that train run a tiny model for a handful of steps on the
CPU, with the script's test-only fault injection (FINETUNE_GEN_INJECT_*).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import tiny
from conftest import run_cli
from smoke import generate, losses, run_script, write_spec
from finetune_gen.planning.planner import plan_spec
from finetune_gen.models.spec import parse_spec

LLAMA_SPEC = {
    "base_model": "meta-llama/Llama-3.1-8B",
    "task_type": "instruction",
    "dataset": {"path": "data/train.jsonl", "format": "alpaca", "num_examples": 2000},
    "training_config": {"method": "lora"},
    "hardware": {"gpus": 1, "gpu_type": "a100_80gb"},
}


def plan_of(hardware=None, **training):
    spec = json.loads(json.dumps(LLAMA_SPEC))
    spec["training_config"].update(training)
    if hardware:
        spec["hardware"] = hardware
    return plan_spec(parse_spec(spec))


# ---------------------------------------------------------------- planning (fast)


def test_planned_defaults_have_reasons():
    plan, _ = plan_of()
    guards = plan.guards
    assert (guards.on_nan, guards.max_rollbacks, guards.oom_guard) == ("stop", 2, "first_steps")
    assert guards.rollback_lr_factor == 0.1 and guards.rollback_warmup_ratio == 0.03  # the seed's
    assert guards.oom_ladder[0] == "reduce_batch_size"
    decisions = {d.setting: d for d in plan.decisions}
    for name in ("on_nan", "max_rollbacks", "loss_spike_factor", "oom_guard"):
        decision = decisions[f"guards.{name}"]
        assert decision.source == "planner" and len(decision.why) > 30, decision


def test_spec_values_are_honoured():
    plan, _ = plan_of(on_nan="rollback", max_rollbacks=4, loss_spike_factor=0, oom_guard="any_step")
    guards = plan.guards
    assert (guards.on_nan, guards.max_rollbacks, guards.loss_spike_factor, guards.oom_guard) == (
        "rollback",
        4,
        0,
        "any_step",
    )
    decisions = {d.setting: d for d in plan.decisions}
    assert decisions["guards.on_nan"].source == "spec"


def test_oom_guard_is_off_for_several_processes_and_warns_when_asked():
    plan, _ = plan_of(hardware={"gpus": 2, "gpu_type": "a100_80gb"})
    assert plan.guards.oom_guard == "off"
    plan, _ = plan_of(oom_guard="first_steps", hardware={"gpus": 2, "gpu_type": "a100_80gb"})
    assert plan.guards.oom_guard == "first_steps"
    assert any("oom_guard needs a single process" in w for w in plan.warnings)


def test_ladder_and_advice_follow_the_plan():
    plan, _ = plan_of(gradient_checkpointing=True, max_seq_length=2048)
    assert plan.guards.oom_ladder == ["reduce_batch_size"]  # checkpointing is already on
    advice = " ".join(plan.guards.oom_advice)
    assert "qlora" in advice and "cpu_offload" in advice and "max_seq_length: 1024" in advice
    plan, _ = plan_of(method="qlora", gradient_checkpointing=False)
    assert "enable_gradient_checkpointing" in plan.guards.oom_ladder
    assert "method: qlora" not in " ".join(plan.guards.oom_advice)


def test_trust_remote_code_warns_in_the_plan():
    spec = dict(LLAMA_SPEC, trust_remote_code=True)
    plan, _ = plan_spec(parse_spec(spec))
    assert plan.trust_remote_code
    assert any("trust_remote_code" in w and "auto_map" in w for w in plan.warnings)
    plan, _ = plan_spec(parse_spec(LLAMA_SPEC))
    assert not plan.trust_remote_code
    assert not any("trust_remote_code" in w for w in plan.warnings)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("on_nan", "retry", "training_config.on_nan: expected one of stop or rollback"),
        ("loss_spike_factor", 0.5, "training_config.loss_spike_factor: must be above 1"),
        ("max_rollbacks", -1, "training_config.max_rollbacks:"),
        (
            "oom_guard",
            "always",
            "training_config.oom_guard: expected one of off, first_steps or any_step",
        ),
    ],
)
def test_bad_guard_settings_are_one_line_errors(tmp_path, field, value, message):
    spec = json.loads(json.dumps(LLAMA_SPEC))
    spec["training_config"][field] = value
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    result = run_cli("validate", path)
    assert result.returncode == 2
    assert message in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_config_readme_and_script_describe_the_guards(tmp_path):
    spec = json.loads(json.dumps(LLAMA_SPEC))
    spec["training_config"].update(on_nan="rollback", max_rollbacks=3)
    spec["dataset"] = {"path": str(tiny.write_alpaca(tmp_path / "data.jsonl")), "format": "alpaca"}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "run"
    run_cli("generate", path, "-o", out, check=True)
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["guards"]["on_nan"] == "rollback"
    assert config["guards"]["max_rollbacks"] == 3
    assert config["guards"]["oom_ladder"][0] == "reduce_batch_size"
    assert "# " in (out / "config.yaml").read_text().split("guards:")[1].splitlines()[1]
    readme = (out / "README.md").read_text()
    table = readme.split("## If something goes wrong")[1]
    assert "CUDA out of memory" in table and "fallbacks.json" in table
    assert "loss is NaN" in table and "x0.1" in table and "at most 3 time(s)" in table
    assert "newest complete checkpoint" in table
    script = (out / "train.py").read_text()
    assert 'ON_NAN = "rollback"' in script and "MAX_ROLLBACKS = 3" in script
    assert (
        "FINETUNE_GEN_INJECT_NAN_AT_STEP" in script and "FINETUNE_GEN_INJECT_OOM_AT_BATCH" in script
    )
    assert "get_last_checkpoint(" not in script  # it takes the highest number, complete or not


def load_script(path: Path):
    spec = importlib.util.spec_from_file_location("guarded_train", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_memory_ladder_keeps_the_effective_batch(tmp_path, tiny_models):
    model = tiny_models("llama")
    data = tiny.write_alpaca(tmp_path / "alpaca.jsonl", rows=20)
    run = generate(write_spec(tmp_path, model, data, method="lora", batch_size=6), tmp_path / "run")
    train = load_script(run / "train.py")
    shape = train.RunShape.planned()
    seen = []
    while (step := train.next_memory_rung(shape)) is not None:
        action, shape = step
        seen.append((action, shape.micro_batch_size, shape.gradient_accumulation_steps))
        assert shape.micro_batch_size * shape.gradient_accumulation_steps == 6
    assert seen == [
        ("reduce_batch_size", 3, 2),
        ("reduce_batch_size", 1, 6),
        ("enable_gradient_checkpointing", 1, 6),
    ]
    assert (
        "--resume" in train.guards_help()
        and "FINETUNE_GEN_INJECT_NAN_AT_STEP" in train.guards_help()
    )


# ---------------------------------------------------------------- in the generated script (slow)


def tiny_run(tmp_path, tiny_models, **training):
    model = tiny_models("llama")
    data = tiny.write_alpaca(tmp_path / "alpaca.jsonl", rows=48)
    # 38 training rows, micro-batch 4: 10 steps. The planner evaluates and saves a run this
    # short once, at its end; the guards are tested with a checkpoint (and evaluation) at every
    # step, set as a user would, in the script's plan constants.
    run = generate(write_spec(tmp_path, model, data, method="lora", **training), tmp_path / "run")
    script = run / "train.py"
    text, edits = re.subn(r'"(eval_steps|save_steps)": \d+', r'"\1": 1', script.read_text())
    assert edits == 2, "train.py's TRAINING_ARGS no longer hold eval_steps and save_steps"
    script.write_text(text)
    return run


def run_with(folder: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return run_script(folder, "train.py", *args)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def checkpoints(out: Path) -> list[str]:
    return sorted(p.name for p in out.glob("checkpoint-*"))


@pytest.mark.slow
def test_nan_stops_and_keeps_the_last_good_checkpoint(tmp_path, tiny_models):
    # save_total_limit 1: the only good checkpoint must survive the bad step.
    run = tiny_run(tmp_path, tiny_models, save_total_limit=1)
    result = run_with(
        run, {"FINETUNE_GEN_INJECT_NAN_AT_STEP": "3"}, "--max-steps", "6", "--output-dir", "out"
    )
    text = result.stdout + result.stderr
    assert result.returncode == 1, text[-3000:]
    out = run / "out"
    assert checkpoints(out) == ["checkpoint-2"], sorted(p.name for p in out.iterdir())
    assert not (out / "adapter_model.safetensors").exists()  # the NaN model is never saved
    from safetensors.torch import load_file

    weights = load_file(out / "checkpoint-2" / "adapter_model.safetensors")
    assert all(bool(t.isfinite().all()) for t in weights.values())
    assert "Training went wrong at step 3: the loss is nan" in text
    assert "last good checkpoint: out/checkpoint-2" in text
    assert "a lower learning rate: 0.0005 (now 0.005" in text
    assert "gradient clipping at 1.0" in text
    assert "training example" in text and "What colour is the" in text  # the offending rows
    assert "on_nan: rollback" in text

    resumed = run_script(run, "train.py", "--max-steps", "6", "--output-dir", "out", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resuming from out/checkpoint-2" in resumed.stdout
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 6


@pytest.mark.slow
def test_nan_rollback_finishes_with_the_lowered_learning_rate(tmp_path, tiny_models):
    run = tiny_run(tmp_path, tiny_models, on_nan="rollback")
    result = run_with(
        run, {"FINETUNE_GEN_INJECT_NAN_AT_STEP": "3"}, "--max-steps", "6", "--output-dir", "out"
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    out = run / "out"
    record = json.loads((out / "fallbacks.json").read_text())
    (entry,) = record["fallbacks"]
    assert entry["action"] == "rollback" and entry["trigger"] == "non_finite_loss"
    assert entry["changes"]["learning_rate"] == {"from": 0.005, "to": 0.0005}
    assert "out/checkpoint-2" in entry["why"]
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 6
    logged = {e["step"]: e for e in state["log_history"] if "loss" in e}
    assert all(math.isfinite(e["loss"]) for e in logged.values())
    # Steps after the restart run at a tenth of the planned schedule's rate.
    assert all(logged[step]["learning_rate"] <= 0.0005 for step in range(3, 7))
    assert logged[2]["learning_rate"] == pytest.approx(0.005)
    assert "[guard] rollback" in result.stdout


@pytest.mark.slow
def test_oom_halves_the_micro_batch_and_doubles_accumulation(tmp_path, tiny_models):
    run = tiny_run(tmp_path, tiny_models)
    result = run_with(
        run, {"FINETUNE_GEN_INJECT_OOM_AT_BATCH": "4"}, "--max-steps", "3", "--output-dir", "out"
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    out = run / "out"
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 3 and state["train_batch_size"] == 2
    record = json.loads((out / "fallbacks.json").read_text())
    (entry,) = record["fallbacks"]
    assert entry["action"] == "reduce_batch_size" and entry["trigger"] == "out_of_memory"
    assert entry["changes"] == {
        "micro_batch_size": {"from": 4, "to": 2},
        "gradient_accumulation_steps": {"from": 1, "to": 2},
    }
    assert (
        record["current"]["micro_batch_size"] * record["current"]["gradient_accumulation_steps"]
        == 4
    )
    assert "micro_batch_size 4 -> 2" in result.stdout


@pytest.mark.slow
def test_oom_past_the_ladder_names_what_the_plan_needs(tmp_path, tiny_models):
    run = tiny_run(tmp_path, tiny_models, batch_size=1, gradient_checkpointing=True)
    result = run_with(
        run, {"FINETUNE_GEN_INJECT_OOM_AT_BATCH": "1"}, "--max-steps", "2", "--output-dir", "out"
    )
    assert result.returncode == 1
    assert "Out of memory at micro-batch 1" in result.stderr
    assert "finetune-gen plan" in result.stderr and "training_config.method: qlora" in result.stderr
    assert "Traceback" not in result.stderr


def kill_after_checkpoint(run: Path, step: int) -> None:
    """Start train.py and SIGKILL it once checkpoint-<step> is written."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "train.py", "--max-steps", "12", "--output-dir", "out"]
    if (run / "out").exists():
        args.append("--resume")
    process = subprocess.Popen(
        args, cwd=run, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    marker = run / "out" / f"checkpoint-{step}" / "trainer_state.json"
    deadline = time.time() + 300
    while not marker.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    alive = process.poll() is None
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert alive and marker.exists(), "the run ended before it could be killed"


@pytest.mark.slow
def test_resume_after_kills_matches_an_uninterrupted_run(tmp_path, tiny_models):
    run = tiny_run(tmp_path, tiny_models)
    whole = run_script(run, "train.py", "--max-steps", "12", "--output-dir", "whole")
    assert whole.returncode == 0, whole.stderr[-3000:]
    expected = losses(run / "whole")

    # Killed after a checkpoint; then killed again, with its newest checkpoint half-written.
    kill_after_checkpoint(run, 3)
    kill_after_checkpoint(run, 7)
    out = run / "out"
    newest = max(checkpoints(out), key=lambda name: int(name.split("-")[1]))
    weights = out / newest / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])

    resumed = run_script(run, "train.py", "--max-steps", "12", "--output-dir", "out", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Skipping out/{newest}: adapter_model.safetensors is truncated" in resumed.stdout
    assert (out / f"incomplete-{newest}").is_dir()
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 12
    got = losses(out)
    assert len(got) == len(expected) == 12
    assert got == pytest.approx(expected, abs=1e-5, rel=1e-5)


def fake_checkpoint(out: Path, step: int, *, loss: float = 1.0) -> Path:
    """A checkpoint folder as the Trainer writes it (tiny tensors, real file formats)."""
    import torch
    from safetensors.torch import save_file

    folder = out / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    save_file({"w": torch.ones(64)}, str(folder / "adapter_model.safetensors"))
    torch.save({"state": {}}, folder / "optimizer.pt")
    torch.save({"last_epoch": step}, folder / "scheduler.pt")
    state = {"global_step": step, "log_history": [{"step": step, "loss": loss}]}
    (folder / "trainer_state.json").write_text(json.dumps(state))
    return folder


def test_resume_picks_the_newest_complete_checkpoint(tmp_path, tiny_models):
    model = tiny_models("llama")
    data = tiny.write_alpaca(tmp_path / "alpaca.jsonl", rows=20)
    run = generate(write_spec(tmp_path, model, data, method="lora"), tmp_path / "run")
    train = load_script(run / "train.py")
    out = tmp_path / "out"
    good = fake_checkpoint(out, 10)
    assert train.checkpoint_problem(good) is None
    # Newer ones, each broken the way an interrupted save or a bad step leaves them:
    (fake_checkpoint(out, 20) / "trainer_state.json").unlink()
    optimizer = fake_checkpoint(out, 30) / "optimizer.pt"
    optimizer.write_bytes(optimizer.read_bytes()[:40])
    fake_checkpoint(out, 40, loss=float("nan"))
    weights = fake_checkpoint(out, 50) / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8])
    (out / "checkpoint-60").mkdir()  # created, nothing written yet
    problems = {
        step: train.checkpoint_problem(out / f"checkpoint-{step}") for step in (20, 30, 40, 50, 60)
    }
    assert "trainer_state.json" in problems[20]
    assert problems[30] == "optimizer.pt is truncated"
    assert "nan" in problems[40]
    assert problems[50] == "adapter_model.safetensors is truncated"
    assert problems[60]

    assert train.newest_complete_checkpoint(out) == str(good)
    assert checkpoints(out) == [
        "checkpoint-10"
    ]  # the rest set aside, out of save_total_limit's count
    assert sorted(p.name for p in out.glob("incomplete-checkpoint-*")) == [
        f"incomplete-checkpoint-{step}" for step in (20, 30, 40, 50, 60)
    ]


@pytest.mark.slow
def test_trust_remote_code_names_the_code_it_runs(tmp_path, tiny_models):
    import shutil

    model = tmp_path / "remote-model"
    shutil.copytree(tiny_models("llama"), model)
    config = json.loads((model / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_tiny.TinyForCausalLM"}
    (model / "config.json").write_text(json.dumps(config))
    data = tiny.write_alpaca(tmp_path / "alpaca.jsonl", rows=20)
    spec = write_spec(tmp_path, model, data, method="lora")
    spec_data = yaml.safe_load(spec.read_text())
    spec.write_text(yaml.safe_dump({**spec_data, "trust_remote_code": True}))
    run = generate(spec, tmp_path / "run")
    assert "TRUST_REMOTE_CODE = True" in (run / "train.py").read_text()
    result = run_script(run, "train.py", "--check-data")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "trust_remote_code is on" in result.stderr
    assert (
        "AutoModelForCausalLM: modeling_tiny.TinyForCausalLM (file modeling_tiny.py in"
        in result.stderr
    )

    spec.write_text(yaml.safe_dump(spec_data))  # not asked: off, nothing printed
    plain = generate(spec, tmp_path / "plain")
    assert "TRUST_REMOTE_CODE = False" in (plain / "train.py").read_text()


@pytest.mark.slow
def test_oom_at_a_later_step_resumes_from_the_last_checkpoint(tmp_path, tiny_models):
    # 38 rows at micro-batch 4: the epoch's last batch has 2 rows, at step 10; OOM there.
    run = tiny_run(tmp_path, tiny_models, oom_guard="any_step")
    result = run_with(run, {"FINETUNE_GEN_INJECT_OOM_AT_BATCH": "2"}, "--output-dir", "out")
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    out = run / "out"
    record = json.loads((out / "fallbacks.json").read_text())
    steps = [(e["at_step"], e["changes"]["micro_batch_size"]["to"]) for e in record["fallbacks"]]
    # Micro-batch 2 meets a 2-row batch again at the same step; 1 row does not.
    assert steps == [(9, 2), (9, 1)]
    assert all("restarting from out/checkpoint-9" in e["why"] for e in record["fallbacks"])
    assert record["current"]["gradient_accumulation_steps"] == 4
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 10
    assert "Resuming from out/checkpoint-9" in result.stdout
