"""Every task type, dataset format and method: generated train.py runs on tiny offline models.

A covering set rather than the full product: each task, format, method (QLoRA included:
bitsandbytes trains LoRA on 4-bit NF4 on the CPU), file type and tokenizer quirk (no BOS,
pad == eos, no chat template, BOS inside the template) appears at least once. Each case
trains 20 steps and checks finite, falling losses and a saved artifact; some reload what was
saved through eval.py. Methods with few trainable parameters get a higher learning rate so
that the loss visibly falls in 20 steps.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field

import pytest
import yaml

import tiny
from conftest import run_cli
from smoke import assert_trained, generate, run_script, write_spec

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def one_thread_per_run(monkeypatch):
    """Tiny models gain nothing from more threads, and on a busy 2-core machine torch's spinning
    worker threads made a 7 s run take over a minute: each run uses one."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


CLASSIFICATION_COLUMNS = {"text": "review", "label": "sentiment"}
TEXT_COLUMNS = {"text": "body"}
ADAPTER = "adapter_model.safetensors"
MODEL = "model.safetensors"

# The tokenizer/model variants of tests/tiny.py.
LLAMA = ("llama", {})  # BOS, its own pad token, no chat template, untied lm_head
GPT2 = ("gpt2", {"bos": False, "pad_is_eos": True})  # no BOS, pad == eos, tied embeddings
QWEN_CHATML = ("qwen2", {"template": "chatml"})  # a ChatML chat template of its own
LLAMA_HEADER = ("llama", {"template": "header"})  # BOS written by the template, <|eot_id|>


@dataclass
class Case:
    id: str
    model: tuple[str, dict]
    task: str
    format: str
    method: str
    data: str  # file name; its suffix picks the file type
    training: dict = field(default_factory=dict)
    columns: dict | None = None
    evaluate: bool = False

    @property
    def artifact(self) -> str:
        return MODEL if self.method in ("full", "freeze") else ADAPTER


CASES = [
    # chat: the model's own template, or ChatML with new special tokens when it has none
    Case("chat-chatml-lora-llama", LLAMA, "chat", "chatml", "lora", "chat.jsonl", evaluate=True),
    Case("chat-sharegpt-qlora-llama", LLAMA, "chat", "sharegpt", "qlora", "chat.jsonl"),
    Case(
        "chat-chatml-full-gpt2",
        GPT2,
        "chat",
        "chatml",
        "full",
        "chat.jsonl",
        {"learning_rate": 1e-3},
        evaluate=True,
    ),
    Case(
        "chat-sharegpt-ia3-qwen2",
        QWEN_CHATML,
        "chat",
        "sharegpt",
        "ia3",
        "chat.jsonl",
        {"learning_rate": 1e-1},
    ),
    Case(
        "chat-chatml-prompt_tuning-gpt2",
        GPT2,
        "chat",
        "chatml",
        "prompt_tuning",
        "chat.jsonl",
        {"learning_rate": 3e-2},
        evaluate=True,
    ),
    Case("chat-sharegpt-loha-llama_header", LLAMA_HEADER, "chat", "sharegpt", "loha", "chat.jsonl"),
    # instruction: the Alpaca prompt for base models, the chat template when there is one
    Case("instruction-alpaca-dora-gpt2", GPT2, "instruction", "alpaca", "dora", "alpaca.jsonl"),
    Case(
        "instruction-custom_csv-lokr-llama",
        LLAMA,
        "instruction",
        "custom",
        "lokr",
        "alpaca.csv",
        columns={"prompt": "instruction", "input": "input", "response": "output"},
    ),
    Case(
        "instruction-alpaca_json-freeze-llama",
        LLAMA,
        "instruction",
        "alpaca",
        "freeze",
        "alpaca.json",
        {"learning_rate": 1e-3},
    ),
    Case(
        "instruction-sharegpt-prefix_tuning-qwen2",
        QWEN_CHATML,
        "instruction",
        "sharegpt",
        "prefix_tuning",
        "chat.jsonl",
        {"learning_rate": 3e-2},
        evaluate=True,
    ),
    # classification: a sequence-classification head, labels from the data
    Case(
        "classification-alpaca-lora-llama",
        LLAMA,
        "classification",
        "alpaca",
        "lora",
        "alpaca.jsonl",
        evaluate=True,
    ),
    Case(
        "classification-custom_parquet-full-gpt2",
        GPT2,
        "classification",
        "custom",
        "full",
        "reviews.parquet",
        {"learning_rate": 1e-3},
        CLASSIFICATION_COLUMNS,
        evaluate=True,
    ),
    Case(
        "classification-custom_csv-qlora-llama",
        LLAMA,
        "classification",
        "custom",
        "qlora",
        "reviews.csv",
        columns=CLASSIFICATION_COLUMNS,
    ),
    Case(
        "classification-custom-prompt_tuning-llama",
        LLAMA,
        "classification",
        "custom",
        "prompt_tuning",
        "reviews.jsonl",
        {"learning_rate": 3e-2},
        CLASSIFICATION_COLUMNS,
        evaluate=True,
    ),
    Case(
        "classification-custom-ia3-gpt2",
        GPT2,
        "classification",
        "custom",
        "ia3",
        "reviews.jsonl",
        {"learning_rate": 3e-2},
        CLASSIFICATION_COLUMNS,
    ),
    # generation: raw text packed into blocks, every token learned
    Case(
        "generation-custom-lora-gpt2",
        GPT2,
        "generation",
        "custom",
        "lora",
        "text.jsonl",
        {"max_seq_length": 64},
        TEXT_COLUMNS,
        evaluate=True,
    ),
    Case(
        "generation-alpaca-full-llama",
        LLAMA,
        "generation",
        "alpaca",
        "full",
        "alpaca.jsonl",
        {"learning_rate": 1e-3, "max_seq_length": 64},
    ),
    Case(
        "generation-chatml-qlora-qwen2",
        QWEN_CHATML,
        "generation",
        "chatml",
        "qlora",
        "chat.jsonl",
        {"max_seq_length": 64},
    ),
    Case(
        "generation-custom-prefix_tuning-llama",
        LLAMA,
        "generation",
        "custom",
        "prefix_tuning",
        "text.jsonl",
        {"learning_rate": 3e-2, "max_seq_length": 64},
        TEXT_COLUMNS,
    ),
    Case(
        "generation-sharegpt-unpacked-dora-llama",
        LLAMA,
        "generation",
        "sharegpt",
        "dora",
        "chat.jsonl",
        {"max_seq_length": 64, "packing": False},
    ),
]


def write_data(case: Case, folder) -> object:
    path = folder / case.data
    if case.data.startswith("alpaca"):
        items = [
            json.loads(line)
            for line in tiny.write_alpaca(folder / "a.jsonl").read_text().splitlines()
        ]
        return tiny.write_rows(path, items)
    if case.data.startswith("chat"):
        return tiny.write_chat(path, "sharegpt" if case.format == "sharegpt" else "chatml")
    if case.data.startswith("reviews"):
        return tiny.write_classification(path)
    return tiny.write_text(path)


def make_spec(tmp_path, tiny_models, case: Case, **training):
    arch, variant = case.model
    model = tiny_models(arch, **variant)
    data = write_data(case, tmp_path)
    overrides = {"method": case.method, "epochs": 5, **case.training, **training}
    dataset = {"columns": case.columns} if case.columns else {}
    return write_spec(
        tmp_path, model, data, task_type=case.task, format=case.format, dataset=dataset, **overrides
    )


def make_run(tmp_path, tiny_models, case: Case, **training):
    # 48 rows, 38 for training at 4 a step, 5 epochs: 50 planned steps, so every step is
    # logged and evaluation runs every 5; --max-steps 20 stops early.
    return generate(make_spec(tmp_path, tiny_models, case, **training), tmp_path / "run")


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_train_runs(tmp_path, tiny_models, case):
    run = make_run(tmp_path, tiny_models, case)
    result = run_script(run, "train.py", "--max-steps", "20", "--output-dir", "out")
    assert_trained(result, run / "out", case.artifact)
    out = run / "out"
    planned = yaml.safe_load((run / "config.yaml").read_text())["model"]
    if planned["trainable_params"] and "chatml_default" not in (run / "config.yaml").read_text():
        # The planner's exact count is what peft / the script really trains (added chat-token
        # rows are the exception: their count is not planned).
        counted = re.search(r"trainable params: ([\d,]+)", result.stdout)
        assert counted, result.stdout[-2000:]
        assert int(counted.group(1).replace(",", "")) == planned["trainable_params"]
    metrics = json.loads((out / "all_results.json").read_text())
    assert math.isfinite(metrics["eval_loss"])
    if case.task == "classification":
        assert 0 <= metrics["eval_accuracy"] <= 1 and 0 <= metrics["eval_macro_f1"] <= 1
    if case.task == "chat":
        # The tokenizer saved for inference carries the template training used.
        assert (out / "chat_template.jinja").exists() or "chat_template" in json.loads(
            (out / "tokenizer_config.json").read_text()
        )
    if not case.evaluate:
        return
    evaluated = run_script(run, "eval.py", "--model-dir", "out", "--max-samples", "4")
    assert evaluated.returncode == 0, evaluated.stdout[-2000:] + evaluated.stderr[-4000:]
    results = json.loads((out / "eval_metrics.json").read_text())
    loss = results["eval_loss"] if case.task == "classification" else results["token_loss"]
    assert results["eval_rows"] == 4 and math.isfinite(loss)
    if case.task == "classification":
        assert set(results["labels"]) == set(
            json.loads((out / "config.json").read_text())["label2id"]
        )
        assert 0 <= results["accuracy"] <= 1 and 0 <= results["macro_f1"] <= 1
    else:
        assert results["perplexity"] > 1 and results["label_tokens"] > 0


def test_eval_reloads_exactly_what_was_trained(tmp_path, tiny_models):
    """New chat tokens on an untied lm_head: eval.py's perplexity on the whole eval split equals
    the Trainer's final one, so the adapter reloads with the resized, trained embedding rows."""
    case = CASES[0]
    assert case.id == "chat-chatml-lora-llama"
    run = make_run(tmp_path, tiny_models, case)
    result = run_script(run, "train.py", "--max-steps", "10", "--output-dir", "out")
    assert result.returncode == 0, result.stderr[-4000:]
    config = json.loads((run / "out" / "adapter_config.json").read_text())
    assert set(config["trainable_token_indices"]) == {"embed_tokens", "lm_head"}
    evaluated = run_script(run, "eval.py", "--model-dir", "out")
    assert evaluated.returncode == 0, evaluated.stderr[-4000:]
    trained = json.loads((run / "out" / "all_results.json").read_text())["eval_perplexity"]
    reloaded = json.loads((run / "out" / "eval_metrics.json").read_text())["perplexity"]
    assert reloaded == pytest.approx(trained, rel=1e-4)


@pytest.mark.parametrize(
    "case, training, message",
    [
        (
            Case(
                "classification-prefix_tuning",
                LLAMA,
                "classification",
                "custom",
                "prefix_tuning",
                "reviews.jsonl",
                columns=CLASSIFICATION_COLUMNS,
            ),
            {},
            "prefix_tuning cannot train a classification head",
        ),
        (
            Case(
                "prefix-checkpointing",
                LLAMA,
                "instruction",
                "alpaca",
                "prefix_tuning",
                "alpaca.jsonl",
            ),
            {"gradient_checkpointing": True},
            "peft refuses prefix tuning with checkpointing",
        ),
    ],
    ids=["prefix_tuning-classification", "prefix_tuning-gradient_checkpointing"],
)
def test_unsupported_plans_are_refused_at_generate_time(
    tmp_path, tiny_models, case, training, message
):
    """What the installed peft cannot run is refused with the reason, before any script exists."""
    spec = make_spec(tmp_path, tiny_models, case, **training)
    result = run_cli("generate", spec, "-o", tmp_path / "run")
    assert result.returncode == 2
    assert message in result.stderr
    assert not (tmp_path / "run").exists()
