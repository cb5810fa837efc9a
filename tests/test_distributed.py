"""Distributed plans: the accelerate / DeepSpeed / FSDP files they need, accepted by the libraries."""

from __future__ import annotations

import ast
import json
import subprocess

import pytest
import yaml

from conftest import ROOT, run_cli


def spec_file(
    tmp_path,
    distributed="auto",
    gpus=2,
    nodes=1,
    method="lora",
    model="meta-llama/Llama-3.1-8B",
    **extra,
):
    spec = {
        "base_model": model,
        "task_type": "instruction",
        "dataset": {"path": "org/data", "format": "alpaca", "num_examples": 5000},
        "training_config": {"method": method, "distributed": distributed, **extra},
        "hardware": {"gpus": gpus, "nodes": nodes, "gpu_type": "a100_80gb"},
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def training_args(folder):
    tree = ast.parse((folder / "train.py").read_text())
    node = next(
        n
        for n in tree.body
        if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "TRAINING_ARGS"
    )
    return ast.literal_eval(node.value)


@pytest.mark.parametrize("stage", ["deepspeed_zero2", "deepspeed_zero3"])
def test_deepspeed_config_is_valid(tmp_path, stage, monkeypatch):
    deepspeed = pytest.importorskip("deepspeed")
    from deepspeed.runtime.zero.config import DeepSpeedZeroConfig
    from transformers import TrainingArguments

    out = tmp_path / "run"
    run_cli(
        "generate",
        spec_file(tmp_path, distributed=stage, cpu_offload="optimizer"),
        "-o",
        out,
        check=True,
    )
    name = f"ds_{stage.removeprefix('deepspeed_')}.json"
    config = json.loads((out / name).read_text())
    DeepSpeedZeroConfig(**config["zero_optimization"])  # rejects unknown or ill-typed keys
    assert config["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    kwargs = training_args(out)
    assert kwargs["deepspeed"] == name
    monkeypatch.chdir(out)
    args = TrainingArguments(output_dir=str(tmp_path / "o"), use_cpu=True, **kwargs)
    assert args.deepspeed == name
    assert deepspeed.__version__
    accelerate = yaml.safe_load((out / "accelerate.yaml").read_text())
    assert accelerate["distributed_type"] == "DEEPSPEED" and accelerate["num_processes"] == 2


def test_fsdp_arguments_are_accepted(tmp_path):
    from transformers import TrainingArguments

    out = tmp_path / "run"
    run_cli(
        "generate",
        spec_file(tmp_path, distributed="fsdp", gradient_checkpointing=True),
        "-o",
        out,
        check=True,
    )
    kwargs = training_args(out)
    assert kwargs["fsdp_config"]["transformer_layer_cls_to_wrap"] == ["LlamaDecoderLayer"]
    assert (
        kwargs["gradient_checkpointing"] is False
        and kwargs["fsdp_config"]["activation_checkpointing"]
    )
    args = TrainingArguments(output_dir=str(tmp_path / "o"), use_cpu=True, **kwargs)
    assert args.fsdp_config["transformer_layer_cls_to_wrap"] == ["LlamaDecoderLayer"]
    accelerate = yaml.safe_load((out / "accelerate.yaml").read_text())
    assert accelerate["distributed_type"] == "FSDP"


def test_multi_node_launch_script(tmp_path):
    out = tmp_path / "run"
    run_cli("generate", spec_file(tmp_path, gpus=8, nodes=2), "-o", out, check=True)
    launch = (out / "launch.sh").read_text()
    assert "--nnodes 2" in launch and "--nproc_per_node 8" in launch and "NODE_RANK" in launch
    subprocess.run(["bash", "-n", str(out / "launch.sh")], check=True)
    plan = json.loads(
        run_cli("plan", spec_file(tmp_path, gpus=8, nodes=2), "--json", check=True).stdout
    )["plan"]
    assert plan["effective_batch_size"] % 16 == 0  # 16 processes contribute to every step


def test_auto_distribution_records_its_reason(tmp_path):
    plan = json.loads(
        run_cli(
            "plan", spec_file(tmp_path, model="Qwen/Qwen2.5-72B", gpus=8), "--json", check=True
        ).stdout
    )
    decision = next(d for d in plan["plan"]["decisions"] if d["setting"] == "distributed")
    assert plan["plan"]["distributed"] == "deepspeed_zero3"
    assert "ddp" in decision["why"] and "deepspeed_zero3" in decision["why"]


@pytest.mark.slow
def test_two_processes_train_through_launch_sh(tmp_path, tiny_models):
    """launch.sh starts one process per GPU with torchrun; on the CPU two gloo processes stand in."""
    import tiny
    from smoke import assert_trained, generate, run_script, write_spec

    data = tiny.write_alpaca(tmp_path / "alpaca.jsonl", rows=80)
    spec = write_spec(tmp_path, tiny_models("llama"), data, method="lora")
    text = spec.read_text().replace("gpus: 1", "gpus: 2")
    spec.write_text(text)
    run = generate(spec, tmp_path / "run")
    assert "--nproc_per_node 2" in (run / "launch.sh").read_text()
    result = run_script(
        run,
        "-c",
        "import subprocess, sys; sys.exit(subprocess.call(['bash', 'launch.sh', '--max-steps', '12', '--output-dir', 'out']))",
        timeout=600,
    )
    assert "2 process(es)" in result.stdout, result.stdout[-2000:] + result.stderr[-4000:]
    assert_trained(result, run / "out", "adapter_model.safetensors")
