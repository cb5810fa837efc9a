"""How close the memory estimator comes to published measurements.

For every row of ``reference-measurements.json`` the catalog can express, this builds the
row's training shape (its model, method, LoRA targets, optimizer, sequence length, micro-batch,
checkpointing, sharding, loss implementation), estimates the per-GPU peak, converts it to the
row's unit and metric, and prints the error. Rows that cannot be expressed are listed as
EXCLUDED with the reason. Nothing here is fitted: the conditions below are read from each
row's source (its notes, its recipe/config), not tuned to its number.

Run: ``python benchmarks/estimate_accuracy.py`` from the repository root. The data is
``../shared/data/reference-measurements.json`` (``FINETUNE_GEN_REFERENCE_DATA`` overrides).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from finetune_gen.catalog import resolve_model
from finetune_gen.estimate import CUDA_CONTEXT_GB, TrainingShape, estimate_memory
from finetune_gen.params import count_params, trainable_params

GIB = 2**30 / 1e9  # GB per GiB


def data_path() -> Path:
    env = os.environ.get("FINETUNE_GEN_REFERENCE_DATA")
    if env:
        return Path(env)
    return ROOT.parent / "shared" / "data" / "reference-measurements.json"


# ---------------------------------------------------------------------------- row conditions
# stack: "hf" (transformers Trainer / peft), "litgpt", "torchtune".
# metric: "allocated" (max_memory_allocated / torchtune peak active: no CUDA context) or
#         "nvidia-smi" (process memory, context included).
# unit: "GB" (1e9) or "GiB".


@dataclass(frozen=True)
class Case:
    model: str
    method: str
    seq_len: int
    micro_batch: int
    grad_ckpt: bool
    optimizer: str
    targets: tuple[str, ...] | str
    r: int
    stack: str
    metric: str
    unit: str
    tolerance: float
    why_tolerance: str
    world_size: int = 1
    distributed: str = "none"
    cpu_offload: str = "none"
    quant_bits: int = 16
    double_quant: bool = True
    loss_impl: str = "hf"
    kbit_upcast: bool = True
    quant_linear_saves_input: bool = False
    lora_dropout: float = 0.05
    full_master_weights_fp32: bool | None = None
    note: str = ""


_LITGPT = {
    "seq_len": 1304,
    "grad_ckpt": False,
    "optimizer": "adamw_torch",
    "targets": ("q_proj", "v_proj"),
    "r": 8,
    "stack": "litgpt",
    "metric": "allocated",
    "unit": "GB",
    "loss_impl": "bf16",
    "kbit_upcast": False,
    "tolerance": 0.15,
    "why_tolerance": "max_memory_allocated (no context, no allocator cache), padded to the longest "
    "example, so the only slack is litgpt's own layer code vs the HF layer counted here",
}
_LITGPT_Q = dict(_LITGPT, quant_bits=4, quant_linear_saves_input=True)
# torchtune: torch.compile, chunked cross-entropy (CEWithChunkedOutputLoss), packed sequences,
# bf16 weights and bf16 LoRA, memory from torchtune's get_memory_stats (GiB, peak active).
_TT = {
    "seq_len": 2048,
    "grad_ckpt": True,
    "optimizer": "adamw_torch_fused",
    "stack": "torchtune",
    "metric": "allocated",
    "unit": "GiB",
    "loss_impl": "chunked",
    "kbit_upcast": False,
    "lora_dropout": 0.0,
    "tolerance": 0.35,
    "why_tolerance": "torch.compile fuses the norm/activation ops whose saved tensors this model "
    "counts, and the README does not say which of active/allocated/reserved it reports",
}
_TT_LORA31 = ("q_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

CASES: dict[str, Case] = {
    "pub-01": Case("meta-llama/Llama-2-7b-hf", "lora", micro_batch=1, **_LITGPT),
    "pub-02": Case(
        "meta-llama/Llama-2-7b-hf", "qlora", micro_batch=1, **{**_LITGPT_Q, "double_quant": False}
    ),
    "pub-03": Case("meta-llama/Llama-2-7b-hf", "qlora", micro_batch=1, **_LITGPT_Q),
    "pub-04": Case("meta-llama/Llama-2-7b-hf", "lora", micro_batch=2, **_LITGPT),
    "pub-05": Case("meta-llama/Llama-2-13b-hf", "lora", micro_batch=1, **_LITGPT),
    "pub-06": Case("meta-llama/Llama-2-13b-hf", "qlora", micro_batch=1, **_LITGPT_Q),
    "pub-10": Case(
        "meta-llama/Llama-3.1-8B", "lora", micro_batch=2, targets=_TT_LORA31, r=8, **_TT
    ),
    "pub-11": Case(
        "meta-llama/Llama-3.1-8B", "lora", micro_batch=2, targets=_TT_LORA31, r=8, **_TT
    ),
    "pub-12": Case(
        "meta-llama/Llama-3.1-8B",
        "qlora",
        micro_batch=2,
        targets=_TT_LORA31,
        r=8,
        quant_bits=4,
        **{**_TT, "optimizer": "adamw_torch"},
    ),
    "pub-13": Case(
        "meta-llama/Llama-3.1-70B",
        "full",
        micro_batch=2,
        targets="all-linear",
        r=0,
        world_size=8,
        distributed="fsdp",
        cpu_offload="all",
        full_master_weights_fp32=False,
        **_TT,
    ),
    "pub-14": Case(
        "meta-llama/Llama-3.1-70B",
        "lora",
        micro_batch=2,
        targets=("q_proj", "k_proj", "v_proj", "o_proj"),
        r=16,
        world_size=8,
        distributed="fsdp",
        **{**_TT, "optimizer": "adamw_torch"},
    ),
    "pub-15": Case(
        "meta-llama/Llama-3.1-405B",
        "qlora",
        micro_batch=2,
        targets=("q_proj", "k_proj", "v_proj", "o_proj"),
        r=16,
        world_size=8,
        distributed="fsdp",
        quant_bits=4,
        **{**_TT, "optimizer": "adamw_torch"},
    ),
    "pub-16": Case(
        "meta-llama/Llama-2-7b-hf",
        "qlora",
        micro_batch=4,
        targets=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
        r=8,
        quant_bits=4,
        **{**_TT, "optimizer": "adamw_torch"},
    ),
    "pub-17": Case(
        "meta-llama/Llama-2-7b-hf",
        "lora",
        micro_batch=4,
        targets=("q_proj", "v_proj"),
        r=8,
        **{**_TT, "optimizer": "adamw_torch"},
    ),
    "pub-18": Case(
        "meta-llama/Llama-2-7b-hf",
        "lora",
        micro_batch=4,
        targets=("q_proj", "v_proj"),
        r=8,
        world_size=2,
        distributed="fsdp",
        **{**_TT, "optimizer": "adamw_torch"},
    ),
    "pub-20": Case(
        "meta-llama/Llama-2-7b-hf",
        "full",
        micro_batch=4,
        targets="all-linear",
        r=0,
        world_size=4,
        distributed="fsdp",
        full_master_weights_fp32=False,
        **{**_TT, "optimizer": "adamw_torch"},
    ),
    "pub-21": Case(
        "meta-llama/Llama-2-70b-hf",
        "lora",
        micro_batch=4,
        targets=("q_proj", "v_proj"),
        r=8,
        world_size=8,
        distributed="fsdp",
        **{**_TT, "seq_len": 4096, "optimizer": "adamw_torch"},
    ),
    # LLaMA-Factory (HF Trainer, pure bf16, flash-attn, GC): batches of 512 tokens.
    "pub-50": Case(
        "meta-llama/Llama-2-7b-hf",
        "full",
        seq_len=512,
        micro_batch=1,
        grad_ckpt=True,
        optimizer="adamw_8bit",
        targets="all-linear",
        r=0,
        stack="hf",
        metric="allocated",
        unit="GB",
        tolerance=0.20,
        why_tolerance="'peak memory' with the metric and unit unstated (GB vs GiB is 7%, "
        "allocated vs reserved 5-20%)",
    ),
}

EXCLUDED: dict[str, str] = {
    "pub-07": "phi-1.5 is not in the model catalog (its slope is used in docs/estimation-model.md)",
    "pub-08": "optimizer_in_bwd (no full gradient buffer) and a paged optimizer: not modelled",
    "pub-09": "optimizer_in_bwd (no full gradient buffer) and a paged optimizer: not modelled",
    "pub-19": "paged 32-bit AdamW spills its state to CPU RAM (GPU peak < state size) + optimizer_in_bwd",
    "pub-22": "paged AdamW on 8x80GB for 70B full FT: the state (12 B/param / 8 = 104 GB) cannot "
    "be GPU-resident, so it spills to CPU RAM",
    "pub-36": "bigscience/T0_3B (T5 encoder-decoder) is not in the catalog; no seq_len/batch",
    "pub-37": "bigscience/T0_3B (T5 encoder-decoder) is not in the catalog; no seq_len/batch",
    "pub-38": "bigscience/T0_3B (T5 encoder-decoder) is not in the catalog; no seq_len/batch",
    "pub-39": "bigscience/mt0-xxl (mT5) is not in the catalog; no seq_len/batch",
    "pub-40": "bigscience/mt0-xxl (mT5) is not in the catalog; no seq_len/batch",
    "pub-41": "bigscience/bloomz-7b1 is not in the catalog; no seq_len/batch",
    "pub-51": "Unsloth kernels (fused LoRA/CE, its own checkpointing) are not the HF stack",
    "pub-52": "Unsloth kernels (fused LoRA/CE, its own checkpointing) are not the HF stack",
    "pub-53": "Unsloth kernels (fused LoRA/CE, its own checkpointing) are not the HF stack",
    "pub-54": "Gemma-2B (google/gemma-2b) is not in the model catalog",
    "pub-59": "a component breakdown without a total peak (used as an anchor in the docs)",
    "pub-60": "an upper bound (fits in 48 GB) for LLaMA-65B, which is not in the catalog",
    "pub-61": "bert-large-uncased is an encoder, not in the catalog",
}


@dataclass(frozen=True)
class RowResult:
    id: str
    model: str
    method: str
    stack: str
    measured: float | None
    unit: str
    estimate: float | None
    error_pct: float | None
    tolerance: float | None
    excluded: str | None = None
    breakdown: dict | None = None

    @property
    def included(self) -> bool:
        return self.excluded is None

    @property
    def within_tolerance(self) -> bool:
        return self.included and abs(self.error_pct) <= 100 * self.tolerance


def shape_for(case: Case) -> tuple[object, object, TrainingShape]:
    """(architecture, counts, shape) of a case, built from the catalog and params.py."""
    arch = resolve_model(case.model).architecture
    counts = count_params(arch)
    if case.method in ("full", "freeze"):
        trainable = counts.total
    else:
        targets = list(case.targets) if isinstance(case.targets, tuple) else case.targets
        trainable = trainable_params(arch, case.method, target_modules=targets, r=case.r)
    shape = TrainingShape(
        method=case.method,
        trainable_params=trainable,
        precision="bf16",
        micro_batch_size=case.micro_batch,
        seq_len=case.seq_len,
        gradient_checkpointing=case.grad_ckpt,
        optimizer=case.optimizer,
        distributed=case.distributed,
        world_size=case.world_size,
        gpus_per_node=min(case.world_size, 8),
        cpu_offload=case.cpu_offload,
        quant_bits=case.quant_bits,
        double_quant=case.double_quant,
        target_modules=case.targets,
        lora_dropout=case.lora_dropout,
        loss_impl=case.loss_impl,
        kbit_upcast=case.kbit_upcast,
        quant_linear_saves_input=case.quant_linear_saves_input,
        full_master_weights_fp32=case.full_master_weights_fp32,
    )
    return arch, counts, shape


def _estimate_in_row_terms(case: Case) -> tuple[float, dict]:
    arch, counts, shape = shape_for(case)
    est = estimate_memory(arch, counts, shape)
    gb = est.peak_gb if case.metric == "nvidia-smi" else est.peak_gb - CUDA_CONTEXT_GB
    value = gb / GIB if case.unit == "GiB" else gb
    return value, est.breakdown()


def load_rows() -> list[dict]:
    with open(data_path(), encoding="utf-8") as fh:
        return json.load(fh)["rows"]


def evaluate_rows() -> list[RowResult]:
    out: list[RowResult] = []
    for row in load_rows():
        rid = row["id"]
        case = CASES.get(rid)
        if case is None:
            reason = EXCLUDED.get(rid, "conditions the estimator cannot express")
            out.append(
                RowResult(
                    rid,
                    row["model"],
                    row["method"],
                    "",
                    row.get("peak_mem_gb"),
                    "",
                    None,
                    None,
                    None,
                    excluded=reason,
                )
            )
            continue
        value, breakdown = _estimate_in_row_terms(case)
        measured = float(row["peak_mem_gb"])
        err = 100.0 * (value - measured) / measured
        out.append(
            RowResult(
                rid,
                row["model"],
                row["method"],
                case.stack,
                measured,
                case.unit,
                value,
                err,
                case.tolerance,
                breakdown=breakdown,
            )
        )
    return out


def mape(results: list[RowResult], stack: str | None = None) -> float | None:
    errs = [abs(r.error_pct) for r in results if r.included and (stack is None or r.stack == stack)]
    return sum(errs) / len(errs) if errs else None


def render(results: list[RowResult]) -> str:
    lines = [
        (
            f"{'row':7} {'model':14} {'method':32} {'stack':9} {'measured':>9} {'estimate':>9} "
            f"{'unit':4} {'error':>7} {'tol':>5}"
        ),
    ]
    for r in results:
        if not r.included:
            continue
        flag = "" if r.within_tolerance else "  OUTSIDE"
        lines.append(
            f"{r.id:7} {r.model[:14]:14} {r.method[:32]:32} {r.stack:9} {r.measured:9.2f} "
            f"{r.estimate:9.2f} {r.unit:4} {r.error_pct:+6.1f}% {100 * r.tolerance:4.0f}%{flag}"
        )
    lines.append("")
    for label, stack in (("HF stack", "hf"), ("litgpt", "litgpt"), ("torchtune", "torchtune")):
        m = mape(results, stack)
        n = sum(1 for r in results if r.included and r.stack == stack)
        lines.append(f"MAPE {label:10} {'n/a' if m is None else f'{m:5.1f}%'} over {n} rows")
    m = mape(results)
    lines.append(f"MAPE {'overall':10} {m:5.1f}% over {sum(r.included for r in results)} rows")
    lines.append("")
    for r in results:
        if not r.included:
            lines.append(f"EXCLUDED {r.id}: {r.model} {r.method}: {r.excluded}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- saved tensors
# A CPU check of the per-layer activation count on the real HF stack: build a small
# Llama-shaped model (h=1024, i=2752 = 2.6875 h as in Llama-2-7B, head_dim 128), run one
# forward under bf16 autocast with SDPA, and record every tensor autograd saves (deduplicated
# by storage, parameters excluded). The difference between 4 and 2 layers, per token and per
# hidden unit, is the per-layer coefficient the estimator derives op by op. Dropout is 0:
# CPU dropout saves an fp32 noise tensor where CUDA saves a bool mask.
SAVED_TENSOR_CONFIGS = (("full", 8), ("full", 2), ("lora_qv", 8), ("lora_qv", 2))


def measure_saved_tensors(seq: int = 256) -> dict[tuple[str, int], float]:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    def saved_bytes(layers: int, mode: str, kv: int) -> int:
        torch.manual_seed(0)
        cfg = LlamaConfig(
            hidden_size=1024,
            num_attention_heads=8,
            num_key_value_heads=kv,
            intermediate_size=2752,
            num_hidden_layers=layers,
            vocab_size=4096,
            attn_implementation="sdpa",
        )
        model = LlamaForCausalLM(cfg).to(torch.bfloat16)
        if mode == "lora_qv":
            from peft import LoraConfig, get_peft_model

            lcfg = LoraConfig(
                r=16, lora_alpha=32, lora_dropout=0.0, target_modules=["q_proj", "v_proj"]
            )
            model = get_peft_model(model, lcfg)
        model.train()
        params = {p.untyped_storage().data_ptr() for p in model.parameters()}
        seen: dict[int, int] = {}

        def pack(t):
            storage = t.untyped_storage()
            if storage.data_ptr() not in params:
                seen[storage.data_ptr()] = storage.nbytes()
            return t

        ids = torch.randint(0, 4096, (1, seq))
        with (
            torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t),
            torch.autocast("cpu", dtype=torch.bfloat16),
        ):
            model(input_ids=ids, labels=ids)
        return sum(seen.values())

    out = {}
    for mode, kv in SAVED_TENSOR_CONFIGS:
        diff = saved_bytes(4, mode, kv) - saved_bytes(2, mode, kv)
        out[(mode, kv)] = diff / (2 * seq * 1024)
    return out


def modelled_saved_tensors() -> dict[tuple[str, int], float]:
    from finetune_gen.architecture import Architecture
    from finetune_gen.estimate import _layer_activation_bytes

    out = {}
    for mode, kv in SAVED_TENSOR_CONFIGS:
        arch = Architecture.from_config(
            {
                "model_type": "llama",
                "hidden_size": 1024,
                "intermediate_size": 2752,
                "num_hidden_layers": 4,
                "num_attention_heads": 8,
                "num_key_value_heads": kv,
                "vocab_size": 4096,
            }
        )
        shape = TrainingShape(
            method="full" if mode == "full" else "lora",
            trainable_params=1,
            precision="bf16",
            micro_batch_size=1,
            seq_len=256,
            gradient_checkpointing=False,
            optimizer="adamw_torch",
            target_modules=None if mode == "full" else ("q_proj", "v_proj"),
            lora_dropout=0.0,
        )
        out[(mode, kv)] = _layer_activation_bytes(arch, shape, trainable=mode == "full") / 1024
    return out


def main() -> int:
    if "--saved-tensors" in sys.argv:
        measured, modelled = measure_saved_tensors(), modelled_saved_tensors()
        print("bytes kept per token per layer / hidden_size (HF Llama layer, bf16 autocast, SDPA)")
        for key in SAVED_TENSOR_CONFIGS:
            print(
                f"{key[0]:8} kv_heads={key[1]}  measured {measured[key]:6.2f}  modelled {modelled[key]:6.2f}"
            )
        return 0
    path = data_path()
    if not path.exists():
        print(
            f"reference data not found at {path}; set FINETUNE_GEN_REFERENCE_DATA", file=sys.stderr
        )
        return 2
    results = evaluate_rows()
    print(render(results))
    if "--breakdown" in sys.argv:
        print()
        for r in results:
            if r.included:
                print(r.id, r.breakdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
