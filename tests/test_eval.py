"""eval.py measures what it claims: chat and instruction scored per turn, stop at end of turn,
one token-weighted perplexity shared with train.py, its own eval_metrics.json, and loading as
training did (4-bit for QLoRA, a device map when one GPU is too small)."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from smoke import generate, run_script, write_spec

import tiny  # noqa: F401  (conftest puts tests/ on the path)

# Four question/answer pairs, each repeated: the eval split holds copies of trained rows, so a
# tiny model that learned the task answers them exactly, and one that did not cannot.
PAIRS = [
    ("alpha beta gamma", "red green blue yellow"),
    ("delta epsilon zeta", "one two three four"),
    ("eta theta iota", "cat dog bird fish"),
    ("kappa lambda mu", "tree river mountain city"),
]


def toy_rows(kind: str, copies: int = 12) -> list[dict]:
    rows = []
    for copy in range(copies):
        for i, (question, answer) in enumerate(PAIRS):
            if kind == "alpaca":
                rows.append({"instruction": question, "input": "", "output": answer})
            elif kind == "chat":
                rows.append(
                    {
                        "messages": [
                            {"role": "user", "content": question},
                            {"role": "assistant", "content": answer},
                        ]
                    }
                )
            else:  # multi-turn: the second answer depends on the second question
                other_q, other_a = PAIRS[(i + 1) % len(PAIRS)]
                rows.append(
                    {
                        "messages": [
                            {"role": "user", "content": question},
                            {"role": "assistant", "content": answer},
                            {"role": "user", "content": other_q},
                            {"role": "assistant", "content": other_a},
                        ]
                    }
                )
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def train_and_evaluate(tmp_path, model, kind, steps, **training):
    data = write_jsonl(tmp_path / f"{kind}.jsonl", toy_rows(kind))
    task = "instruction" if kind == "alpaca" else "chat"
    settings = {"method": "full", "learning_rate": 3e-3, "epochs": 30, "warmup_ratio": 0.0}
    settings.update(training)
    spec = write_spec(
        tmp_path,
        model,
        data,
        task_type=task,
        format="alpaca" if kind == "alpaca" else "chatml",
        **settings,
    )
    run = generate(spec, tmp_path / "run")
    result = run_script(run, "train.py", "--max-steps", str(steps), "--output-dir", "out")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    evaluated = run_script(run, "eval.py", "--model-dir", "out", "--samples", "3")
    assert evaluated.returncode == 0, evaluated.stdout[-2000:] + evaluated.stderr[-4000:]
    return run, json.loads((run / "out" / "eval_metrics.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["chat", "multiturn", "alpaca"])
def test_a_model_that_learned_the_task_scores_high(tmp_path, tiny_models, kind):
    """The issue: a model that had learned the task scored exact_match 0.0 (prompt cut at the
    first user turn, reference = every assistant turn joined, no stop at end of turn)."""
    template = None if kind == "alpaca" else "chatml"
    model = tiny_models("llama", template=template)
    run, metrics = train_and_evaluate(tmp_path, model, kind, steps=120)
    assert metrics["exact_match"] >= 0.9, metrics
    assert metrics["rouge_l"] >= 0.9 and metrics["token_f1"] >= 0.9
    rows = metrics["eval_rows"]
    assert metrics["scored_turns"] == rows * (2 if kind == "multiturn" else 1)
    # Side-by-side samples, base vs fine-tuned.
    samples = [json.loads(line) for line in (run / "out" / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 3 and all({"prompt", "reference", "base", "fine_tuned"} <= set(s) for s in samples)
    assert "| prompt | reference | base | fine_tuned |" in (run / "out" / "samples.md").read_text()
    # train.py's final perplexity and eval.py's are one token-weighted definition.
    trainer_eval = json.loads((run / "out" / "eval_results.json").read_text())
    assert metrics["perplexity"] == pytest.approx(trainer_eval["eval_perplexity"], rel=1e-3)
    assert metrics["label_tokens"] == trainer_eval["eval_label_tokens"]
    assert "perplexity" not in trainer_eval  # eval.py left the Trainer's file alone


@pytest.mark.slow
def test_a_model_that_did_not_learn_scores_low(tmp_path, tiny_models):
    model = tiny_models("llama", template="chatml")
    _, metrics = train_and_evaluate(tmp_path, model, "multiturn", steps=1)
    assert metrics["exact_match"] <= 0.25, metrics
    assert metrics["perplexity"] > 5


@pytest.mark.slow
def test_qlora_eval_loads_the_4bit_base(tmp_path, tiny_models):
    pytest.importorskip("bitsandbytes")
    model = tiny_models("llama")
    data = write_jsonl(tmp_path / "alpaca.jsonl", toy_rows("alpaca", copies=3))
    spec = write_spec(tmp_path, model, data, method="qlora")
    run = generate(spec, tmp_path / "run")
    result = run_script(run, "train.py", "--max-steps", "2", "--output-dir", "out")
    assert result.returncode == 0, result.stderr[-4000:]
    evaluated = run_script(run, "eval.py", "--model-dir", "out", "--no-base")
    assert evaluated.returncode == 0, evaluated.stderr[-4000:]
    loading = json.loads((run / "out" / "eval_metrics.json").read_text())["loading"]
    assert loading["adapter"] and loading["quantization"] == "4-bit"
    assert loading["linear4bit_modules"] >= 2 * 7  # every linear layer of both blocks


def import_eval_script(folder: Path):
    """The generated eval.py as a module (it imports train.py from its own folder)."""
    sys.path.insert(0, str(folder))
    try:
        for name in ("train", "eval"):
            sys.modules.pop(name, None)
        return importlib.import_module("eval")
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop("train", None)
        sys.modules.pop("eval", None)


@pytest.mark.slow
def test_load_arguments_follow_the_plan():
    """70B on 2 x 8 GPUs: the weights (~141 GB) need a device map; QLoRA loads 4-bit."""
    big = import_eval_script(ROOT / "golden" / "llama70b-lora-2nodes" / "expected")
    arguments = big.from_pretrained_arguments("cuda", gpu_count=8, gpu_memory_gb=80.0)
    assert arguments["device_map"] == "auto" and "quantization_config" not in arguments
    assert str(arguments["dtype"]) == "torch.bfloat16"
    qlora = import_eval_script(ROOT / "golden" / "mistral-qlora-2gpu" / "expected")
    arguments = qlora.from_pretrained_arguments("cuda", gpu_count=2, gpu_memory_gb=24.0)
    assert arguments["quantization_config"].load_in_4bit
    assert arguments["quantization_config"].bnb_4bit_quant_type == "nf4"
    assert arguments["device_map"] == {"": 0}  # ~4 GB of 4-bit weights fit one GPU
    cpu = qlora.from_pretrained_arguments("cpu", gpu_count=0, gpu_memory_gb=0.0)
    assert "device_map" not in cpu and str(cpu["dtype"]) == "torch.float32"
