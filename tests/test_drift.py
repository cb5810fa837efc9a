"""Decisions made once: the three copies the design review found drifting stay fixed."""

from __future__ import annotations

import json
from pathlib import Path

from finetune_gen.api import generate

ROOT = Path(__file__).resolve().parent.parent


def spec(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return path


def decision(plan, setting):
    return next(d for d in plan.decisions if d.setting == setting)


FULL_ON_24GB = """base_model: mistralai/Mistral-7B-v0.1
task_type: instruction
dataset: {path: tatsu-lab/alpaca, format: alpaca, num_examples: 52002}
training_config: {method: full, batch_size: 4%s}
hardware: {gpus: 1, vram_per_gpu: 24GB, gpu_type: rtx_4090}
"""


def test_qlora_fallback_keeps_an_optimizer_the_spec_set(tmp_path):
    result = generate(spec(tmp_path, FULL_ON_24GB % ", optimizer: adamw_torch"))
    assert result.plan.method == "qlora"  # the fallback happened
    assert result.plan.optimizer == "adamw_torch"
    assert decision(result.plan, "optimizer").source == "spec"


def test_qlora_fallback_says_it_changed_a_planned_optimizer(tmp_path):
    result = generate(spec(tmp_path, FULL_ON_24GB % ""))
    assert result.plan.optimizer == "paged_adamw_8bit"
    assert decision(result.plan, "optimizer").source == "fallback"


def test_requirements_follow_the_optimizer_table(tmp_path):
    text = (ROOT / "examples" / "llama-lora-alpaca.yaml").read_text()
    text = text.replace("epochs: 3", "epochs: 3\n  optimizer: paged_adamw_32bit")
    text = text.replace("data/alpaca_sample.jsonl", str(ROOT / "examples/data/alpaca_sample.jsonl"))
    files = generate(spec(tmp_path, text)).files
    assert "bitsandbytes" in files["requirements.txt"]


def test_resources_estimate_the_plans_label_count(tmp_path):
    rows = [{"text": f"example {i}", "label": f"class{i % 200}"} for i in range(1000)]
    data = tmp_path / "labels.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = generate(
        spec(
            tmp_path,
            "base_model: Qwen/Qwen2.5-0.5B\ntask_type: classification\n"
            f"dataset: {{path: {data}, format: custom, columns: {{text: text, label: label}}}}\n"
            "training_config: {method: full}\nhardware: {gpus: 1, vram_per_gpu: 24GB}\n",
        )
    )
    assert result.plan.num_labels == 200
    from finetune_gen.estimate.shape import shape_for_plan

    assert shape_for_plan(result.plan).num_labels == 200
