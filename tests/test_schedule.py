"""Evaluation and checkpoints that cost what they are worth, and a time estimate that counts
them, the padding the collation leaves and Liger's fused cross-entropy (issue #11)."""

from __future__ import annotations

import json
import random
from dataclasses import replace

import pytest

from finetune_gen.planning import schedule
from finetune_gen.knowledge.catalog import get_gpu, resolve_model
from finetune_gen.estimate.formulas import (
    DEFAULT_USEFUL_FRACTION,
    TrainingShape,
    estimate_eval_memory,
    estimate_memory,
    estimate_time,
)
from finetune_gen.api import generate as build
from finetune_gen.estimate.padding import useful_fraction
from finetune_gen.knowledge.params import count_params, trainable_params
from finetune_gen.planning.planner import Planner, plan_spec
from finetune_gen.models.spec import parse_spec

LLAMA = resolve_model("meta-llama/Llama-3.1-8B").architecture
COUNTS = count_params(LLAMA)
H100 = get_gpu("h100_80gb")


def lora(**kw) -> TrainingShape:
    base = {
        "method": "lora",
        "trainable_params": trainable_params(LLAMA, "lora", target_modules="all-linear", r=16),
        "precision": "bf16",
        "micro_batch_size": 4,
        "seq_len": 2048,
        "gradient_checkpointing": True,
        "optimizer": "adamw_torch_fused",
    }
    base.update(kw)
    return TrainingShape(**base)


def spec_of(
    rows=20_000,
    tokens=400,
    split=0.1,
    model="meta-llama/Llama-3.2-1B-Instruct",
    path="org/data",
    **training,
):
    return parse_spec(
        {
            "base_model": model,
            "task_type": "instruction",
            "dataset": {
                "path": path,
                "format": "alpaca",
                "num_examples": rows,
                "avg_tokens_per_example": tokens,
                "train_split": 1 - split,
                "eval_split": split,
            },
            "training_config": {"method": "lora", **training},
            "hardware": {"gpus": 1, "vram_per_gpu": 80, "gpu_type": "h100_80gb"},
        }
    )


def decision(plan, setting):
    return next(d for d in plan.decisions if d.setting == setting)


# ---------------------------------------------------------------- cadence and subset


def test_eval_cadence_scales_with_the_run_length():
    short, medium, long = (
        schedule.eval_cadence(n, early_stopping=False).value for n in (30, 300, 3000)
    )
    assert short == 30  # a 30-step run is evaluated once (at its end), not 10 times
    assert medium == 50  # 6 evaluations, 50 steps apart
    assert long == 300  # 10 evaluations
    assert schedule.eval_cadence(100_000, early_stopping=False).value == schedule.MAX_STEPS_PER_EVAL
    # early stopping needs its points: ~10 evaluations even in a short run
    assert schedule.eval_cadence(30, early_stopping=True).value == 3


def test_planned_cadence_follows_the_run_length():
    small, _ = plan_spec(spec_of(rows=400, epochs=1))
    big, _ = plan_spec(spec_of(rows=200_000, epochs=1))
    for plan in (small, big):
        evaluations = -(-plan.schedule.total_steps // plan.eval_steps)
        assert evaluations <= schedule.TARGET_EVALUATIONS
        assert (
            plan.schedule.save_steps % plan.eval_steps == 0
            or plan.schedule.save_steps == plan.schedule.total_steps
        )
    assert small.schedule.total_steps < big.schedule.total_steps
    assert small.eval_steps < big.eval_steps
    assert -(-small.schedule.total_steps // small.eval_steps) < 10  # a short run: fewer evaluations
    assert "optimizer steps" in decision(big, "eval_steps").why


def test_eval_subset_is_capped_with_a_reason():
    plan, _ = plan_spec(spec_of(rows=200_000))
    assert plan.schedule.eval_split_rows == 20_000
    assert plan.schedule.eval_examples == schedule.MAX_EVAL_EXAMPLES
    why = decision(plan, "eval_examples").why
    assert "1/sqrt(rows)" in why and "eval.py evaluates the whole split" in why
    # A small split is evaluated whole.
    small, _ = plan_spec(spec_of(rows=2_000))
    assert small.schedule.eval_examples == small.schedule.eval_split_rows == 200
    # No split: nothing is evaluated during training.
    none, _ = plan_spec(spec_of(rows=2_000, split=0.0))
    assert none.schedule.eval_examples == 0 and none.schedule.evaluations == 0


def test_eval_subset_keeps_evaluation_within_its_compute_budget():
    # 5,000 training rows, 1 epoch, 11 evaluations at 1/3 of a step's FLOPs per token: 0.1 x
    # 5,000 x 3 / 11 = 136 rows per evaluation at most.
    choice = schedule.eval_subset(
        5_000, train_rows=5_000, epochs=1, flops_ratio=3.0, evaluations=11
    )
    assert choice.value == 136 and "10%" in choice.why
    floor = schedule.eval_subset(5_000, train_rows=500, epochs=1, flops_ratio=3.0, evaluations=11)
    assert floor.value == schedule.MIN_EVAL_EXAMPLES and "floor" in floor.why


def test_eval_batch_is_larger_and_its_memory_is_checked(monkeypatch):
    # Without Liger (the eval memory model keeps the logits): room for a larger eval batch.
    monkeypatch.setattr(Planner, "collation_and_liger", lambda self, ctx: ("group_by_length", False))
    plan, _ = plan_spec(spec_of(rows=200_000))
    assert plan.schedule.eval_batch_size > plan.micro_batch_size
    planner = Planner(spec_of(rows=200_000))
    from finetune_gen.estimate.shape import shape_for_plan

    shape = shape_for_plan(plan)
    train_peak = estimate_memory(planner.arch, planner.counts, shape).peak_gb
    assert (
        estimate_eval_memory(planner.arch, planner.counts, shape, plan.schedule.eval_batch_size)
        <= train_peak
    )
    # the next larger batch is refused only by memory or by the subset's size
    assert "training peak" in decision(plan, "eval_batch_size").why


def test_eval_batch_falls_back_to_the_micro_batch_when_memory_says_so():
    choice = schedule.eval_batch(
        4,
        eval_examples=1000,
        world_size=1,
        eval_peak_gb=lambda size: 10.0 + size,
        train_peak_gb=12.0,
    )
    assert choice.value == 4  # 8 would need 18 GB > 12 GB
    roomy = schedule.eval_batch(
        4,
        eval_examples=1000,
        world_size=1,
        eval_peak_gb=lambda size: 1.0 + size / 100,
        train_peak_gb=12.0,
    )
    assert roomy.value == 32


def test_save_cadence_spaces_expensive_checkpoints():
    cheap, _ = schedule.save_cadence(
        1000, 100, best_is_result=False, save_seconds=1, step_seconds=1, checkpoint_gb=0.1
    )
    dear, n = schedule.save_cadence(
        1000, 100, best_is_result=False, save_seconds=20, step_seconds=1, checkpoint_gb=20
    )
    assert cheap.value == 100
    assert dear.value == 400 and n == 3  # 20 s of writing per 400 s of training: 5%
    best, _ = schedule.save_cadence(
        1000, 100, best_is_result=True, save_seconds=20, step_seconds=1, checkpoint_gb=20
    )
    assert best.value == 100 and "best checkpoint" in best.why


# ---------------------------------------------------------------- the time estimate


def test_time_estimate_rises_with_eval_cost_and_checkpoint_writes():
    base = estimate_time(LLAMA, COUNTS, lora(), H100, tokens_per_epoch=10**7, epochs=1)
    with_eval = estimate_time(
        LLAMA, COUNTS, lora(), H100, tokens_per_epoch=10**7, epochs=1, eval_tokens=2 * 10**6
    )
    with_saves = estimate_time(
        LLAMA, COUNTS, lora(), H100, tokens_per_epoch=10**7, epochs=1, checkpoint_bytes=50e9
    )
    assert with_eval.hours > base.hours and with_eval.eval_hours > 0
    # an evaluated token costs a forward pass: less than a trained token
    assert with_eval.eval_hours < 0.2 * base.train_hours * 2
    assert with_saves.checkpoint_hours == pytest.approx(50e9 / (1000 * 2**20) / 3600)
    parts = with_eval.train_hours + with_eval.eval_hours + with_eval.checkpoint_hours
    assert with_eval.hours == pytest.approx(parts + 0.1)


def test_collation_changes_processed_tokens():
    padded = estimate_time(
        LLAMA,
        COUNTS,
        lora(),
        H100,
        tokens_per_epoch=10**7,
        epochs=1,
        useful_fraction=0.48,
        collation="pad_to_longest",
    )
    free = estimate_time(
        LLAMA,
        COUNTS,
        lora(),
        H100,
        tokens_per_epoch=10**7,
        epochs=1,
        useful_fraction=1.0,
        collation="padding_free",
    )
    assert padded.total_tokens == free.total_tokens == 10**7
    assert free.processed_tokens == 10**7
    assert padded.processed_tokens == round(10**7 / 0.48)
    assert padded.train_hours == pytest.approx(free.train_hours / 0.48)
    assert any("pad_to_longest" in a for a in padded.assumptions)


def test_useful_fraction_by_collation_from_the_lengths():
    rng = random.Random(1)
    skewed = [max(8, int(rng.lognormvariate(4.5, 0.9))) for _ in range(3000)]  # a long tail
    random_pad, _ = useful_fraction("pad_to_longest", skewed, micro_batch=8)
    grouped, source = useful_fraction("group_by_length", skewed, micro_batch=8, sampler_batch=32)
    assert random_pad < 0.7 and 0.9 < grouped <= 1.0
    assert "simulated" in source
    assert useful_fraction("padding_free", skewed, micro_batch=8)[0] == 1.0
    assert useful_fraction("packing", None, micro_batch=8)[0] == 1.0
    # equal lengths pad nothing
    assert useful_fraction("pad_to_longest", [100] * 64, micro_batch=8)[0] == 1.0
    # without the data: the measurements
    assert (
        useful_fraction("group_by_length", None, micro_batch=8)[0]
        == DEFAULT_USEFUL_FRACTION["group_by_length"]
        == 0.97
    )
    assert useful_fraction("pad_to_longest", None, micro_batch=8)[0] == 0.48
    with pytest.raises(ValueError, match="collation"):
        useful_fraction("sorted", skewed, micro_batch=8)


def test_planned_fraction_comes_from_the_data_file(tmp_path):
    rng = random.Random(2)
    path = tmp_path / "data.jsonl"
    with path.open("w") as handle:
        for i in range(2000):
            words = max(3, int(rng.lognormvariate(3.5, 1.0)))
            handle.write(
                json.dumps({"instruction": f"q{i}", "input": "", "output": "word " * words}) + "\n"
            )
    plan, _ = plan_spec(spec_of(path=str(path)))
    assert plan.padding.train["padding_free"] == 1.0
    assert plan.padding.train["pad_to_longest"] < plan.padding.train["group_by_length"] < 1.0
    assert "simulated" in plan.padding.source


# ---------------------------------------------------------------- Liger


def test_liger_removes_the_fp32_logits():
    hf = estimate_memory(LLAMA, COUNTS, lora())
    liger = estimate_memory(LLAMA, COUNTS, lora(loss_impl="liger"))
    tokens = 4 * 2048
    assert hf.logits_gb == pytest.approx(12 * LLAMA.vocab_size * tokens / 1e9)
    # grad_input + one chunk of logits bounded by 2 x BT x h, in bf16, and an fp32 loss
    assert liger.logits_gb == pytest.approx((3 * 2 * LLAMA.hidden_size + 4) * tokens / 1e9)
    assert liger.peak_gb < hf.peak_gb - 5  # 12.6 GB of fp32 logits at 4 x 2048 tokens
    # classification has no vocabulary-sized logits: nothing changes
    cls = {"task": "sequence_classification", "num_labels": 3}
    assert estimate_memory(LLAMA, COUNTS, lora(**cls, loss_impl="liger")).peak_gb == pytest.approx(
        estimate_memory(LLAMA, COUNTS, lora(**cls, loss_impl="hf")).peak_gb
    )


def test_liger_lets_the_planner_choose_a_bigger_micro_batch_and_says_so(monkeypatch):
    spec = parse_spec(
        {
            "base_model": "meta-llama/Llama-3.1-8B",
            "task_type": "instruction",
            "dataset": {
                "path": "org/data",
                "format": "alpaca",
                "num_examples": 20_000,
                "avg_tokens_per_example": 2000,
            },
            "training_config": {
                "method": "lora",
                "max_seq_length": 4096,
                "gradient_checkpointing": True,
            },
            "hardware": {"gpus": 1, "vram_per_gpu": 80, "gpu_type": "h100_80gb"},
        }
    )
    monkeypatch.setattr(Planner, "collation_and_liger", lambda self, ctx: ("group_by_length", False))
    plain, _ = Planner(spec).plan()
    monkeypatch.setattr(Planner, "collation_and_liger", lambda self, ctx: ("group_by_length", True))
    fused, _ = Planner(spec).plan()
    assert fused.micro_batch_size > plain.micro_batch_size
    why = decision(fused, "micro_batch_size").why
    assert "Liger" in why and f"micro-batch {plain.micro_batch_size}" in why


def test_liger_wiring_reads_the_plan(monkeypatch):
    from finetune_gen.estimate import shape as shape_module

    plan, _ = plan_spec(spec_of())
    expected = "liger" if plan.use_liger_kernel else "hf"
    assert shape_module.shape_for_plan(plan).loss_impl == expected
    monkeypatch.setattr(shape_module, "planned_liger", lambda plan: True)
    assert shape_module.shape_for_plan(plan).loss_impl == "liger"
    monkeypatch.setattr(shape_module, "planned_liger", lambda plan: False)
    assert shape_module.shape_for_plan(plan).loss_impl == "hf"


# ---------------------------------------------------------------- the run folder


def test_resources_and_config_name_the_collation_and_schedule(tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text(
        json.dumps(
            {
                "base_model": "meta-llama/Llama-3.2-1B-Instruct",
                "task_type": "instruction",
                "dataset": {
                    "path": "org/data",
                    "format": "alpaca",
                    "num_examples": 200_000,
                    "avg_tokens_per_example": 400,
                },
                "training_config": {"method": "lora"},
                # A T4 (compute capability 7.5) has no FlashAttention 2: length-grouped batches.
                "hardware": {"gpus": 1, "vram_per_gpu": 16, "gpu_type": "t4"},
            }
        )
    )
    files = build(spec).files
    resources = json.loads(files["resources.json"])
    assert resources["collation"] == "group_by_length"
    assert resources["useful_token_fraction"] == 0.97
    assert resources["processed_tokens"] > resources["total_tokens"]
    assert resources["time_breakdown_hours"]["evaluation"] > 0
    assert (
        "collation | group_by_length: 97% of the processed tokens are real" in files["resources.md"]
    )
    assert "| evaluation |" in files["resources.md"]
    config = files["config.yaml"]
    assert (
        "eval_examples: 1000" in config and "save_steps:" in config and "eval_batch_size:" in config
    )
    train = files["train.py"]
    assert "EVAL_EXAMPLES = 1000" in train
    assert "eval_rows = in_training_eval_rows(eval_rows)" in train
    assert '"per_device_eval_batch_size": ' in train


def test_eval_cost_is_in_the_planned_hours():
    plan, _ = plan_spec(spec_of(rows=200_000))
    planner = Planner(spec_of(rows=200_000))
    from finetune_gen.estimate.resources import estimate_resources

    with_eval = estimate_resources(plan, planner.arch, planner.counts)
    none = plan.model_copy(update={"schedule": plan.schedule.model_copy(update={"evaluations": 0})})
    without = estimate_resources(none, planner.arch, planner.counts)
    assert with_eval.time.hours > without.time.hours
    assert with_eval.time.eval_hours < 0.15 * with_eval.time.train_hours  # the budget holds


def test_eval_memory_grows_with_the_eval_batch():
    shape = lora()
    one = estimate_eval_memory(LLAMA, COUNTS, shape, 1)
    eight = estimate_eval_memory(LLAMA, COUNTS, shape, 8)
    assert eight > one
    # no activations kept: far less per sequence than training without checkpointing
    train = estimate_memory(LLAMA, COUNTS, replace(shape, gradient_checkpointing=False))
    per_seq_train = (train.activations_gb + train.logits_gb) / shape.micro_batch_size
    assert (eight - one) / 7 < per_seq_train
