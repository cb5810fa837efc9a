"""The generated train.py's batch layout: chosen by the attention kernel, printed, and exact.

Padding-free batches are one flattened row with position_ids; length-grouped batches are padded.
Either way the loss of a batch must be what the examples give one by one: the trainer's loss is
token-weighted (SFTTrainer: the summed NLL of every learned token in the batch over their
number), so the reference is the per-example mean losses weighted by their learned-token counts.
"""

from __future__ import annotations

import importlib.util
import itertools

import pytest
import tiny
from smoke import generate, write_spec

torch = pytest.importorskip("torch")

_modules = itertools.count()


def load_recipe(tmp_path, model, data, **overrides):
    run = generate(write_spec(tmp_path, model, data, **overrides), tmp_path / "run")
    spec = importlib.util.spec_from_file_location(
        f"collation_train_{next(_modules)}", run / "train.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def trainer_for(recipe, collation, tmp_path):
    """The script's own Trainer for `collation`, built the way train() builds it, on the CPU."""
    chosen = recipe.choose_collation(collation)
    tokenizer = recipe.setup_tokenizer()
    train_rows, eval_rows = recipe.load_rows()
    train_set, eval_set = recipe.build_datasets(tokenizer, train_rows, eval_rows)
    overrides = {"output_dir": str(tmp_path / "out"), "report_to": []}
    overrides.update(recipe.speed_settings("fp32", chosen, False))
    args = recipe.training_arguments("fp32", bool(eval_set), **overrides)
    model = recipe.setup_model(tokenizer, "fp32")
    return recipe.build_trainer(model, tokenizer, train_set, eval_set, args), train_set


def reference_loss(model, examples):
    """Token-weighted mean of the examples' losses, each example run alone (no padding)."""
    total, tokens = 0.0, 0
    for example in examples:
        ids = torch.tensor([example["input_ids"]])
        labels = torch.tensor([example["labels"]])
        learned = int((labels[:, 1:] != -100).sum())
        with torch.no_grad():
            loss = model(input_ids=ids, labels=labels).loss
        total += float(loss) * learned
        tokens += learned
    return total / tokens


@pytest.mark.parametrize("collation", ["padding_free", "group_by_length"])
@pytest.mark.parametrize("task", ["instruction", "generation"])
def test_batch_loss_equals_token_weighted_per_example_loss(tmp_path, tiny_models, collation, task):
    if task == "instruction":
        data = tiny.write_alpaca(tmp_path / "data.jsonl", rows=24)
    else:  # documents of different lengths
        words = tiny.WORDS[:11]
        docs = [{"body": " ".join(words[: 2 + i % 9] * (1 + i % 4))} for i in range(24)]
        data = tiny.write_rows(tmp_path / "data.jsonl", docs)
    overrides = {}
    if task == "generation":  # one document per sequence (packing would fill every row)
        overrides = {"packing": False, "format": "custom", "dataset": {"columns": {"text": "body"}}}
    recipe = load_recipe(tmp_path, tiny_models("llama"), data, task_type=task, **overrides)
    trainer, train_set = trainer_for(recipe, collation, tmp_path)
    # Examples of different lengths, so padding (or flattening) is really exercised.
    examples = sorted(
        (train_set[i] for i in range(len(train_set))), key=lambda e: len(e["input_ids"])
    )
    batch = [examples[0], examples[len(examples) // 2], examples[-1]]
    assert len({len(e["input_ids"]) for e in batch}) > 1
    inputs = trainer.data_collator(batch)
    if collation == "padding_free":
        assert inputs["input_ids"].shape[0] == 1 and "attention_mask" not in inputs
        assert int((inputs["position_ids"] == 0).sum()) == len(batch)
    else:
        assert inputs["input_ids"].shape[0] == len(batch) and "attention_mask" in inputs
    model = trainer.model.eval()  # no dropout: both sides see the same weights
    with torch.no_grad():
        loss = trainer.compute_loss(model, dict(inputs))
    assert abs(float(loss) - reference_loss(model, batch)) < 1e-5


def test_group_by_length_samples_batches_of_similar_lengths(tmp_path, tiny_models):
    from transformers.trainer_pt_utils import LengthGroupedSampler

    data = tiny.write_alpaca(tmp_path / "data.jsonl", rows=24)
    recipe = load_recipe(tmp_path, tiny_models("llama"), data)
    trainer, train_set = trainer_for(recipe, "group_by_length", tmp_path)
    sampler = trainer._get_train_sampler(trainer.train_dataset)
    assert isinstance(sampler, LengthGroupedSampler)
    # The lengths come from the Arrow "length" column, not from re-reading every example.
    assert sampler.lengths == [len(ids) for ids in train_set["input_ids"]]


def test_start_up_prints_the_collation_and_why(tmp_path, tiny_models, capsys, monkeypatch):
    data = tiny.write_alpaca(tmp_path / "data.jsonl", rows=12)
    recipe = load_recipe(tmp_path, tiny_models("llama"), data)  # rtx_4090: padding_free planned
    assert recipe.COLLATION == "padding_free"
    assert recipe.COLLATION_FALLBACK == "group_by_length"

    monkeypatch.setattr(recipe.torch.cuda, "is_available", lambda: False)
    assert recipe.choose_collation() == "group_by_length"
    assert recipe.ATTN_IMPLEMENTATION is None and not recipe.PADDING_FREE
    out = capsys.readouterr().out
    assert "Collation: group_by_length (no CUDA device, so no varlen attention kernel" in out
    assert "the plan expected padding_free on its target GPU" in out

    # A CUDA GPU without flash-attn installed: still padded, and the fix is named.
    monkeypatch.setattr(recipe.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(recipe.torch.cuda, "get_device_capability", lambda *a: (9, 0))
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        recipe.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "flash_attn" else real_find_spec(name, *a),
    )
    assert recipe.choose_collation() == "group_by_length"
    assert "flash-attn is not installed" in capsys.readouterr().out

    # flash-attn on a pre-Ampere GPU: FlashAttention 2 cannot run there.
    monkeypatch.setattr(
        recipe.importlib.util,
        "find_spec",
        lambda name, *a: object() if name == "flash_attn" else None,
    )
    monkeypatch.setattr(recipe.torch.cuda, "get_device_capability", lambda *a: (7, 5))
    assert recipe.choose_collation() == "group_by_length"
    assert "needs an Ampere+ GPU; this one is sm_75" in capsys.readouterr().out

    # flash-attn on Hopper: padding-free, with the kernel that makes it pay off.
    monkeypatch.setattr(recipe.torch.cuda, "get_device_capability", lambda *a: (9, 0))
    assert recipe.choose_collation() == "padding_free"
    assert recipe.ATTN_IMPLEMENTATION == "flash_attention_2" and recipe.PADDING_FREE
    assert recipe.task_model_arguments(None) == {"attn_implementation": "flash_attention_2"}
    assert "Collation: padding_free (FlashAttention 2" in capsys.readouterr().out


def test_speed_settings_on_a_gpu_are_printed(tmp_path, tiny_models, capsys, monkeypatch):
    data = tiny.write_alpaca(tmp_path / "data.jsonl", rows=12)
    recipe = load_recipe(tmp_path, tiny_models("llama"), data, optimizer="adamw_torch")
    monkeypatch.setattr(recipe.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(recipe.torch.cuda, "get_device_capability", lambda *a: (8, 0))
    monkeypatch.setattr(recipe.importlib.util, "find_spec", lambda name, *a: None)
    settings = recipe.speed_settings("bf16", "padding_free", True)
    assert settings["tf32"] is True
    assert settings["optim"] == "adamw_torch_fused"
    assert settings["dataloader_pin_memory"] is True and settings["dataloader_num_workers"] >= 1
    assert settings["torch_compile"] is True
    assert "use_liger_kernel" not in settings  # liger-kernel is not installed here
    assert "train_sampling_strategy" not in settings  # padding-free needs no grouping
    out = capsys.readouterr().out
    for said in (
        "TF32",
        "fused AdamW",
        "pinned memory",
        "torch.compile",
        "Liger kernels off (liger-kernel is not installed",
    ):
        assert said in out, out


def test_liger_kernel_is_off_on_the_cpu_and_says_why(tmp_path, tiny_models, capsys, monkeypatch):
    data = tiny.write_alpaca(tmp_path / "data.jsonl", rows=12)
    recipe = load_recipe(tmp_path, tiny_models("llama"), data)
    assert recipe.USE_LIGER_KERNEL is True  # llama: planned
    monkeypatch.setattr(recipe.torch.cuda, "is_available", lambda: False)
    settings = recipe.speed_settings("fp32", "group_by_length", False)
    assert "use_liger_kernel" not in settings
    assert "Liger kernels off (no CUDA device" in capsys.readouterr().out
