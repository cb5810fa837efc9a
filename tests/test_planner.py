"""The planner: the decisions an experienced engineer would make, and its invariants.

Each table row is a realistic request; the comment says why the expected decision is right.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from finetune_gen.errors import NoFitError, SpecError
from finetune_gen.planning import orchestrate as planning
from finetune_gen.planning.planner import Planner
from finetune_gen.models.spec import parse_spec

QUALITY = {"full": 3, "lora": 2, "dora": 2, "qlora": 1}


def make_spec(
    model, task="instruction", vram=24, gpus=1, gpu_type=None, nodes=1, rows=20_000, **training
):
    hardware = {"gpus": gpus, "vram_per_gpu": vram, "nodes": nodes}
    if gpu_type:
        hardware["gpu_type"] = gpu_type
    return parse_spec(
        {
            "base_model": model,
            "task_type": task,
            "dataset": {
                "path": "org/data",
                "format": "alpaca",
                "num_examples": rows,
                "avg_tokens_per_example": 400,
            },
            "training_config": training,
            "hardware": hardware,
        }
    )


def plan_of(spec, **kwargs):
    return planning.plan(spec, **kwargs).plan


def peak(planned):
    """The estimated peak of a plan, from what planning returns with it (no second planner)."""
    return planned.resources.memory.peak_gb


CASES = [
    # 8B on a 24 GB card, method open: 16-bit LoRA (16 GB of weights) or QLoRA; never full.
    (
        "llama8b-24g-auto",
        make_spec("meta-llama/Llama-3.1-8B", gpu_type="rtx_4090"),
        {"method": ("lora", "qlora")},
    ),
    # Full fine-tuning of 8B needs ~64 GB of states: on 24 GB the ladder must end in QLoRA.
    (
        "llama8b-24g-full",
        make_spec("meta-llama/Llama-3.1-8B", gpu_type="rtx_4090", method="full"),
        {"method": ("qlora",), "fallback": "switch_to_qlora"},
    ),
    # 0.5B classification fits fully many times over on 24 GB: full fine-tuning is best quality.
    (
        "qwen05-cls-24g",
        make_spec("Qwen/Qwen2.5-0.5B", task="classification", gpu_type="a10g_24gb"),
        {"method": ("full",)},
    ),
    # A 1B chat model on 24 GB: full fine-tuning with fp32 master weights (18 B/param = 22 GB)
    # does not fit, and pure bf16 is not chosen automatically: LoRA.
    (
        "llama1b-chat-24g",
        make_spec("meta-llama/Llama-3.2-1B-Instruct", task="chat", gpu_type="rtx_4090"),
        {"method": ("lora",)},
    ),
    # On 48 GB it does: full fine-tuning, fp32 masters.
    (
        "llama1b-chat-48g",
        make_spec("meta-llama/Llama-3.2-1B-Instruct", task="chat", vram=48, gpu_type="l40s"),
        {"method": ("full",)},
    ),
    # T4 (16 GB, no bf16): fp16 with loss scaling; 0.5B still trains fully or with LoRA.
    (
        "qwen05-t4",
        make_spec("Qwen/Qwen2.5-0.5B", vram=16, gpu_type="t4"),
        {"precision": "fp16", "method": ("full", "lora")},
    ),
    # 8B on one 80 GB card: pure-bf16 full FT (~64 GB states + activations) is at the limit; LoRA is safe.
    (
        "llama8b-80g",
        make_spec("meta-llama/Llama-3.1-8B", vram=80, gpu_type="a100_80gb"),
        {"method": ("full", "lora")},
    ),
    # 8 x 80 GB: full fine-tuning of 8B, sharded if a replica does not fit.
    (
        "llama8b-8x80g",
        make_spec("meta-llama/Llama-3.1-8B", vram=80, gpus=8, gpu_type="h100_80gb"),
        {"method": ("full",), "distributed": ("ddp", "deepspeed_zero2", "deepspeed_zero3")},
    ),
    # QLoRA 7B fits a replica on each 24 GB card: plain DDP is the fastest way to use two.
    (
        "mistral-qlora-2x24",
        make_spec("mistralai/Mistral-7B-v0.1", gpus=2, gpu_type="a10g_24gb", method="qlora"),
        {"method": ("qlora",), "distributed": ("ddp",)},
    ),
    # 13B on 48 GB: 26 GB of bf16 weights leaves room for LoRA; full (~100 GB) does not fit.
    (
        "llama13b-48g",
        make_spec("meta-llama/Llama-2-13b-hf", vram=48, gpu_type="a6000"),
        {"method": ("lora", "qlora")},
    ),
    # 72B LoRA on 8 x 80 GB: 144 GB of weights per replica cannot fit; ZeRO-3 shards them.
    (
        "qwen72b-lora-8x80",
        make_spec(
            "Qwen/Qwen2.5-72B",
            vram=80,
            gpus=8,
            gpu_type="a100_80gb",
            method="lora",
            max_seq_length=2048,
        ),
        {"method": ("lora",), "distributed": ("deepspeed_zero3",)},
    ),
    # V100: no bf16, fp16 overflows easily: plan fp16 and warn about it.
    (
        "llama3b-v100",
        make_spec("meta-llama/Llama-3.2-3B", vram=32, gpu_type="v100_32gb"),
        {"precision": "fp16", "warning": "V100", "method": ("lora", "qlora")},
    ),
    # A spec's micro-batch of 32 on 24 GB: halved until it fits, accumulation keeps the effective batch.
    (
        "gemma9b-lora-batch32",
        make_spec(
            "google/gemma-2-9b",
            gpu_type="rtx_4090",
            method="qlora",
            batch_size=32,
            gradient_accumulation_steps=1,
        ),
        {"method": ("qlora",), "fallback": "reduce_batch_size", "effective": 32},
    ),
    # 70B on 2 x 48 GB with QLoRA: FSDP/ZeRO-3-style sharding of the 4-bit weights needs a float storage dtype.
    (
        "llama70b-qlora-2x48",
        make_spec(
            "meta-llama/Llama-3.1-70B",
            vram=48,
            gpus=2,
            gpu_type="a6000",
            method="qlora",
            max_seq_length=1024,
        ),
        {"method": ("qlora",)},
    ),
]


@pytest.mark.parametrize("name,spec,expected", CASES, ids=[c[0] for c in CASES])
def test_realistic_plans(name, spec, expected):
    planned = planning.plan(spec)
    plan = planned.plan
    assert plan.method in expected["method"], (plan.method, plan.fallbacks_applied)
    assert peak(planned) <= plan.hardware.usable_vram_gb + 1e-6
    if "distributed" in expected:
        assert plan.distributed in expected["distributed"]
    if "precision" in expected:
        assert plan.precision == expected["precision"]
    if "fallback" in expected:
        assert expected["fallback"] in [f.action for f in plan.fallbacks_applied]
        assert any(
            "changed from" in w for w in plan.warnings
        ), "a changed spec value must be reported"
    if "warning" in expected:
        assert any(expected["warning"] in w for w in plan.warnings)
    if "effective" in expected:
        assert plan.effective_batch_size == expected["effective"]
    if plan.quantization and plan.distributed in ("deepspeed_zero3", "fsdp"):
        assert plan.quantization.storage_dtype in ("bfloat16", "float16")
    assert all(d.why for d in plan.decisions)


def test_70b_on_24gb_exits_3_naming_what_would_fit():
    with pytest.raises(NoFitError) as raised:
        plan_of(make_spec("meta-llama/Llama-3.1-70B", gpu_type="rtx_4090"))
    message = raised.value.message
    assert raised.value.exit_code == 3
    assert "What would fit:" in message and "x " in message


def test_strict_refuses_to_change_a_spec_value():
    spec = make_spec("meta-llama/Llama-3.1-8B", gpu_type="rtx_4090", method="full")
    with pytest.raises(NoFitError, match="--strict"):
        plan_of(spec, strict=True)


def test_known_bad_combinations_are_caught_at_plan_time():
    with pytest.raises(SpecError, match="bf16"):
        plan_of(make_spec("Qwen/Qwen2.5-0.5B", vram=16, gpu_type="t4", precision="bf16"))
    with pytest.raises(SpecError) as raised:
        plan_of(make_spec("openai-community/gpt2", max_seq_length=4096))
    assert any("max_position_embeddings" in p for p in raised.value.problems)


def test_no_hardware_recommends_the_cheapest_fit_with_alternatives():
    spec = make_spec("mistralai/Mistral-7B-v0.1").model_copy(update={"hardware": None})
    planned = planning.plan(spec)
    plan, diagnostics = planned.plan, planned.diagnostics
    assert plan.hardware.gpu_type
    notes = [d for d in diagnostics if d.path == "hardware"]
    assert notes and "alternatives" in notes[0].detail and "$" in notes[0].detail


def test_hyperparameters_follow_the_guide():
    plan = plan_of(make_spec("meta-llama/Llama-3.1-8B", vram=48, gpu_type="a6000", method="lora"))
    assert plan.lora.r == 16 and plan.lora.alpha == 32  # alpha = 2 x rank
    assert plan.warmup_ratio == 0.03 and plan.max_grad_norm == 1.0
    assert plan.learning_rate == 2e-4
    qlora = plan_of(make_spec("meta-llama/Llama-3.1-8B", gpu_type="rtx_4090", method="qlora"))
    assert qlora.lora.target_modules == "all-linear" and "paged" in qlora.optimizer
    assert qlora.quantization.quant_type == "nf4" and qlora.quantization.double_quant
    small = plan_of(
        make_spec("meta-llama/Llama-3.1-8B", gpu_type="rtx_4090", method="qlora", rows=500)
    )
    big = plan_of(
        make_spec("meta-llama/Llama-3.1-8B", gpu_type="rtx_4090", method="qlora", rows=600_000)
    )
    assert small.epochs > big.epochs  # the seed: diminishing returns past 500K rows


# ------------------------------------------------------------------ properties

MODELS = [
    "Qwen/Qwen2.5-0.5B",
    "meta-llama/Llama-3.2-1B",
    "meta-llama/Llama-3.2-3B",
    "mistralai/Mistral-7B-v0.1",
    "meta-llama/Llama-3.1-8B",
    "meta-llama/Llama-2-13b-hf",
]
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def try_planned(spec):
    try:
        return planning.plan(spec)
    except NoFitError:
        return None


def try_plan(spec):
    planned = try_planned(spec)
    return planned.plan if planned else None


@SETTINGS
@given(
    model=st.sampled_from(MODELS),
    vram=st.sampled_from([16, 24, 40, 48, 80, 141]),
    gpus=st.sampled_from([1, 2, 4]),
)
def test_more_vram_never_lowers_the_method(model, vram, gpus):
    smaller = try_plan(make_spec(model, vram=vram, gpus=gpus))
    larger = try_plan(make_spec(model, vram=vram * 2, gpus=gpus))
    if smaller is not None:
        assert larger is not None
        assert QUALITY[larger.method] >= QUALITY[smaller.method]


@SETTINGS
@given(
    model=st.sampled_from(MODELS),
    vram=st.sampled_from([16, 24, 48, 80]),
    method=st.sampled_from([None, "full", "lora", "qlora"]),
    batch=st.sampled_from([None, 1, 4, 16]),
    seq=st.sampled_from([None, 512, 4096]),
)
def test_chosen_plan_fits_and_fallbacks_keep_the_effective_batch(model, vram, method, batch, seq):
    training = {
        k: v for k, v in {"method": method, "batch_size": batch, "max_seq_length": seq}.items() if v
    }
    spec = make_spec(model, vram=vram, **training)
    planned = try_planned(spec)
    if planned is None:
        return
    plan = planned.plan
    assert peak(planned) <= plan.hardware.usable_vram_gb + 1e-6
    if batch is not None:
        requested = (
            batch * max(1, plan.effective_batch_size // (batch * plan.world_size)) * plan.world_size
        )
        assert (
            plan.effective_batch_size == requested
            or plan.effective_batch_size % plan.micro_batch_size == 0
        )
    assert (
        plan.micro_batch_size * plan.gradient_accumulation_steps * plan.world_size
        == plan.effective_batch_size
    )
    assert plan_of(spec) == plan  # deterministic


@SETTINGS
@given(
    model=st.sampled_from(MODELS), batch=st.sampled_from([2, 8, 32]), vram=st.sampled_from([16, 24])
)
def test_batch_fallbacks_preserve_the_effective_batch(model, batch, vram):
    spec = make_spec(
        model, vram=vram, method="qlora", batch_size=batch, gradient_accumulation_steps=2
    )
    plan = try_plan(spec)
    if plan is None:
        return
    assert plan.effective_batch_size == batch * 2


def test_combinations_the_stack_cannot_run_are_refused():
    def spec(**changes):
        data = {
            "base_model": "Qwen/Qwen2.5-0.5B",
            "task_type": "classification",
            "dataset": {"path": "org/data", "format": "sharegpt", "num_examples": 1000},
            "hardware": {"gpus": 1, "gpu_type": "a10g_24gb"},
        }
        for key, value in changes.items():
            data[key] = value
        return parse_spec(data)

    with pytest.raises(SpecError, match="needs the column roles text\\+label"):
        Planner(spec())
    custom = {
        "path": "org/data",
        "format": "custom",
        "columns": {"text": "review", "label": "stars"},
    }
    with pytest.raises(SpecError, match="prefix_tuning"):
        Planner(spec(dataset=custom, training_config={"method": "prefix_tuning"}))
    with pytest.raises(SpecError, match="gradient_checkpointing"):
        Planner(
            spec(
                task_type="instruction",
                dataset={"path": "org/d", "format": "alpaca"},
                training_config={"method": "prefix_tuning", "gradient_checkpointing": True},
            )
        )
    plan = plan_of(spec(dataset=custom, training_config={"method": "lora"}))
    assert plan.task_type == "classification"


def test_prefix_tuning_never_falls_back_to_checkpointing():
    plan = plan_of(
        make_spec(
            "meta-llama/Llama-3.1-8B",
            vram=48,
            gpu_type="a6000",
            method="prefix_tuning",
            max_seq_length=4096,
            batch_size=8,
        )
    )
    assert not plan.gradient_checkpointing


def test_classification_labels_are_counted_from_the_data(tmp_path):
    import json

    rows = [{"text": f"t{i}", "label": ["a", "b", "c", "d", "e"][i % 5]} for i in range(20)]
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = parse_spec(
        {
            "base_model": "Qwen/Qwen2.5-0.5B",
            "task_type": "classification",
            "dataset": {
                "path": str(data),
                "format": "custom",
                "columns": {"text": "text", "label": "label"},
            },
            "training_config": {"method": "full"},
            "hardware": {"gpus": 1, "gpu_type": "a10g_24gb"},
        }
    )
    plan = plan_of(spec)
    # Tied embeddings: the causal model has no separate lm_head; a 5-way score head is added.
    assert plan.total_params == 494_032_768 + 896 * 5
