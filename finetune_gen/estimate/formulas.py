"""Memory, time, storage and cost estimates for one training configuration.

Pure, deterministic arithmetic: no torch import. Every coefficient is either a formula from
``shared/docs/ESTIMATION.md`` (section numbers below) or a count of what the Hugging Face stack
(transformers 5, peft, bitsandbytes, PyTorch autograd) keeps alive, derived tensor by tensor;
``docs/estimation-model.md`` gives each one with its source and ``benchmarks/
estimate_accuracy.py`` compares the result with the published measurements.

Units: GB = 1e9 bytes, per GPU unless said otherwise. ``MemoryEstimate.peak_gb`` estimates
``torch.cuda.max_memory_allocated()`` on one GPU plus the CUDA context (contract section 3).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from finetune_gen.knowledge.architecture import Architecture
from finetune_gen.knowledge.optimizers import OPTIMIZERS
from finetune_gen.knowledge.params import (
    _IA3_TARGETS,
    METHODS,
    ParamCounts,
    linear_shapes,
)
from finetune_gen.variants.distribution import DISTRIBUTION_NAMES
from finetune_gen.variants.methods import LORA_FAMILY, PEFT_METHODS
from finetune_gen.variants.methods import LOW_RANK_METHODS as ADAPTER_METHODS

GB = 1e9

DISTRIBUTED = DISTRIBUTION_NAMES
OFFLOAD = ("none", "optimizer", "all")
PRECISIONS = ("bf16", "fp16", "fp32")
LOSS_IMPLS = ("hf", "chunked", "bf16", "liger")
# How a collator arranges examples into micro-batches (the plan's training.collation): padded
# to the longest in a random batch, padded within length-grouped batches, flattened without
# padding (position_ids restart per example), or packed into full sequences.
COLLATIONS = ("pad_to_longest", "group_by_length", "padding_free", "packing")

# ---------------------------------------------------------------------------- coefficients
# Section 1.3: NF4 stores 4 bits per weight plus one fp32 absmax per 64-weight block; double
# quantization stores that absmax in 8 bits with one fp32 constant per 256 blocks.
NF4_BLOCK = 64
DQ_BLOCK2 = 256
NF4_BYTES = (4 + 32 / NF4_BLOCK) / 8  # 0.5625 B/param
NF4_DQ_BYTES = (4 + 8 / NF4_BLOCK + 32 / (NF4_BLOCK * DQ_BLOCK2)) / 8  # 0.5159 B/param
INT8_BYTES = 1.0  # LLM.int8 weight; its per-row fp32 scale is < 0.1% and ignored
# bitsandbytes 8-bit optimizers: one uint8 per state element plus an fp32 absmax per
# 256-element block (blockwise dynamic quantization), two states for Adam (section 1.2).
BNB_8BIT_STATE_BYTES = 2 * (1 + 4 / 256)
# transformers' Trainer registers every nn.Embedding weight for 32-bit states under a
# bitsandbytes 8-bit optimizer (GlobalOptimManager.register_module_override(..., optim_bits=32)).
# The check matched no optimizer class from transformers 4.31 until PR #37331 (April 2025);
# since then it applies to all bnb 8-bit optimizers: fp32 m and v, 8 B per embedding parameter.
BNB_32BIT_STATE_BYTES = 8.0
# HF docs "Model training anatomy": 1,343 MiB of CUDA context and kernels before any tensor.
CUDA_CONTEXT_GB = 1343 * 2**20 / GB
# EleutherAI cookbook: DeepSpeed ZeRO adds its all-gather/reduce buckets,
# allgather_bucket_size (5e8 elements) x 2 bytes (section 1.5). Counted at any world size, so
# that adding GPUs never raises the per-GPU estimate.
DEEPSPEED_BUCKET_GB = 5e8 * 2 / GB
# DeepSpeed estimators' additional_buffer_factor for host memory (section 1.5).
DS_CPU_BUFFER_FACTOR = 1.5
# Hardware-FLOPs utilization (executed FLOPs incl. recomputation / dense peak), section 1.7:
# single-node HF Trainer + SDPA/FA2 runs reach 25-45% of dense peak; the measured fine-tuning
# rows there are 47% (Qwen-7B LoRA+GC, A100) and 59% (torchtune 70B LoRA, 8xA100).
UTIL_SINGLE_NODE = 0.40
UTIL_MULTI_NODE = 0.30  # inter-node all-reduce/all-gather on the critical path (HF blog #1649)
UTIL_CPU_OFFLOAD = {"optimizer": 0.20, "all": 0.15}  # section 1.7: "CPU offload 5-25%"
# Section 1.7 QLoRA/LoRA step-time table (bnb rows 1.35-2.5x, Unsloth 1.24x); the doc's default
# range is 1.3-1.6x. 1.5 is inside it and below the short/padded-sequence outliers.
QLORA_DEQUANT_SLOWDOWN = 1.5
# Wall clock beyond the training steps, evaluations and checkpoint writes (each counted on its
# own below): loading the model and tokenizing the data.
WALLCLOCK_FIXED_HOURS = 0.1
# Checkpoint writes: 1,000 MiB/s, the maximum throughput of an AWS EBS gp3 volume (its baseline
# is 125 MiB/s; local NVMe SSDs write at several GB/s). The Trainer pauses training while
# torch.save / safetensors write weights and optimizer state, so the write is wall time.
CHECKPOINT_WRITE_BYTES_PER_S = 1000 * 2**20
# Useful (non-padding) share of processed tokens when the data's lengths are not at hand,
# measured on the CPU with transformers 5.24 / TRL 1.16 on a skewed 2,700-row instruction set
# (issue #11's table): random batches padded to their longest 0.48, length-grouped batches
# 0.97; padding-free and packed batches process no padding.
DEFAULT_USEFUL_FRACTION = {
    "pad_to_longest": 0.48,
    "group_by_length": 0.97,
    "padding_free": 1.0,
    "packing": 1.0,
}
# Storage (section 1.8 and datasets' OptimizedTypedSequence): a tokenized row stores
# input_ids as int32 (4 B), attention_mask as int8 (1 B) and one int64 column (labels or a
# completion mask, 8 B).
TOKENIZED_BYTES_PER_TOKEN = 13
RAW_BYTES_PER_TOKEN = 4  # ~4 characters of English text per token when the file is not known
HF_SHARD_GB = 5.0  # transformers' default max_shard_size for hub checkpoints

ASSUMPTIONS: list[str] = [
    (
        "GPU memory is the estimated torch.cuda.max_memory_allocated() plus "
        f"{CUDA_CONTEXT_GB:.2f} GB of CUDA context (HF docs 'Model training anatomy': 1,343 MiB); "
        "PyTorch's caching allocator reserves 5-20% more than it allocates, so keep headroom"
    ),
    "attention runs through SDPA / FlashAttention-2: no sequence x sequence score matrix is stored",
    (
        "activations are counted tensor by tensor as PyTorch autograd saves them for the Hugging Face "
        "decoder layer (RMSNorm fp32 upcast, q/k/v/output kept by SDPA, SwiGLU gate/up/product); "
        "frozen Linear layers save no input"
    ),
    (
        "the loss upcasts logits to fp32 (transformers ForCausalLMLoss): about 12 bytes x vocabulary "
        "per token at the start of the backward pass"
    ),
    (
        "with gradient checkpointing each decoder layer keeps only its input; one layer is recomputed "
        "at a time during the backward pass"
    ),
    (
        "gradients from earlier micro-batches stay allocated during the next forward/backward "
        "(gradient accumulation), so gradients and activations are added"
    ),
    (
        "paged optimizers (paged_adamw_*) are counted as if their state stayed on the GPU; paging to "
        "CPU RAM only happens under memory pressure, which the plan avoids"
    ),
    "GB means 10^9 bytes throughout",
]


# ---------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class TrainingShape:
    """Everything about a run that changes its memory, time or storage.

    ``full_master_weights_fp32`` chooses between the two full fine-tuning regimes of
    ESTIMATION.md section 1.2. ``None`` (the default) follows the generated ``train.py``:
    a bf16 run loads the model in bf16 and the HF Trainer trains it "pure bf16" (bf16
    weights and gradients, and ``torch.optim.AdamW`` creates its m and v with
    ``zeros_like(param)``, so bf16 too: 2 + 2 + 4 = 8 B/param); an fp16 run loads fp32
    weights because the GradScaler refuses to unscale fp16 gradients, which is the
    18 B/param AMP regime (fp32 weights + bf16/fp16 autocast copies, fp32 gradients, fp32
    m and v). DeepSpeed and FSDP always keep fp32 masters of the trainable parameters.
    """

    method: str
    trainable_params: int
    precision: str
    micro_batch_size: int
    seq_len: int
    gradient_checkpointing: bool
    optimizer: str
    distributed: str = "none"
    world_size: int = 1
    gpus_per_node: int = 1
    cpu_offload: str = "none"
    quant_bits: int = 16
    double_quant: bool = True
    task: str = "causal_lm"
    num_virtual_tokens: int = 0
    full_master_weights_fp32: bool | None = None
    # Which modules carry adapters (LoRA family / IA3): a list of module names or
    # "all-linear". None means all-linear, the largest (so safest) activation estimate.
    target_modules: tuple[str, ...] | str | None = None
    lora_dropout: float = 0.05
    # How the loss treats the logits: "hf" (fp32 upcast, transformers), "chunked" (a chunked
    # cross-entropy such as torchtune's CEWithChunkedOutputLoss), "bf16" (litgpt: chunked
    # lm_head, bf16 cross-entropy).
    loss_impl: str = "hf"
    # peft.prepare_model_for_kbit_training casts every 16-bit parameter that is not quantized
    # (embeddings, lm_head, norms) to fp32. The generated QLoRA scripts call it.
    kbit_upcast: bool = True
    # bitsandbytes releases of 2023 (e.g. 0.41) saved each 4-bit matmul's input for backward
    # (``ctx.tensors = (A, B)``); current ones save only the weight. Only for old measurements.
    quant_linear_saves_input: bool = False
    # The forward runs under torch.autocast (the HF Trainer with bf16=True/fp16=True). CUDA
    # autocast runs layer_norm and pow in fp32, which changes what LayerNorm/GELU models keep.
    # False: a pure 16-bit stack without autocast (litgpt "bf16-true", torchtune), whose
    # adapters are 16 bit too.
    autocast: bool = True
    # transformers >= 4.52 (PR #37331) keeps the embedding's states in fp32 under bnb 8-bit
    # optimizers; the 2024 releases (4.31-4.51) did not. Only for old measurements.
    bnb_embedding_fp32_state: bool = True
    num_labels: int = 2

    @property
    def master_weights_fp32(self) -> bool:
        if self.method not in ("full", "freeze"):
            return False
        if self.full_master_weights_fp32 is not None:
            return bool(self.full_master_weights_fp32)
        return self.precision == "fp16"

    @property
    def tokens_per_micro_batch(self) -> int:
        return self.micro_batch_size * (self.seq_len + self.num_virtual_tokens)

    def validate(self) -> None:
        problems = []
        if self.method not in METHODS:
            problems.append(f"method {self.method!r} not one of {', '.join(METHODS)}")
        if self.precision not in PRECISIONS:
            problems.append(f"precision {self.precision!r} not one of {', '.join(PRECISIONS)}")
        if self.distributed not in DISTRIBUTED:
            problems.append(f"distributed {self.distributed!r} not one of {', '.join(DISTRIBUTED)}")
        if self.cpu_offload not in OFFLOAD:
            problems.append(f"cpu_offload {self.cpu_offload!r} not one of {', '.join(OFFLOAD)}")
        if self.loss_impl not in LOSS_IMPLS:
            problems.append(f"loss_impl {self.loss_impl!r} not one of {', '.join(LOSS_IMPLS)}")
        if self.quant_bits not in (4, 8, 16, 32):
            problems.append(f"quant_bits {self.quant_bits} not one of 4, 8, 16, 32")
        if _optimizer_kind(self.optimizer) is None:
            problems.append(f"optimizer {self.optimizer!r} is not modelled")
        for name in ("micro_batch_size", "seq_len", "world_size", "gpus_per_node"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1")
        if self.trainable_params < 0 or self.num_virtual_tokens < 0:
            problems.append("trainable_params and num_virtual_tokens must be >= 0")
        if problems:
            raise ValueError("invalid TrainingShape: " + "; ".join(problems))


# ---------------------------------------------------------------------------- results


@dataclass(frozen=True)
class MemoryEstimate:
    weights_gb: float
    trainable_and_grads_gb: float
    optimizer_gb: float
    activations_gb: float
    logits_gb: float
    overhead_gb: float
    peak_gb: float
    cpu_ram_gb: float
    assumptions: tuple[str, ...] = ()

    @property
    def allocated_gb(self) -> float:
        """The peak without the CUDA context: what ``max_memory_allocated`` reports."""
        return self.peak_gb - CUDA_CONTEXT_GB

    def breakdown(self) -> dict[str, float]:
        return {
            "weights": round(self.weights_gb, 2),
            "trainable_and_grads": round(self.trainable_and_grads_gb, 2),
            "optimizer": round(self.optimizer_gb, 2),
            "activations": round(self.activations_gb, 2),
            "logits": round(self.logits_gb, 2),
            "overhead": round(self.overhead_gb, 2),
        }


@dataclass(frozen=True)
class TimeEstimate:
    hours: float
    tokens_per_epoch: int
    total_tokens: int
    flops: float
    tokens_per_second: float
    mfu: float
    assumptions: list[str] = field(default_factory=list)
    processed_tokens: int = 0  # tokens the GPU runs through, padding included
    useful_fraction: float = 1.0
    train_hours: float = 0.0
    eval_hours: float = 0.0
    checkpoint_hours: float = 0.0


@dataclass(frozen=True)
class StorageEstimate:
    base_download_gb: float
    checkpoints_gb: float
    final_output_gb: float
    merged_export_gb: float
    dataset_cache_gb: float
    total_gb: float
    assumptions: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------- helpers


def _optimizer_kind(name: str) -> str | None:
    entry = OPTIMIZERS.get(name)
    return entry.state_kind if entry else None


def _compute_bytes(shape: TrainingShape) -> int:
    """Bytes of an activation produced by a matmul: autocast bf16/fp16, else fp32."""
    return 4 if shape.precision == "fp32" else 2


def _is_quantized(shape: TrainingShape) -> bool:
    return shape.quant_bits in (4, 8) and shape.method in PEFT_METHODS


def _adapted_shapes(arch: Architecture, shape: TrainingShape):
    """The per-layer Linear shapes that carry an adapter (LoRA family, IA3)."""
    shapes = [s for s in linear_shapes(arch) if s.adaptable]
    target = shape.target_modules
    if shape.method == "ia3" and target is None:
        # peft's IA3 default for the model type (Llama-style models: k, v, down)
        target = tuple(_IA3_TARGETS.get(arch.model_type, _IA3_TARGETS["llama"])[0])
    if target is None or (isinstance(target, str) and target.lower() in ("all-linear", "all")):
        return shapes
    names = {target} if isinstance(target, str) else {t.split(".")[-1] for t in target}
    return [s for s in shapes if s.name in names or s.path in names]


def _weight_bytes(arch: Architecture, counts: ParamCounts, shape: TrainingShape) -> float:
    """Unsharded bytes of the model's own parameters as they sit on the GPU."""
    wb = 4 if shape.precision == "fp32" else 2
    if shape.master_weights_fp32:
        return 4.0 * counts.total
    if _is_quantized(shape):
        q = (
            INT8_BYTES
            if shape.quant_bits == 8
            else (NF4_DQ_BYTES if shape.double_quant else NF4_BYTES)
        )
        rest = counts.total - counts.quantizable_linear
        rest_bytes = 4 if (shape.kbit_upcast or shape.precision == "fp32") else wb
        return q * counts.quantizable_linear + rest_bytes * rest
    return float(wb * counts.total)


def _residual_bytes(shape: TrainingShape) -> int:
    """dtype of the residual stream (what a checkpointed layer keeps as its input)."""
    if shape.precision == "fp32" or shape.master_weights_fp32:
        return 4
    if _is_quantized(shape) and shape.kbit_upcast:
        return 4  # fp32 embeddings after prepare_model_for_kbit_training
    return 2


# Families whose decoder layer uses LayerNorm and a non-gated GELU MLP (everything else is
# counted as a Llama-style RMSNorm + gated MLP layer). "phi" runs attention and MLP in parallel
# off one LayerNorm; gpt2 and falcon are counted as two sequential LayerNorm sub-blocks.
_LAYERNORM_FAMILIES = ("gpt2", "phi", "falcon")
_GEMMA_NORM_FAMILIES = ("gemma", "gemma2", "gemma3_text")
# Residual dropout probability when config.json does not give it (the config classes' defaults).
_DEFAULT_RESID_PDROP = {"gpt2": 0.1}
# Activation when config.json does not name one (GPT2Config / PhiConfig defaults).
_DEFAULT_ACT = {"gpt2": "gelu_new", "phi": "gelu_new"}


def _fp32_autocast_ops(shape: TrainingShape) -> bool:
    """Whether CUDA autocast's fp32 policy applies (layer_norm, pow, softmax run in fp32)."""
    return shape.autocast and shape.precision != "fp32"


def _activation_fn(arch: Architecture) -> str:
    cfg = arch.config or {}
    act = cfg.get("hidden_act") or cfg.get("activation_function") or cfg.get("hidden_activation")
    return str(act or _DEFAULT_ACT.get(arch.model_type, ""))


def _gelu_bytes(arch: Architecture, shape: TrainingShape, i: int) -> float:
    """Bytes per token kept by a non-gated MLP's activation of width ``i``.

    ``gelu_new`` (transformers' NewGELUActivation, gpt2 and phi) is eager:
    0.5 * x * (1 + tanh(c * (x + 0.044715 * pow(x, 3)))). It keeps x for pow, tanh's output,
    0.5 * x and 1 + tanh for the final product. CUDA autocast runs pow in fp32, so x is kept as
    an fp32 copy and tanh, 1 + tanh are fp32 too: (3 * 4 + ab) * i. Without autocast all four
    are 16 bit: 4 * ab * i. Every other activation is one op that keeps its input: ab * i.
    """
    ab = _compute_bytes(shape)
    if _activation_fn(arch) == "gelu_new":
        return (12 + ab) * i if _fp32_autocast_ops(shape) else 4 * ab * i
    return ab * i


def _resid_dropout(arch: Architecture) -> float:
    cfg = arch.config or {}
    p = cfg.get("resid_pdrop")
    if p is None:
        p = cfg.get("hidden_dropout")
    if p is None:
        p = _DEFAULT_RESID_PDROP.get(arch.model_type, 0.0)
    return float(p)


def _layernorm_block_bytes(arch: Architecture, shape: TrainingShape, trainable: bool) -> float:
    """Bytes per token kept by one LayerNorm + GELU-MLP layer (gpt2, phi, falcon), no adapters.

    Counted tensor by tensor from the transformers 5 modelling code under CUDA autocast:

    * LayerNorm (``native_layer_norm``) keeps its input, mean and rstd (fp32, 8 B). Autocast
      runs layer_norm in fp32, so the kept input is an fp32 copy (4h) and the output is fp32;
      without autocast it is the 16-bit residual (ab * h). A trained weight adds nothing.
    * SDPA / FlashAttention keep q, k, v, the output and an fp32 logsumexp, as for Llama.
    * the GELU MLP: :func:`_gelu_bytes`; residual dropout keeps a 1-byte mask per call on CUDA.
    * trained Linear weights keep their input. Under autocast each Linear that reads the fp32
      LayerNorm output makes its own 16-bit copy (autocast caches casts of weights only), so
      phi's q, k, v and fc1 keep four copies; without autocast they share one. phi's
      ``dense`` keeps a copy of the attention output: the partial-rotary ``torch.cat`` makes q
      contiguous in [batch, heads, seq, dim], the kernels return the output in that layout and
      ``transpose(1, 2).contiguous()`` copies it (Llama's output needs no copy).
    """
    ab = _compute_bytes(shape)
    h, i = arch.hidden_size, arch.intermediate_size
    q_w = arch.num_attention_heads * arch.head_dim
    kv_w = arch.num_key_value_heads * arch.head_dim
    fp32_ops = _fp32_autocast_ops(shape)
    ln_in = 4 if fp32_ops else _residual_bytes(shape)
    parallel = arch.family == "phi"
    n_norms = 1 if parallel else 2
    total = n_norms * (ln_in * h + 8)
    total += ab * (q_w + 2 * kv_w) + ab * q_w + 4 * arch.num_attention_heads
    total += _gelu_bytes(arch, shape, i)
    if _resid_dropout(arch) > 0:
        total += 2 * h  # attention-output and MLP-output dropout masks (CUDA: 1 B per element)
    if trainable or (shape.quant_linear_saves_input and _is_quantized(shape)):
        # Linears reading a LayerNorm output: phi q, k, v, fc1; gpt2/falcon c_attn and c_fc
        readers = 4 if parallel else 2
        copies = readers if (fp32_ops and ab == 2) else (1 if parallel else 2)
        total += ab * h * copies + ab * i  # + the MLP's output projection (fc2, c_proj)
        if parallel:
            total += ab * q_w  # dense's input: the copied attention output
    return float(total)


def _layer_activation_bytes(arch: Architecture, shape: TrainingShape, trainable: bool) -> float:
    """Bytes per token that autograd keeps for one decoder layer (no checkpointing).

    ``trainable``: the layer's own weights get gradients (full FT, trained freeze layers).
    """
    ab = _compute_bytes(shape)
    h, i = arch.hidden_size, arch.intermediate_size
    q_w = arch.num_attention_heads * arch.head_dim
    kv_w = arch.num_key_value_heads * arch.head_dim
    family = arch.family
    experts = max(1, arch.num_experts_per_tok) if arch.num_experts else 1
    if family in _LAYERNORM_FAMILIES:
        total = _layernorm_block_bytes(arch, shape, trainable)
    else:
        n_norms = 4 if family in ("gemma2", "gemma3_text") else 2
        # RMSNorm: hidden.to(float32) is kept by pow() and the rsqrt multiply (4 B). A trained
        # weight also keeps the normalized tensor: Llama multiplies the 16-bit cast (ab B),
        # Gemma multiplies in fp32 before casting, (x * (1 + w)).type_as(x), so keeps 4 B.
        norm_w = (4 if family in _GEMMA_NORM_FAMILIES else ab) * h if trainable else 0
        total = n_norms * (4 * h + norm_w)
        if family in ("qwen3", "gemma3_text"):
            total += 4 * (q_w + kv_w)  # q_norm/k_norm over the head dimension, fp32 upcast
        # SDPA / FlashAttention keep q and k after RoPE, v, the output and an fp32 logsumexp.
        total += ab * (q_w + 2 * kv_w) + ab * q_w + 4 * arch.num_attention_heads
        # gated MLP: act(gate) keeps gate, the product keeps act(gate) and up
        total += experts * 3 * ab * i
        # Inputs kept for weight gradients (trainable layers), or by 2023 bitsandbytes matmuls:
        # q/k/v share one input, gate/up another, down_proj its own. o_proj's input is the SDPA
        # output itself (the kernels return it in [batch, seq, heads, dim] layout, so the
        # transpose(1, 2).contiguous() in transformers copies nothing): already counted above.
        if trainable or (shape.quant_linear_saves_input and _is_quantized(shape)):
            total += ab * 2 * h + experts * ab * i
    if shape.method in ADAPTER_METHODS:
        drop = 1 if shape.lora_dropout > 0 else 0  # bool dropout mask
        rank = _effective_rank(arch, shape)
        for s in _adapted_shapes(arch, shape):
            cnt = s.count
            if shape.method in LORA_FAMILY:
                # fp32 adapter (peft autocast_adapter_dtype); under autocast lora_A keeps the
                # 16-bit cast of the dropped-out input (fp32 runs keep it in fp32), and lora_B
                # keeps lora_A's output (rank wide).
                total += cnt * s.d_in * (drop + ab) + cnt * ab * rank
                if shape.method == "dora":
                    total += cnt * 2 * ab * s.d_out  # base and lora results, magnitude scaling
            else:  # loha / lokr: F.linear(x, delta_weight) keeps x
                total += cnt * s.d_in * (drop + ab)
    elif shape.method == "ia3":
        for s in _adapted_shapes(arch, shape):
            ff = s.name in ("down_proj", "c_proj", "dense_4h_to_h", "w2", "fc2")
            total += s.count * ab * (s.d_in if ff else s.d_out)
    return float(total)


def _effective_rank(arch: Architecture, shape: TrainingShape) -> float:
    """The LoRA rank implied by ``trainable_params`` and the adapted modules (for lora_B's input)."""
    if shape.method not in LORA_FAMILY:
        return 0.0
    width = sum(s.count * (s.d_in + s.d_out) for s in _adapted_shapes(arch, shape))
    return shape.trainable_params / (width * max(1, arch.num_layers)) if width else 0.0


def _layer_constant_bytes(arch: Architecture, shape: TrainingShape) -> float:
    """Per-layer bytes that do not scale with tokens.

    LoHa/LoKr keep the 16-bit delta weight. Under autocast, LoRA's fp32 lora_A and lora_B are
    cast to 16 bit for their matmuls and the casts are kept for backward: 2 B per adapter
    parameter of the layer.
    """
    ab = _compute_bytes(shape)
    if shape.method in ("loha", "lokr"):
        return float(sum(ab * s.weight_params for s in _adapted_shapes(arch, shape)))
    if shape.method in LORA_FAMILY and _fp32_autocast_ops(shape):
        return float(ab * shape.trainable_params / max(1, arch.num_layers))
    return 0.0


def _logit_bytes_per_token(arch: Architecture, shape: TrainingShape) -> float:
    if shape.task == "sequence_classification":
        return 12.0 * shape.num_labels
    v = arch.vocab_size
    if shape.loss_impl == "chunked":
        # bf16 logits (2V) + fp32 log-probs kept per chunk (4V) + one of 8 chunks' fp32 upcast
        return 6.5 * v
    if shape.loss_impl == "bf16":
        return 4.0 * v  # bf16 logits kept by the training loop + bf16 log_softmax output
    if shape.loss_impl == "liger":
        return _liger_flce_bytes_per_token(arch, shape)
    # fp32 log_softmax output kept for backward (4V) + its incoming gradient (4V) + the
    # gradient it produces (4V) when the backward pass starts.
    return 12.0 * v


def _liger_flce_bytes_per_token(arch: Architecture, shape: TrainingShape) -> float:
    """Liger's fused linear cross-entropy: the logits are never materialised whole.

    Liger-Kernel (Hsu et al. 2024, "Liger Kernel: Efficient Triton Kernels for LLM Training",
    arXiv 2410.10989; linkedin/Liger-Kernel ``ops/fused_linear_cross_entropy.py``)
    runs lm_head and the loss chunk by chunk in the forward pass and keeps the gradients:
    ``grad_input = zeros_like(_input)`` (the hidden states' dtype, ab·h per token), one chunk of
    logits of ``next_power_of_2(ceil(BT / ceil(V / h)))`` rows x V, i.e. at most 2·BT·h elements
    in that dtype (2·ab·h per token), and an fp32 per-token loss (4 B). lm_head's weight gradient
    (full fine-tuning) is a gradient, counted with the gradients.
    """
    ab = _compute_bytes(shape)
    return float(ab * arch.hidden_size + 2 * ab * arch.hidden_size + 4)


def eval_logit_bytes_per_token(arch: Architecture, shape: TrainingShape) -> float:
    """Logits during evaluation (no grad), with or without Liger.

    Liger only skips the logits when the model trains; in eval mode the model returns bf16
    logits (2V), its loss (ForCausalLMLoss) upcasts them (4V) and log_softmax makes another fp32
    tensor (4V); train.py's token_nll then does the same on the kept logits: 10·V per token.
    """
    if shape.task == "sequence_classification":
        return 10.0 * shape.num_labels
    return 10.0 * arch.vocab_size


def _n_trainable_layers(counts: ParamCounts, shape: TrainingShape, arch: Architecture) -> int:
    if shape.method == "full":
        return arch.num_layers
    if shape.method == "freeze":
        per = max(1, counts.per_layer)
        return max(0, min(arch.num_layers, round(shape.trainable_params / per)))
    return 0


def _activation_terms(arch: Architecture, counts: ParamCounts, shape: TrainingShape):
    """(activations kept through the pass, logits peak, one-layer working set) in bytes."""
    tokens = shape.tokens_per_micro_batch
    layers = arch.num_layers
    ab = _compute_bytes(shape)
    n_train = _n_trainable_layers(counts, shape, arch)
    frozen_layer = _layer_activation_bytes(arch, shape, trainable=False)
    train_layer = _layer_activation_bytes(arch, shape, trainable=True)
    biggest = train_layer if n_train else frozen_layer
    # the final norm (RMSNorm: fp32 upcast; LayerNorm: its input) and, when the head is
    # trained, the input kept by lm_head
    head_train = shape.method == "full" or shape.task == "sequence_classification"
    if arch.family in _LAYERNORM_FAMILIES:
        final_norm = (4 if _fp32_autocast_ops(shape) else _residual_bytes(shape)) * arch.hidden_size
    else:
        final_norm = 4 * arch.hidden_size
    head = final_norm + (ab * arch.hidden_size if head_train else 0)
    # gradient buffers alive while one layer runs backward (the MLP's: ~3 x i, 2 x h)
    transient = ab * (3 * arch.intermediate_size + 2 * arch.hidden_size)
    const = _layer_constant_bytes(arch, shape)
    if shape.gradient_checkpointing:
        kept = tokens * (layers * _residual_bytes(shape) * arch.hidden_size + head)
        working = tokens * (biggest + transient) + const
    else:
        if shape.method == "freeze":
            # frozen layers below the trained ones need no graph: their input needs no grad
            per_tok = n_train * train_layer
        elif shape.method == "full":
            per_tok = layers * train_layer
        else:
            per_tok = layers * frozen_layer
        kept = tokens * (per_tok + head) + layers * const
        working = tokens * transient
    logits = tokens * _logit_bytes_per_token(arch, shape)
    return float(kept), float(logits), float(working)


def _state_bytes(shape: TrainingShape, param_bytes: int) -> float:
    kind = _optimizer_kind(shape.optimizer)
    if kind in ("adamw_foreach", "adamw_fused"):
        return 2.0 * param_bytes  # m and v in the parameter's dtype (zeros_like)
    if kind == "bnb8":
        return BNB_8BIT_STATE_BYTES
    if kind == "bnb32":
        return 8.0  # bitsandbytes 32-bit states are fp32 whatever the parameter dtype
    if kind == "adafactor":
        return 0.0  # set by the caller: factored second moment, see _optimizer_bytes
    return 0.0  # plain SGD (HF optim="sgd" has no momentum unless optim_args sets it)


def _optimizer_bytes(
    arch: Architecture, shape: TrainingShape, trainable: float, param_bytes: int
) -> float:
    if _optimizer_kind(shape.optimizer) == "adafactor":
        # Shazeer & Stern 2018: row + column second-moment factors, no first moment by default:
        # (d_in + d_out) per d_in x d_out matrix, ~2/h per parameter, in the parameter dtype.
        return trainable * param_bytes * 2.0 / arch.hidden_size
    return trainable * _state_bytes(shape, param_bytes)


def _bnb_embedding_state_extra(counts: ParamCounts, shape: TrainingShape) -> float:
    """Extra optimizer bytes when the Trainer keeps the embedding's 8-bit states in fp32.

    Only full fine-tuning trains the embedding, and only without ZeRO/FSDP does the override
    find the module's own parameter (ZeRO and FSDP flatten parameters first).
    """
    if not (
        shape.bnb_embedding_fp32_state
        and _optimizer_kind(shape.optimizer) == "bnb8"
        and shape.method == "full"
        and shape.distributed in ("none", "ddp")
    ):
        return 0.0
    embedding = min(float(shape.trainable_params), float(counts.embedding))
    return embedding * (BNB_32BIT_STATE_BYTES - BNB_8BIT_STATE_BYTES)


# ---------------------------------------------------------------------------- memory


def estimate_memory(
    arch: Architecture, counts: ParamCounts, shape: TrainingShape
) -> MemoryEstimate:
    """Per-GPU peak memory of one training step, split into the contract's six parts."""
    shape.validate()
    notes: list[str] = []
    T = float(shape.trainable_params)
    P = float(counts.total)
    N = shape.world_size
    nodes = max(1, -(-shape.world_size // shape.gpus_per_node))
    wb = 4 if shape.precision == "fp32" else 2
    peft = shape.method in PEFT_METHODS
    W = _weight_bytes(arch, counts, shape)
    offload = shape.cpu_offload
    dist = shape.distributed
    if offload != "none" and dist in ("none", "ddp"):
        notes.append(f"cpu_offload={offload} ignored: offloading needs DeepSpeed ZeRO or FSDP")
        offload = "none"
    if dist == "fsdp" and offload == "optimizer":
        notes.append("FSDP offloads parameters, gradients and optimizer together (CPUOffload)")
        offload = "all"

    # dtype of the trainable parameters as the optimizer sees them. FSDP through accelerate
    # upcasts them to fp32 unless full_master_weights_fp32 is explicitly False (torchtune).
    fsdp_pure = dist == "fsdp" and shape.full_master_weights_fp32 is False and not peft
    if fsdp_pure:
        tp_bytes = wb
    elif (
        dist in ("fsdp", "deepspeed_zero2", "deepspeed_zero3") or peft or shape.master_weights_fp32
    ):
        tp_bytes = 4  # fp32 masters (DeepSpeed/FSDP), fp32 adapters (peft), AMP masters
    else:
        tp_bytes = wb  # pure bf16/fp16 or fp32
    opt_full = _optimizer_bytes(arch, shape, T, tp_bytes) + _bnb_embedding_state_extra(
        counts, shape
    )
    kind = _optimizer_kind(shape.optimizer)

    # extra 16-bit copies made by autocast for fp32 weights: every weight whose matmul input
    # needs a gradient is cast and the cast is saved for backward (HF docs: 4 + 2 B/param)
    autocast_copies = 0.0
    if shape.master_weights_fp32 and shape.precision != "fp32":
        autocast_copies = 2.0 * (P if shape.method == "full" else T)
    upcast = _is_quantized(shape) and shape.kbit_upcast and shape.precision != "fp32"
    if upcast and shape.task == "causal_lm":  # the fp32 lm_head is cast to 16 bit for its matmul
        autocast_copies += 2.0 * arch.vocab_size * arch.hidden_size

    kept, logits, working = _activation_terms(arch, counts, shape)
    live_unit = 0.0
    cpu_offload_bytes = 0.0
    overhead = CUDA_CONTEXT_GB * GB

    if dist in ("none", "ddp"):
        weights = W + autocast_copies
        if peft:
            train_grads = T * 4 * 2  # fp32 adapter + fp32 gradient
        else:
            train_grads = T * tp_bytes  # gradients in the parameter dtype
        if N > 1:
            # DDP's bucket buffers are a second copy of the gradients
            # (gradient_as_bucket_view=False, the default)
            train_grads += T * (4 if peft else tp_bytes)
        optimizer = opt_full
        step_transient = T * tp_bytes if kind == "adamw_foreach" else 0.0
    elif dist == "deepspeed_zero2":
        # DeepSpeed estimate_zero2_model_states_mem_needs: 4P + 16P/N (no offload), 2P (offload)
        weights = (W if peft else wb * P) + (2.0 * T if peft else 0.0)
        if offload == "none":
            train_grads = 2.0 * T + 8.0 * T / N  # 16-bit grads + fp32 master and grad partition
            optimizer = opt_full / N
        else:
            train_grads = 0.0
            optimizer = 0.0
            cpu_offload_bytes = T * max(4 * N, 16) * DS_CPU_BUFFER_FACTOR
        step_transient = 0.0
        overhead += DEEPSPEED_BUCKET_GB * GB
    elif dist == "deepspeed_zero3":
        # DeepSpeed estimate_zero3_model_states_mem_needs: 18P/N + 4*largest_layer (no offload)
        LL = float(counts.largest_layer)
        sixteen = W if peft else wb * P
        live_unit = 2.0 * LL
        if offload == "none":
            weights = sixteen / N + (2.0 * T / N if peft else 0.0) + live_unit
            train_grads = 8.0 * T / N + 2.0 * LL
            optimizer = opt_full / N
        elif offload == "optimizer":
            weights = sixteen / N + (2.0 * T / N if peft else 0.0) + live_unit
            train_grads = 2.0 * LL
            optimizer = 0.0
            cpu_offload_bytes = T * 16 / nodes * DS_CPU_BUFFER_FACTOR
        else:
            weights = live_unit
            train_grads = 2.0 * LL
            optimizer = 0.0
            cpu_offload_bytes = (T * 18 + (sixteen if peft else 0.0)) / nodes * DS_CPU_BUFFER_FACTOR
        step_transient = 0.0
        overhead += DEEPSPEED_BUCKET_GB * GB
    else:  # fsdp FULL_SHARD; accelerate upcasts trainable flat parameters to fp32
        unit_bytes = W / P if (_is_quantized(shape) and P) else float(wb)
        root = wb * (counts.embedding + counts.lm_head)  # root unit stays gathered
        layer = float(counts.per_layer) * unit_bytes
        live_unit = root + 2.0 * layer  # the running layer and the prefetched one
        live_grads = 0.0 if peft else wb * counts.per_layer  # its unsharded 16-bit grads
        frozen = W if peft else 0.0
        if offload == "none":
            weights = frozen / N + live_unit
            train_grads = 2.0 * tp_bytes * T / N + live_grads  # sharded params + grads
            optimizer = opt_full / N
        else:
            weights = live_unit
            train_grads = live_grads
            optimizer = 0.0
            cpu_offload_bytes = (2.0 * tp_bytes * T + opt_full + frozen) / nodes
        step_transient = T / N * tp_bytes if kind == "adamw_foreach" and offload == "none" else 0.0

    # Phases: forward/backward (activations + logits + one layer's working set) versus the
    # optimizer step (foreach AdamW allocates one state-sized temporary); they do not overlap.
    fb = kept + max(logits, working)
    activations = kept + max(0.0, working - logits)
    if step_transient > fb:
        optimizer += step_transient - fb
    peak = weights + train_grads + optimizer + activations + logits + overhead

    # host memory: loading (page cache / per-process CPU copy) + offloaded state
    ckpt_bytes = P * _checkpoint_dtype_bytes(arch)
    if _is_quantized(shape):
        loading = shape.gpus_per_node * min(HF_SHARD_GB * GB, ckpt_bytes) + ckpt_bytes
    elif dist in ("fsdp", "deepspeed_zero3"):
        loading = ckpt_bytes + min(HF_SHARD_GB * GB, ckpt_bytes) * shape.gpus_per_node
    else:
        # the generated scripts load on the CPU, then the Trainer moves the model to its GPU
        loading = shape.gpus_per_node * W + ckpt_bytes
    cpu_ram = max(loading, cpu_offload_bytes + ckpt_bytes)
    if offload != "none":
        notes.append(
            f"CPU offload ({offload}) keeps optimizer state{' and parameters' if offload == 'all' else ''} "
            "in host memory (DeepSpeed estimator, 1.5x buffer factor)"
        )
    return MemoryEstimate(
        weights_gb=weights / GB,
        trainable_and_grads_gb=train_grads / GB,
        optimizer_gb=optimizer / GB,
        activations_gb=activations / GB,
        logits_gb=logits / GB,
        overhead_gb=overhead / GB,
        peak_gb=peak / GB,
        cpu_ram_gb=cpu_ram / GB,
        assumptions=tuple(named_assumptions(shape) + notes),
    )


def estimate_eval_memory(
    arch: Architecture, counts: ParamCounts, shape: TrainingShape, eval_batch_size: int
) -> float:
    """Per-GPU peak (GB, context included) of an evaluation pass during training.

    Nothing is kept for backward: the training peak's model states (weights, trainable
    parameters, gradients, optimizer state and overhead, all still allocated mid-run; the
    gradients are in fact freed by ``zero_grad``, so this is an upper bound) plus, per token of
    the eval micro-batch, the residual stream and one decoder layer's tensors (the most alive
    at once under no_grad; the layer's training count is an upper bound) and the eval logits.
    """
    train = estimate_memory(arch, counts, shape)
    static = train.peak_gb - train.activations_gb - train.logits_gb
    tokens = eval_batch_size * (shape.seq_len + shape.num_virtual_tokens)
    per_token = (
        2 * _compute_bytes(shape) * arch.hidden_size
        + _layer_activation_bytes(arch, shape, trainable=False)
        + eval_logit_bytes_per_token(arch, shape)
    )
    return static + tokens * per_token / GB


def _checkpoint_dtype_bytes(arch: Architecture) -> int:
    dtype = (arch.torch_dtype or "bfloat16").replace("torch.", "")
    return 4 if dtype in ("float32", "fp32") else 2


def named_assumptions(shape: TrainingShape) -> list[str]:
    """The assumptions behind an estimate for this shape, as sentences for resources.md."""
    out = list(ASSUMPTIONS)
    if shape.method in ("full", "freeze"):
        if shape.master_weights_fp32:
            out.append(
                "full fine-tuning in mixed precision with fp32 master weights: 4 B weights + 2 B "
                "autocast copies + 4 B gradients + optimizer state (HF docs: 18 B/param with AdamW)"
            )
        elif shape.distributed in ("fsdp", "deepspeed_zero2", "deepspeed_zero3"):
            out.append(
                "DeepSpeed/FSDP keep fp32 master weights, fp32 gradients and fp32 optimizer state "
                "of the trainable parameters, sharded as the ZeRO stage says"
            )
        else:
            out.append(
                f"full fine-tuning in pure {shape.precision}: weights and gradients in "
                f"{shape.precision}; torch AdamW keeps m and v in the parameter dtype "
                "(2 + 2 + 4 = 8 B/param; 8-bit AdamW: 2 + 2 + 2)"
            )
    if shape.method in PEFT_METHODS:
        out.append(
            "adapter weights, gradients and AdamW state are fp32 (peft autocast_adapter_dtype): "
            "16 B per trainable parameter with AdamW"
        )
    if _is_quantized(shape) and shape.quant_bits == 4:
        out.append(
            "NF4 weights: 4 bits + block constants = "
            f"{NF4_DQ_BYTES if shape.double_quant else NF4_BYTES:.4f} B per quantized Linear weight "
            f"({'with' if shape.double_quant else 'without'} double quantization, QLoRA paper)"
        )
        if shape.kbit_upcast:
            out.append(
                "prepare_model_for_kbit_training upcasts embeddings, lm_head and norms to fp32"
            )
    if shape.method in ADAPTER_METHODS and shape.target_modules is None:
        out.append("adapters assumed on every Linear layer (all-linear) for activation memory")
    kind = _optimizer_kind(shape.optimizer)
    if kind == "adamw_foreach":
        out.append(
            "adamw_torch (foreach) allocates one state-sized temporary during the optimizer step"
        )
    if kind == "bnb8":
        out.append(
            "8-bit optimizer state: 2 x (1 + 4/256) B per trainable parameter (bitsandbytes)"
        )
        if shape.method == "full" and shape.bnb_embedding_fp32_state:
            out.append(
                "the Trainer keeps the embedding's optimizer state in fp32 under 8-bit optimizers "
                "(register_module_override(optim_bits=32)): 8 B per embedding parameter"
            )
    if not shape.autocast:
        out.append(
            "pure 16-bit training without autocast (LayerNorm and GELU stay in 16 bit, "
            "16-bit adapters)"
        )
    if shape.distributed == "deepspeed_zero3":
        out.append(
            "ZeRO-3 keeps the largest layer's 16-bit parameters and gradients gathered "
            "(DeepSpeed estimator: 4 x largest_layer bytes)"
        )
    if shape.distributed == "fsdp":
        out.append(
            "FSDP FULL_SHARD: fp32 sharded trainable parameters (accelerate upcast), the root "
            "unit (embeddings, lm_head) and two decoder layers gathered in 16 bit"
        )
    if shape.loss_impl == "chunked":
        out.append("chunked cross-entropy: the full fp32 logits are never materialised")
    return out


# ---------------------------------------------------------------------------- time


def _active_matmul_params(arch: Architecture, counts: ParamCounts, shape: TrainingShape) -> float:
    """Parameters taking part in a token's matmuls: no embedding lookup, MoE top-k only."""
    P = float(counts.total - counts.embedding - counts.lm_head)
    if shape.task == "causal_lm":
        P += arch.vocab_size * arch.hidden_size  # the lm_head matmul runs even when tied
    else:
        P += counts.lm_head
    if arch.num_experts and counts.experts:
        k = max(1, arch.num_experts_per_tok)
        P -= counts.experts * (1 - k / arch.num_experts)
    return P


def flops_per_token(arch: Architecture, counts: ParamCounts, shape: TrainingShape) -> float:
    """Executed FLOPs per training token, recomputation included (section 1.7).

    Matmuls: forward 2P; backward 2P for activation gradients plus 2 x (trained weights) for
    weight gradients, so full FT 6P and adapters ~4P + 6 x trainable. Attention (PaLM
    appendix B, Megatron): 12 x layers x heads x head_dim x seq per token for a training step,
    4 x ... of it in the forward. Gradient checkpointing runs each layer's forward again.
    """
    P = _active_matmul_params(arch, counts, shape)
    T = float(shape.trainable_params)
    s = shape.seq_len + shape.num_virtual_tokens
    layers = arch.num_layers
    attn_fwd = 4.0 * layers * arch.num_attention_heads * arch.head_dim * s
    if shape.method == "full":
        f = 6.0 * P + 3.0 * attn_fwd
    elif shape.method == "freeze":
        frac = _n_trainable_layers(counts, shape, arch) / max(1, layers)
        f = 2.0 * P + 4.0 * T + attn_fwd * (1 + 2 * frac)
    else:
        f = 4.0 * P + 6.0 * T + 3.0 * attn_fwd
    if shape.gradient_checkpointing:
        f += 2.0 * float(counts.per_layer * layers) + attn_fwd
    return f


def _utilization(shape: TrainingShape) -> tuple[float, str]:
    nodes = max(1, -(-shape.world_size // shape.gpus_per_node))
    if shape.cpu_offload != "none" and shape.distributed in (
        "fsdp",
        "deepspeed_zero2",
        "deepspeed_zero3",
    ):
        u = UTIL_CPU_OFFLOAD[shape.cpu_offload]
        why = f"{u:.0%} of dense peak with CPU offload ({shape.cpu_offload}); ESTIMATION 1.7: 5-25%"
    elif nodes > 1:
        u = UTIL_MULTI_NODE
        why = f"{u:.0%} of dense peak across {nodes} nodes (fast interconnect assumed; Ethernet can fall below 10%)"
    else:
        u = UTIL_SINGLE_NODE
        why = f"{u:.0%} of dense peak (single node, HF Trainer, SDPA/FA2; ESTIMATION 1.7: 25-45%)"
    return u, why


def _peak_tflops(gpu: Any, precision: str) -> float:
    if hasattr(gpu, "peak_tflops"):
        try:
            value = float(gpu.peak_tflops(precision))
        except Exception:  # noqa: BLE001 - e.g. bf16 on a card without it: use fp16
            value = 0.0
        if value > 0:
            return value
    if precision == "bf16" and getattr(gpu, "tflops_bf16", None):
        return float(gpu.tflops_bf16)
    if precision == "fp32" and getattr(gpu, "tflops_fp32", 0):
        return float(gpu.tflops_fp32)
    return float(gpu.tflops_fp16)


def eval_flops_per_token(arch: Architecture, counts: ParamCounts, shape: TrainingShape) -> float:
    """Executed FLOPs per evaluated token: one forward pass (2P and the attention forward)."""
    P = _active_matmul_params(arch, counts, shape)
    s = shape.seq_len + shape.num_virtual_tokens
    return 2.0 * P + 4.0 * arch.num_layers * arch.num_attention_heads * arch.head_dim * s


def estimate_time(
    arch: Architecture,
    counts: ParamCounts,
    shape: TrainingShape,
    gpu: Any,
    *,
    tokens_per_epoch: int,
    epochs: float,
    useful_fraction: float = 1.0,
    eval_tokens: float = 0.0,
    checkpoint_bytes: float = 0.0,
    collation: str = "packing",
) -> TimeEstimate:
    """Wall time from FLOPs, tokens and an assumed utilization of dense peak.

    ``tokens_per_epoch`` counts useful (non-padding) tokens; the GPU processes
    ``tokens / useful_fraction`` of them, padding included (the plan's collation).
    ``eval_tokens`` (processed, over the whole run) cost one forward pass each and
    ``checkpoint_bytes`` (written over the whole run) are written at
    ``CHECKPOINT_WRITE_BYTES_PER_S``; both pause training.
    """
    shape.validate()
    if not 0 < useful_fraction <= 1:
        raise ValueError(f"useful_fraction must be in (0, 1], got {useful_fraction}")
    total_tokens = round(tokens_per_epoch * epochs)
    processed = round(total_tokens / useful_fraction)
    fpt = flops_per_token(arch, counts, shape)
    eval_fpt = eval_flops_per_token(arch, counts, shape)
    flops = fpt * processed
    util, why = _utilization(shape)
    slow = QLORA_DEQUANT_SLOWDOWN if (_is_quantized(shape) and shape.quant_bits == 4) else 1.0
    peak = _peak_tflops(gpu, shape.precision) * 1e12
    effective = util / slow
    rate = shape.world_size * peak * effective  # executed FLOP/s, all GPUs
    tokens_per_second = rate / fpt
    train_s = flops / rate if rate else 0.0
    eval_s = eval_tokens * eval_fpt / rate if rate else 0.0
    save_s = checkpoint_bytes / CHECKPOINT_WRITE_BYTES_PER_S
    hours = (train_s + eval_s + save_s) / 3600 + WALLCLOCK_FIXED_HOURS
    assumptions = [
        f"{fpt / 1e9:.1f} GFLOPs per token ({_flops_rule(shape)}, attention included)",
        f"utilization {why}",
        f"dense peak {peak / 1e12:g} TFLOPS per GPU ({getattr(gpu, 'display', getattr(gpu, 'name', 'GPU'))}, {shape.precision})",
        (
            f"collation {collation}: {useful_fraction:.2f} of the processed tokens are real "
            f"({processed:,} processed for {total_tokens:,} trained)"
        ),
        (
            f"evaluation: {eval_tokens:,.0f} tokens at one forward pass each "
            f"({eval_fpt / 1e9:.1f} GFLOPs per token), {eval_s / 3600:.2f} h"
        ),
        (
            f"checkpoints: {checkpoint_bytes / GB:.1f} GB written at "
            f"{CHECKPOINT_WRITE_BYTES_PER_S / 2**20:,.0f} MiB/s (AWS EBS gp3 maximum; local NVMe "
            f"is faster), {save_s / 3600:.2f} h"
        ),
        f"+{WALLCLOCK_FIXED_HOURS * 60:.0f} min for loading the model and the data",
    ]
    if slow != 1.0:
        assumptions.append(
            f"QLoRA dequantization: steps {slow:g}x slower than LoRA (ESTIMATION 1.7 table: 1.24-2.5x, default 1.3-1.6x)"
        )
    if shape.loss_impl == "liger":
        assumptions.append(
            "Liger kernels: the same FLOPs; their measured speed-up (README: +20% on Llama-3-8B, "
            "FSDP on 8xA100) is not counted until benchmarks/gpu_calibration.py measures it here"
        )
    return TimeEstimate(
        hours=hours,
        tokens_per_epoch=int(tokens_per_epoch),
        total_tokens=total_tokens,
        flops=flops,
        tokens_per_second=tokens_per_second,
        mfu=effective,
        assumptions=assumptions,
        processed_tokens=processed,
        useful_fraction=useful_fraction,
        train_hours=train_s / 3600,
        eval_hours=eval_s / 3600,
        checkpoint_hours=save_s / 3600,
    )


def _flops_rule(shape: TrainingShape) -> str:
    base = {"full": "6P", "freeze": "2P + 4 x trainable"}.get(shape.method, "4P + 6 x trainable")
    return base + (" + 2P recomputation" if shape.gradient_checkpointing else "")


# ---------------------------------------------------------------------------- storage


def estimate_storage(
    arch: Architecture,
    counts: ParamCounts,
    shape: TrainingShape,
    *,
    save_total_limit: int,
    dataset_bytes: int | None,
    tokens_per_epoch: int,
) -> StorageEstimate:
    """Disk for the base download, retained checkpoints, outputs and the dataset (section 1.8)."""
    shape.validate()
    P = float(counts.total)
    T = float(shape.trainable_params)
    peft = shape.method in PEFT_METHODS
    ckpt_dtype = _checkpoint_dtype_bytes(arch)
    base = P * ckpt_dtype
    notes = [f"base model downloaded in its hub dtype: {ckpt_dtype} B/param"]
    kind = _optimizer_kind(shape.optimizer)
    if shape.distributed in ("deepspeed_zero2", "deepspeed_zero3") and not peft:
        per_ckpt = P * (12 + 2)  # fp32 master + m + v, plus the 16-bit module
        notes.append(
            "DeepSpeed checkpoints: fp32 master + m + v (12 B/param) + 16-bit weights (2 B)"
        )
        final = P * 2
    elif peft:
        state = BNB_8BIT_STATE_BYTES if kind == "bnb8" else (0.0 if kind == "sgd" else 8.0)
        per_ckpt = T * (4 + state)
        final = T * 4
        notes.append(
            "adapter checkpoints: fp32 adapter (4 B) + optimizer state per trainable parameter"
        )
    else:
        wbytes = 4 if (shape.precision == "fp32" or shape.master_weights_fp32) else 2
        tp = 4 if shape.master_weights_fp32 else wbytes
        state = _state_bytes(shape, tp) if kind != "adafactor" else 0.0
        per_ckpt = P * wbytes + T * state + _bnb_embedding_state_extra(counts, shape)
        final = P * wbytes
        notes.append(
            f"full checkpoints: weights ({wbytes} B/param) + optimizer state ({state:g} B per trained param)"
        )
    keep = max(1, int(save_total_limit))
    checkpoints = per_ckpt * keep
    notes.append(f"save_total_limit={keep} checkpoints kept")
    merged = P * 2 if peft else 0.0
    if peft:
        notes.append("merged export: base + adapter merged in bf16 (2 B/param)")
    raw = (
        float(dataset_bytes)
        if dataset_bytes is not None
        else tokens_per_epoch * RAW_BYTES_PER_TOKEN
    )
    dataset = raw + tokens_per_epoch * TOKENIZED_BYTES_PER_TOKEN
    notes.append(
        f"dataset: raw {'file size' if dataset_bytes is not None else f'~{RAW_BYTES_PER_TOKEN} B/token'} + "
        f"tokenized cache ~{TOKENIZED_BYTES_PER_TOKEN} B/token (int32 ids, int8 mask, int64 labels)"
    )
    total = base + checkpoints + final + merged + dataset
    return StorageEstimate(
        base_download_gb=base / GB,
        checkpoints_gb=checkpoints / GB,
        final_output_gb=final / GB,
        merged_export_gb=merged / GB,
        dataset_cache_gb=dataset / GB,
        total_gb=total / GB,
        assumptions=notes,
    )


def estimate_cost(hours: float, price_usd_hour: float, num_gpus: int) -> float:
    """GPU cost: hours x price per GPU-hour x GPUs."""
    return float(hours) * float(price_usd_hour) * int(num_gpus)


def checkpoint_write_bytes(
    arch: Architecture, counts: ParamCounts, shape: TrainingShape, *, checkpoints: int
) -> float:
    """Bytes written over a run: ``checkpoints`` resumable checkpoints (weights or adapter plus
    optimizer state, as estimate_storage counts one) and the final save of the result."""
    one = estimate_storage(
        arch, counts, shape, save_total_limit=1, dataset_bytes=0, tokens_per_epoch=0
    )
    return (checkpoints * one.checkpoints_gb + one.final_output_gb) * GB
