"""The estimator against published measurements, documented anchors and physics.

Reference rows come from ``../shared/data/reference-measurements.json`` through
``benchmarks/estimate_accuracy.py``; each included row carries a tolerance justified by its
conditions there (metric, unit, framework). The anchors are exact formulas from
``shared/docs/ESTIMATION.md``.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from finetune_gen.knowledge.architecture import Architecture
from finetune_gen.knowledge.catalog import get_gpu, resolve_model
from finetune_gen.estimate.formulas import (
    CUDA_CONTEXT_GB,
    NF4_BYTES,
    NF4_DQ_BYTES,
    MemoryEstimate,
    TrainingShape,
    estimate_cost,
    estimate_memory,
    estimate_storage,
    estimate_time,
    flops_per_token,
    named_assumptions,
)
from finetune_gen.knowledge.params import ParamCounts, count_params, trainable_params

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import estimate_accuracy

GIB = 2**30
LLAMA2_7B = resolve_model("meta-llama/Llama-2-7b-hf").architecture
LLAMA31_8B = resolve_model("meta-llama/Llama-3.1-8B").architecture
COUNTS_7B = count_params(LLAMA2_7B)
COUNTS_8B = count_params(LLAMA31_8B)


def lora_shape(**kw) -> TrainingShape:
    base = {
        "method": "lora",
        "trainable_params": trainable_params(LLAMA31_8B, "lora", target_modules="all-linear", r=16),
        "precision": "bf16",
        "micro_batch_size": 2,
        "seq_len": 2048,
        "gradient_checkpointing": True,
        "optimizer": "adamw_torch_fused",
    }
    base.update(kw)
    return TrainingShape(**base)


# ---------------------------------------------------------------------------- reference rows

_data = estimate_accuracy.data_path()
needs_data = pytest.mark.skipif(
    not _data.exists(),
    reason=f"reference measurements not found at {_data} (CI has ../shared beside the clone; "
    "set FINETUNE_GEN_REFERENCE_DATA)",
)


@pytest.fixture(scope="module")
def results():
    return estimate_accuracy.evaluate_rows()


@needs_data
def test_every_row_is_either_estimated_or_excluded_with_a_reason(results):
    assert results, "no rows read"
    for r in results:
        if r.included:
            assert r.estimate is not None and r.estimate > 0
        else:
            assert r.excluded and len(r.excluded) > 10


@needs_data
@pytest.mark.parametrize("row_id", sorted(estimate_accuracy.CASES))
def test_included_row_within_its_tolerance(results, row_id):
    known_outside = {
        # Same stated conditions as pub-10 (16.2 GiB) but measured 30.3 GiB: both cannot be
        # met by one estimate (docs/estimation-model.md, "rows the model misses").
        "pub-11",
        # 70B LoRA at 4 x 4096 tokens: checkpointed layer inputs alone are 21.5 GB per GPU,
        # most of the reported 26.4; the published run must have used other settings.
        "pub-21",
        # litgpt phi-1.5: its measured slope (33.8 B per token, layer and hidden unit without
        # the logits) is 40% above the op count (24); not tuned (docs, "rows the model misses").
        "pub-07",
    }
    row = next(r for r in results if r.id == row_id)
    assert row.included
    if row_id in known_outside:
        assert not row.within_tolerance, f"{row_id} now fits: update the docs and this test"
        return
    assert row.within_tolerance, (
        f"{row_id}: estimate {row.estimate:.2f} vs measured {row.measured:.2f} {row.unit} "
        f"({row.error_pct:+.1f}%, tolerance {100 * row.tolerance:.0f}%)"
    )


@needs_data
def test_hf_stack_rows_and_new_models_are_included(results):
    by_id = {r.id: r for r in results}
    hf = sorted(r.id for r in results if r.included and r.stack == "hf")
    assert hf == ["pub-50", "pub-54"]
    assert by_id["pub-07"].included and by_id["pub-07"].stack == "litgpt"
    # 2024 transformers kept the embedding's 8-bit states 8-bit: the rows say so.
    for rid in hf:
        assert not estimate_accuracy.CASES[rid].bnb_embedding_fp32_state


@needs_data
def test_mape_targets(results):
    assert estimate_accuracy.mape(results, "hf") < 15.0
    assert estimate_accuracy.mape(results) < 25.0
    assert estimate_accuracy.mape(results, "litgpt") < 15.0


@needs_data
def test_benchmark_renders_table_and_exclusions(results):
    text = estimate_accuracy.render(results)
    assert "MAPE overall" in text and "EXCLUDED pub-36" in text


# ---------------------------------------------------------------------------- anchors


def test_nf4_double_quant_saving_matches_litgpt():
    """litgpt: nf4 -> nf4-dq saves 0.30 GB on Llama-2-7B and 0.59 GB on Llama-2-13B."""
    assert NF4_BYTES == pytest.approx(0.5625)
    assert NF4_DQ_BYTES == pytest.approx(0.516, abs=5e-4)
    for model, saved in (("meta-llama/Llama-2-7b-hf", 0.30), ("meta-llama/Llama-2-13b-hf", 0.59)):
        arch = resolve_model(model).architecture
        counts = count_params(arch)
        shape = TrainingShape(
            method="qlora",
            trainable_params=trainable_params(
                arch, "qlora", target_modules=["q_proj", "v_proj"], r=8
            ),
            precision="bf16",
            micro_batch_size=1,
            seq_len=1304,
            gradient_checkpointing=False,
            optimizer="adamw_torch",
            quant_bits=4,
        )
        nf4 = estimate_memory(arch, counts, replace(shape, double_quant=False))
        dq = estimate_memory(arch, counts, shape)
        assert nf4.weights_gb - dq.weights_gb == pytest.approx(saved, abs=0.02)
        assert nf4.peak_gb - dq.peak_gb == pytest.approx(saved, abs=0.02)


def _counts_of(total: int, largest: int = 0) -> ParamCounts:
    return ParamCounts(
        total=total,
        quantizable_linear=int(total * 0.9),
        embedding=int(total * 0.05),
        lm_head=0,
        other=total - int(total * 0.9) - int(total * 0.05),
        per_layer=largest or total // 24,
        largest_layer=largest or total // 24,
    )


def _model_states(est: MemoryEstimate) -> float:
    return est.weights_gb + est.trainable_and_grads_gb + est.optimizer_gb


def test_deepspeed_zero2_doc_example_t5_3b():
    """DeepSpeed memory.rst: t5-3b (2851M params), 8 GPUs, ZeRO-2: 15.93 GiB; offload 5.31."""
    counts = _counts_of(2_851_000_000)
    shape = TrainingShape(
        method="full",
        trainable_params=counts.total,
        precision="bf16",
        micro_batch_size=1,
        seq_len=128,
        gradient_checkpointing=True,
        optimizer="adamw_torch",
        distributed="deepspeed_zero2",
        world_size=8,
        gpus_per_node=8,
    )
    est = estimate_memory(LLAMA2_7B, counts, shape)
    assert _model_states(est) * 1e9 / GIB == pytest.approx(15.93, abs=0.01)
    off = estimate_memory(LLAMA2_7B, counts, replace(shape, cpu_offload="optimizer"))
    assert _model_states(off) * 1e9 / GIB == pytest.approx(5.31, abs=0.01)
    assert off.cpu_ram_gb * 1e9 >= counts.total * 16 * 1.5


def test_deepspeed_zero3_estimator_formula():
    """estimate_zero3_model_states_mem_needs: 18P/N + 4*largest_layer (no offload)."""
    counts = _counts_of(2_851_000_000, largest=32_000_000)
    shape = TrainingShape(
        method="full",
        trainable_params=counts.total,
        precision="bf16",
        micro_batch_size=1,
        seq_len=128,
        gradient_checkpointing=True,
        optimizer="adamw_torch",
        distributed="deepspeed_zero3",
        world_size=8,
        gpus_per_node=8,
    )
    est = estimate_memory(LLAMA2_7B, counts, shape)
    expected = (18 * counts.total / 8 + 4 * counts.largest_layer) / 1e9
    assert _model_states(est) == pytest.approx(expected, rel=1e-9)
    off = estimate_memory(LLAMA2_7B, counts, replace(shape, cpu_offload="all"))
    assert _model_states(off) == pytest.approx(4 * counts.largest_layer / 1e9, rel=1e-9)
    assert off.cpu_ram_gb * 1e9 >= counts.total * 18 * 1.5


def test_bytes_per_parameter_regimes():
    """HF docs 18 B/param (AMP, fp32 master); pure bf16 8; pure bf16 + 8-bit AdamW ~6."""
    P = COUNTS_7B.total
    base = TrainingShape(
        method="full",
        trainable_params=P,
        precision="fp16",
        micro_batch_size=1,
        seq_len=16,
        gradient_checkpointing=True,
        optimizer="adamw_torch_fused",
    )
    amp = estimate_memory(LLAMA2_7B, COUNTS_7B, base)
    assert _model_states(amp) * 1e9 / P == pytest.approx(18, abs=0.01)
    pure = estimate_memory(LLAMA2_7B, COUNTS_7B, replace(base, precision="bf16"))
    assert _model_states(pure) * 1e9 / P == pytest.approx(8, abs=0.01)
    eight_2024 = replace(
        base, precision="bf16", optimizer="adamw_8bit", bnb_embedding_fp32_state=False
    )
    eight = estimate_memory(LLAMA2_7B, COUNTS_7B, eight_2024)
    assert _model_states(eight) * 1e9 / P == pytest.approx(6.03, abs=0.01)
    # transformers >= 4.52: the Trainer keeps the embedding's states in fp32 (8 B/param).
    now = estimate_memory(LLAMA2_7B, COUNTS_7B, replace(eight_2024, bnb_embedding_fp32_state=True))
    extra = COUNTS_7B.embedding * (8 - 2 * (1 + 4 / 256))
    assert (now.optimizer_gb - eight.optimizer_gb) * 1e9 == pytest.approx(extra)
    # ... only where the embedding trains and the override can find it
    lora8 = lora_shape(optimizer="adamw_8bit")
    assert estimate_memory(LLAMA31_8B, COUNTS_8B, lora8).optimizer_gb == pytest.approx(
        estimate_memory(
            LLAMA31_8B, COUNTS_8B, replace(lora8, bnb_embedding_fp32_state=False)
        ).optimizer_gb
    )
    zero3 = replace(eight_2024, distributed="deepspeed_zero3", world_size=2, gpus_per_node=2)
    assert estimate_memory(LLAMA2_7B, COUNTS_7B, zero3).peak_gb == pytest.approx(
        estimate_memory(LLAMA2_7B, COUNTS_7B, replace(zero3, bnb_embedding_fp32_state=True)).peak_gb
    )
    fp32 = estimate_memory(LLAMA2_7B, COUNTS_7B, replace(base, precision="fp32"))
    assert _model_states(fp32) * 1e9 / P == pytest.approx(16, abs=0.01)


def test_lora_adapters_cost_16_bytes_each_with_adamw():
    shape = lora_shape()
    est = estimate_memory(LLAMA31_8B, COUNTS_8B, shape)
    per = (est.trainable_and_grads_gb + est.optimizer_gb) * 1e9 / shape.trainable_params
    assert per == pytest.approx(16, abs=1e-6)
    assert est.weights_gb == pytest.approx(2 * COUNTS_8B.total / 1e9)


# Measured on the CPU with ``python benchmarks/estimate_accuracy.py --saved-tensors``
# (transformers 5.24, peft 0.21, torch 2.13; CUDA autocast's fp32 ops applied): bytes autograd
# keeps per token per decoder layer, divided by hidden_size (1024), for small layers of each
# type (see SAVED_TENSOR_CONFIGS there).
HF_SAVED_TENSORS_MEASURED = {
    "llama full MHA": 45.54,
    "llama full GQA 8:2": 42.54,
    "llama LoRA q,v MHA": 36.73,
    "llama LoRA q,v GQA 8:2": 33.63,
    "gemma full (MQA)": 57.05,
    "gemma LoRA q,v (MQA)": 41.52,
    "phi full": 86.10,
    "phi LoRA q,v": 72.66,
    "phi full, no autocast": 54.07,
    "gpt2 full": 84.14,
    "gpt2 LoRA c_attn": 74.67,
}


def test_saved_tensor_measurement_covers_every_config():
    labels = [c[0] for c in estimate_accuracy.SAVED_TENSOR_CONFIGS]
    assert sorted(labels) == sorted(HF_SAVED_TENSORS_MEASURED)


@pytest.mark.parametrize("key", sorted(HF_SAVED_TENSORS_MEASURED))
def test_activation_coefficient_matches_hf_saved_tensor_measurement(key):
    modelled = estimate_accuracy.modelled_saved_tensors()[key]
    assert modelled == pytest.approx(HF_SAVED_TENSORS_MEASURED[key], rel=0.01)


PHI15 = resolve_model("microsoft/phi-1_5").architecture
GEMMA2B = resolve_model("google/gemma-2b").architecture


def _per_layer(arch, **kw):
    from finetune_gen.estimate.formulas import _layer_activation_bytes

    shape = TrainingShape(
        **{
            "method": "lora",
            "trainable_params": trainable_params(arch, "lora", target_modules="minimal", r=8),
            "precision": "bf16",
            "micro_batch_size": 1,
            "seq_len": 1024,
            "gradient_checkpointing": False,
            "optimizer": "adamw_torch",
            "target_modules": ("q_proj", "v_proj"),
            "lora_dropout": 0.0,
            **kw,
        }
    )
    return _layer_activation_bytes(arch, shape, trainable=shape.method == "full")


def test_phi_layer_coefficients():
    """phi-1.5 (h=2048, i=4h): LayerNorm + gelu_new under CUDA autocast, per token and h."""
    h = PHI15.hidden_size
    # LoRA q,v: LayerNorm 4 + attention 8 + gelu_new (12 + 2) * 4 + LoRA 2 * 2 (+ lora_B, lse)
    assert _per_layer(PHI15) / h == pytest.approx(4 + 8 + 56 + 4, abs=0.2)
    # full: + four 16-bit copies of the LayerNorm output, dense's input copy, fc2's input
    full = _per_layer(PHI15, method="full", trainable_params=count_params(PHI15).total)
    assert full / h == pytest.approx(4 + 8 + 56 + 8 + 2 + 8, abs=0.2)
    # without autocast (litgpt bf16-true): 16-bit LayerNorm input, gelu_new's four 16-bit tensors
    assert _per_layer(PHI15, autocast=False) / h == pytest.approx(2 + 8 + 32 + 4, abs=0.2)
    # a one-op GELU keeps only its input
    tanh = Architecture.from_config({**PHI15.config, "hidden_act": "gelu_pytorch_tanh"})
    assert _per_layer(tanh, autocast=False) / h == pytest.approx(2 + 8 + 8 + 4, abs=0.2)
    # phi-2's residual dropout keeps two 1-byte masks per layer
    phi2 = resolve_model("microsoft/phi-2").architecture
    no_drop = Architecture.from_config({**phi2.config, "resid_pdrop": 0.0})
    assert _per_layer(phi2) - _per_layer(no_drop) == pytest.approx(2 * phi2.hidden_size)


def test_autocast_does_not_change_rmsnorm_models():
    """Llama/Gemma norms upcast explicitly, so only LayerNorm/gelu_new models depend on it."""
    for arch in (LLAMA31_8B, GEMMA2B):
        full = {"method": "full", "trainable_params": count_params(arch).total}
        for kw in ({}, full):
            assert _per_layer(arch, autocast=False, **kw) == _per_layer(arch, **kw)
    assert _per_layer(PHI15, autocast=False) < _per_layer(PHI15)


def test_gemma_trained_norm_keeps_fp32_product():
    """GemmaRMSNorm multiplies (1 + w) in fp32 before casting: a trained weight keeps 4h."""
    h = GEMMA2B.hidden_size
    full = _per_layer(GEMMA2B, method="full", trainable_params=count_params(GEMMA2B).total)
    llama_like = Architecture.from_config({**GEMMA2B.config, "model_type": "llama"})
    ref = _per_layer(llama_like, method="full", trainable_params=count_params(GEMMA2B).total)
    assert full - ref == pytest.approx(2 * (4 - 2) * h)


def test_logits_dominate_for_big_vocabularies():
    est = estimate_memory(LLAMA31_8B, COUNTS_8B, lora_shape())
    tokens = 2 * 2048
    assert est.logits_gb == pytest.approx(12 * LLAMA31_8B.vocab_size * tokens / 1e9)
    assert est.logits_gb > est.activations_gb
    chunked = estimate_memory(LLAMA31_8B, COUNTS_8B, lora_shape(loss_impl="chunked"))
    assert chunked.logits_gb < est.logits_gb / 1.5


def test_gradient_checkpointing_saves_activation_memory():
    on = estimate_memory(LLAMA31_8B, COUNTS_8B, lora_shape())
    off = estimate_memory(LLAMA31_8B, COUNTS_8B, lora_shape(gradient_checkpointing=False))
    assert off.activations_gb > 5 * on.activations_gb


def test_cpu_offload_moves_state_to_host():
    full = TrainingShape(
        method="full",
        trainable_params=COUNTS_8B.total,
        precision="bf16",
        micro_batch_size=1,
        seq_len=2048,
        gradient_checkpointing=True,
        optimizer="adamw_torch",
        distributed="deepspeed_zero3",
        world_size=2,
        gpus_per_node=2,
    )
    none = estimate_memory(LLAMA31_8B, COUNTS_8B, full)
    opt = estimate_memory(LLAMA31_8B, COUNTS_8B, replace(full, cpu_offload="optimizer"))
    every = estimate_memory(LLAMA31_8B, COUNTS_8B, replace(full, cpu_offload="all"))
    assert none.peak_gb > opt.peak_gb > every.peak_gb
    assert none.cpu_ram_gb < opt.cpu_ram_gb < every.cpu_ram_gb


def test_invalid_shape_is_a_clear_error():
    with pytest.raises(ValueError, match="optimizer 'adamw_magic'"):
        estimate_memory(LLAMA31_8B, COUNTS_8B, lora_shape(optimizer="adamw_magic"))
    with pytest.raises(ValueError, match="distributed"):
        estimate_memory(LLAMA31_8B, COUNTS_8B, lora_shape(distributed="zero9"))


# ---------------------------------------------------------------------------- time, storage, cost


def test_time_from_flops_and_utilization():
    gpu = get_gpu("a100_80gb")
    shape = lora_shape()
    t = estimate_time(LLAMA31_8B, COUNTS_8B, shape, gpu, tokens_per_epoch=10_000_000, epochs=2)
    assert t.total_tokens == 20_000_000
    fpt = flops_per_token(LLAMA31_8B, COUNTS_8B, shape)
    P = COUNTS_8B.total - COUNTS_8B.embedding + LLAMA31_8B.vocab_size * LLAMA31_8B.hidden_size
    assert 6 * P < fpt < 6.6 * P  # LoRA 4P + recompute ~2P + attention at 2k tokens
    assert t.flops == pytest.approx(fpt * t.total_tokens)
    assert t.tokens_per_second == pytest.approx(gpu.tflops_bf16 * 1e12 * t.mfu / fpt)
    assert 0.1 < t.mfu < 0.5 and t.assumptions
    q = estimate_time(
        LLAMA31_8B,
        COUNTS_8B,
        replace(shape, method="qlora", quant_bits=4),
        gpu,
        tokens_per_epoch=10_000_000,
        epochs=2,
    )
    assert q.hours > t.hours
    full = replace(shape, method="full", trainable_params=COUNTS_8B.total)
    f = estimate_time(LLAMA31_8B, COUNTS_8B, full, gpu, tokens_per_epoch=10_000_000, epochs=2)
    assert f.hours > t.hours
    two = estimate_time(
        LLAMA31_8B,
        COUNTS_8B,
        replace(shape, world_size=2, gpus_per_node=2, distributed="ddp"),
        gpu,
        tokens_per_epoch=10_000_000,
        epochs=2,
    )
    assert two.hours < t.hours


def test_storage_and_cost():
    shape = lora_shape()
    s = estimate_storage(
        LLAMA31_8B, COUNTS_8B, shape, save_total_limit=3, dataset_bytes=None, tokens_per_epoch=10**7
    )
    assert s.base_download_gb == pytest.approx(2 * COUNTS_8B.total / 1e9)
    assert s.checkpoints_gb == pytest.approx(3 * shape.trainable_params * 12 / 1e9)
    assert s.merged_export_gb == pytest.approx(2 * COUNTS_8B.total / 1e9)
    parts = (
        s.base_download_gb,
        s.checkpoints_gb,
        s.final_output_gb,
        s.merged_export_gb,
        s.dataset_cache_gb,
    )
    assert s.total_gb == pytest.approx(sum(parts))
    full = replace(shape, method="full", trainable_params=COUNTS_8B.total)
    f = estimate_storage(
        LLAMA31_8B, COUNTS_8B, full, save_total_limit=2, dataset_bytes=10**9, tokens_per_epoch=10**7
    )
    assert f.checkpoints_gb == pytest.approx(2 * COUNTS_8B.total * (2 + 4) / 1e9)
    assert f.merged_export_gb == 0
    assert estimate_cost(2.5, 4.0, 8) == pytest.approx(80.0)


def test_assumptions_are_named():
    names = named_assumptions(lora_shape(method="qlora", quant_bits=4, target_modules=None))
    text = " ".join(names)
    for word in ("CUDA context", "SDPA", "fp32", "NF4", "all-linear", "paged"):
        assert word in text


def test_breakdown_keys():
    est = estimate_memory(LLAMA31_8B, COUNTS_8B, lora_shape())
    assert list(est.breakdown()) == [
        "weights",
        "trainable_and_grads",
        "optimizer",
        "activations",
        "logits",
        "overhead",
    ]
    assert est.overhead_gb == pytest.approx(CUDA_CONTEXT_GB)


# ---------------------------------------------------------------------------- properties

MODELS = [
    "meta-llama/Llama-3.2-1B",
    "Qwen/Qwen2.5-7B",
    "google/gemma-2-2b",
    "google/gemma-2b",
    "microsoft/phi-1_5",
    "openai-community/gpt2",
]
ARCHS = {m: resolve_model(m).architecture for m in MODELS}
COUNTS = {m: count_params(a) for m, a in ARCHS.items()}

methods = st.sampled_from(["full", "lora", "qlora", "dora", "ia3", "prompt_tuning", "freeze"])
optimizers = st.sampled_from(
    ["adamw_torch", "adamw_torch_fused", "adamw_8bit", "paged_adamw_32bit", "adafactor", "sgd"]
)


@st.composite
def shapes(draw):
    model = draw(st.sampled_from(MODELS))
    method = draw(methods)
    dist = draw(st.sampled_from(["none", "ddp", "fsdp", "deepspeed_zero2", "deepspeed_zero3"]))
    world = 1 if dist == "none" else draw(st.sampled_from([1, 2, 4, 8, 16]))
    offload = (
        "none" if dist in ("none", "ddp") else draw(st.sampled_from(["none", "optimizer", "all"]))
    )
    shape = TrainingShape(
        method=method,
        trainable_params=draw(st.integers(0, COUNTS[model].total)),
        precision=draw(st.sampled_from(["bf16", "fp16", "fp32"])),
        micro_batch_size=draw(st.integers(1, 16)),
        seq_len=draw(st.integers(1, 8192)),
        gradient_checkpointing=draw(st.booleans()),
        optimizer=draw(optimizers),
        distributed=dist,
        world_size=world,
        gpus_per_node=min(world, 8),
        cpu_offload=offload,
        quant_bits=4 if method == "qlora" else 16,
        num_virtual_tokens=20 if method == "prompt_tuning" else 0,
        autocast=draw(st.booleans()),
        bnb_embedding_fp32_state=draw(st.booleans()),
    )
    return model, shape


def _peak(model, shape):
    return estimate_memory(ARCHS[model], COUNTS[model], shape).peak_gb


@settings(max_examples=150, deadline=None)
@given(shapes(), st.integers(1, 4096))
def test_longer_sequences_never_need_less(ms, extra):
    model, shape = ms
    assert _peak(model, replace(shape, seq_len=shape.seq_len + extra)) >= _peak(model, shape)


@settings(max_examples=150, deadline=None)
@given(shapes(), st.integers(1, 16))
def test_bigger_micro_batches_never_need_less(ms, extra):
    model, shape = ms
    bigger = replace(shape, micro_batch_size=shape.micro_batch_size + extra)
    assert _peak(model, bigger) >= _peak(model, shape)


@settings(max_examples=150, deadline=None)
@given(shapes(), st.integers(1, 10**9))
def test_more_trainable_params_never_need_less(ms, extra):
    model, shape = ms
    more = replace(shape, trainable_params=shape.trainable_params + extra)
    assert _peak(model, more) >= _peak(model, shape)


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(MODELS),
    st.sampled_from(["lora", "qlora", "dora"]),
    st.integers(1, 128),
    st.integers(1, 128),
)
def test_higher_lora_rank_never_needs_less(model, method, r1, r2):
    lo, hi = sorted((r1, r2))
    arch = ARCHS[model]

    def peak(r):
        t = trainable_params(arch, method, target_modules="all-linear", r=r)
        return _peak(
            model,
            TrainingShape(
                method=method,
                trainable_params=t,
                precision="bf16",
                micro_batch_size=2,
                seq_len=1024,
                gradient_checkpointing=True,
                optimizer="paged_adamw_8bit",
                quant_bits=4 if method == "qlora" else 16,
            ),
        )

    assert peak(hi) >= peak(lo)


@settings(max_examples=150, deadline=None)
@given(
    shapes(), st.sampled_from(["fsdp", "deepspeed_zero3"]), st.integers(1, 64), st.integers(1, 64)
)
def test_more_gpus_with_full_sharding_never_need_more_per_gpu(ms, dist, n1, n2):
    model, shape = ms
    lo, hi = sorted((n1, n2))
    a = replace(shape, distributed=dist, world_size=lo, gpus_per_node=min(lo, 8))
    b = replace(shape, distributed=dist, world_size=hi, gpus_per_node=min(hi, 8))
    assert _peak(model, b) <= _peak(model, a) + 1e-9


@settings(max_examples=200, deadline=None)
@given(shapes())
def test_breakdown_sums_to_peak(ms):
    model, shape = ms
    est = estimate_memory(ARCHS[model], COUNTS[model], shape)
    parts = (
        est.weights_gb,
        est.trainable_and_grads_gb,
        est.optimizer_gb,
        est.activations_gb,
        est.logits_gb,
        est.overhead_gb,
    )
    assert sum(parts) == pytest.approx(est.peak_gb, rel=1e-12)
    assert all(p >= 0 for p in parts)
    assert sum(est.breakdown().values()) == pytest.approx(est.peak_gb, abs=0.031)
    assert est.cpu_ram_gb > 0
