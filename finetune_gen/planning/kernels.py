"""Collation and fused kernels: what the generated train.py is expected to use on the target GPU.

train.py decides again at start-up from what it finds (a varlen attention kernel, liger-kernel,
CUDA) and prints its choice; the plan records what the target GPU should give and the fallback,
so the estimate and the review see the same arrangement the run will use.

- ``padding_free``: each micro-batch is one flattened row with ``position_ids`` restarting at 0 per
  example; FlashAttention 2's varlen kernels keep examples apart and skip padding entirely. Without
  a varlen kernel (SDPA, eager) it is exact but not faster: the mask spans the whole row.
- ``group_by_length``: padded batches of similar lengths (``train_sampling_strategy``), measured at
  0.97 useful-token fraction on a skewed instruction set with SDPA.
- ``packing``: raw-text generation with ``packing: true`` cuts documents into full blocks.
"""

from __future__ import annotations

# Architectures liger-kernel patches (its monkey_patch table, liger-kernel 0.6): RMSNorm, RoPE,
# SwiGLU/GeGLU and the cross-entropy kernels. Others train without them.
LIGER_MODEL_TYPES = frozenset(
    {
        "gemma",
        "gemma2",
        "gemma3",
        "gemma3_text",
        "glm4",
        "granite",
        "llama",
        "mistral",
        "mixtral",
        "olmo2",
        "phi3",
        "qwen2",
        "qwen3",
        "qwen3_moe",
    }
)

# FlashAttention 2 needs an Ampere or newer GPU (compute capability 8.0+).
FLASH_ATTENTION_MIN_CAPABILITY = 8.0


def plan_collation(task_type: str, packing: bool, compute_capability: str) -> tuple[str, str, str]:
    """(expected collation on the target GPU, the fallback, why)."""
    if task_type == "generation" and packing:
        return (
            "packing",
            "packing",
            "raw text with packing: documents are cut into full max_seq_length blocks (no padding)",
        )
    fallback = "group_by_length"
    if task_type == "classification":
        return (
            fallback,
            fallback,
            "classification pools the last real token of padded rows: batches of similar "
            "lengths keep padding low",
        )
    if _capability(compute_capability) >= FLASH_ATTENTION_MIN_CAPABILITY:
        return (
            "padding_free",
            fallback,
            f"the target GPU (compute capability {compute_capability}) runs FlashAttention 2: "
            "flattened batches with position_ids, no padding and no attention across examples "
            "(flash-attn is an optional requirement; without it train.py falls back to "
            "length-grouped padded batches and says so)",
        )
    return (
        fallback,
        fallback,
        f"the target GPU (compute capability {compute_capability}) has no FlashAttention 2 "
        "(Ampere+): padded batches of similar lengths instead (padding-free rows are exact but "
        "not faster without a varlen kernel)",
    )


def plan_liger(model_type: str, task_type: str) -> tuple[bool, str]:
    """(use_liger_kernel, why): Liger's fused kernels for architectures it supports, on CUDA."""
    if task_type == "classification":
        return False, "classification: Liger's kernels target causal language models"
    if model_type not in LIGER_MODEL_TYPES:
        return False, f"liger-kernel has no kernels for model_type {model_type!r}"
    return (
        True,
        f"liger-kernel supports {model_type}: fused RMSNorm, RoPE and SwiGLU kernels on CUDA "
        "(less activation memory, faster steps); train.py turns them off on the CPU or when "
        "liger-kernel is not installed (an optional requirement), and says so",
    )


def _capability(text: str) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return 0.0
