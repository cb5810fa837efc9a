"""Hyperparameters settled before method selection: precision, sequence length, epochs,
packing, prompt format, batch target; and the per-method values (LoRA settings, learning rate,
optimizer), each with the reason behind it (the seed's guide and the literature).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from finetune_gen.errors import SpecError
from finetune_gen.knowledge.params import adapts_fused_experts, resolve_target_modules
from finetune_gen.knowledge.prompts import FORMAT_OVERHEAD_TOKENS, PROMPT_FORMATS
from finetune_gen.models.plan import (
    DatasetPlan,
    Decision,
    Fallback,
    HardwarePlan,
    LoraPlan,
)
from finetune_gen.variants.methods import LOW_RANK_METHODS
from finetune_gen.variants.tasks import TASKS

if TYPE_CHECKING:
    from finetune_gen.planning.planner import Planner

LORA_LIKE = LOW_RANK_METHODS
DEFAULT_SEQ_LEN_OTHER = 2048
DEFAULT_NUM_EXAMPLES = 10_000
DEFAULT_TOKENS_PER_EXAMPLE = 350
LORA_TARGETS_WHY = (
    "every linear layer of the blocks: adapters on all of them are what matches 16-bit full "
    "fine-tuning, attention-only adapters fall short (Dettmers et al. 2023, QLoRA, section 4); "
    "the same rule for LoRA and QLoRA"
)


@dataclass
class _Draft:
    """The mutable working state of one planning attempt."""

    method: str
    micro_batch: int
    accumulation: int
    gradient_checkpointing: bool
    optimizer: str
    distributed: str
    cpu_offload: str
    # Full fine-tuning: fp32 master weights under bf16/fp16 autocast; False is pure bf16.
    fp32_master_weights: bool = True
    decisions: dict[str, Decision] = field(default_factory=dict)
    fallbacks: list[Fallback] = field(default_factory=list)


@dataclass
class Context:
    """Values settled before method selection: hardware, precision, data-driven hyperparameters."""

    planner: Planner
    hardware: HardwarePlan
    precision: str
    seq_len: int
    epochs: float
    packing: bool
    prompt_format: str
    target_effective_batch: int
    virtual_tokens: int
    freeze: int
    lr_scheduler: str
    warmup_ratio: float
    max_grad_norm: float
    save_total_limit: int
    decisions: dict[str, Decision]
    batch_why: str = ""
    batch_source: str = "planner"
    gc_why: str = ""
    gc_source: str = "planner"
    optimizer_source: str = "planner"
    lr_source: str = "planner"

    @property
    def world_size(self) -> int:
        return self.hardware.gpus * self.hardware.nodes

    @property
    def gpus_per_node(self) -> int:
        return self.hardware.gpus

    @property
    def usable(self) -> float:
        return self.hardware.usable_vram_gb

    @classmethod
    def build(cls, planner: Planner, hw: HardwarePlan, data: DatasetPlan) -> "Context":
        spec, tc, arch = planner.spec, planner.tc, planner.arch
        decisions: dict[str, Decision] = {}

        def put(setting: str, value: Any, why: str, source: str = "planner") -> Any:
            decisions[setting] = Decision(setting=setting, value=value, why=why, source=source)
            return value

        task = spec.task_type.value
        # Precision: bf16 on Ampere and newer; fp16 with loss scaling on T4/V100.
        if tc.precision is not None:
            if tc.precision == "bf16" and not hw.supports_bf16:
                raise SpecError(
                    f"training_config.precision: bf16 is not supported on {hw.gpu_display} (pre-Ampere)",
                    problems=[
                        "training_config.precision: use fp16 (with loss scaling) or a GPU with bf16 support"
                    ],
                )
            precision = put("precision", tc.precision, "set in the spec", "spec")
        elif hw.supports_bf16:
            precision = put(
                "precision", "bf16", f"{hw.gpu_display} supports bf16: fp32 range, no loss scaling"
            )
        else:
            precision = put(
                "precision",
                "fp16",
                f"{hw.gpu_display} has no bf16; fp16 with dynamic loss scaling (watch for NaN losses)",
            )
        if precision == "fp16" and hw.gpu_type.startswith("v100"):
            planner.warn(
                "fp16 on V100 is prone to overflow",
                "if the loss turns NaN, lower the learning rate 10x (the seed's instability ladder)",
                "training_config.precision",
            )
        # Prompt format: the model's chat template when it has one (the task entry says which).
        with_template, without = TASKS[task].prompt_formats
        prompt_format = with_template if arch.has_chat_template else without
        put(
            "prompt_format",
            prompt_format,
            PROMPT_FORMATS[prompt_format].why.format(task=task),
        )
        # Sequence length: a high percentile of the data when at hand, capped by the context.
        context = arch.max_position_embeddings
        if tc.max_seq_length is not None:
            if tc.max_seq_length > context:
                raise SpecError(
                    "training_config.max_seq_length exceeds the model's context",
                    problems=[
                        f"training_config.max_seq_length: {tc.max_seq_length} > {context} "
                        f"(max_position_embeddings of {spec.base_model})"
                    ],
                )
            seq_len = put("max_seq_length", tc.max_seq_length, "set in the spec", "spec")
        elif planner.stats is not None and task != "generation":
            p99 = planner.stats.percentile_tokens(0.99)
            overhead = FORMAT_OVERHEAD_TOKENS[prompt_format]
            rounded = min(context, max(128, int(math.ceil((p99 + overhead) * 1.1 / 64) * 64)))
            seq_len = put(
                "max_seq_length",
                rounded,
                f"99th percentile of the data's {planner.stats.lengths_note} ({p99} tokens, "
                f"{planner.stats.lengths_unit}) "
                f"+ {overhead} for the prompt format, + 10%, rounded up to 64, capped at the "
                f"model's {context}-token context",
            )
        else:
            default = min(context, TASKS[task].default_seq_len or DEFAULT_SEQ_LEN_OTHER)
            seq_len = put(
                "max_seq_length",
                default,
                ("packed block length" if task == "generation" else "the data is not at hand")
                + f": a {default}-token default, capped at the model's context",
            )
        # Epochs by dataset size (the seed: 10K-100K sweet spot, diminishing past 500K).
        n = data.num_examples
        if tc.epochs is not None:
            epochs = put("epochs", tc.epochs, "set in the spec", "spec")
        elif n < 1_000:
            epochs = put(
                "epochs",
                5,
                f"{n} rows is small: more passes; watch eval_loss for overfitting "
                "(training_config.early_stopping_patience stops it)",
            )
        elif n <= 100_000:
            epochs = put(
                "epochs", 3, f"{n} rows: 3 passes, the common choice in the seed's 10K-100K range"
            )
        elif n <= 500_000:
            epochs = put("epochs", 2, f"{n} rows: past 100K, fewer passes are enough")
        else:
            epochs = put("epochs", 1, f"{n} rows: past 500K returns diminish; one pass")
        # Packing only for raw-text generation, where sequences have no turn structure.
        if tc.packing is not None:
            packing = tc.packing
            if packing and task != "generation":
                planner.warn(
                    "packing is only implemented for task_type generation",
                    f"{task} examples are padded per batch instead",
                    "training_config.packing",
                )
                packing = False
            put("packing", packing, "set in the spec", "spec")
        else:
            packing = put(
                "packing",
                task == "generation",
                (
                    "raw text is concatenated into full blocks (no padding waste)"
                    if task == "generation"
                    else "examples are padded per batch so prompt masking stays exact"
                ),
            )
        # Effective batch: sequences per optimizer step.
        if tc.batch_size is not None and tc.gradient_accumulation_steps is not None:
            target = tc.batch_size * tc.gradient_accumulation_steps * hw.gpus * hw.nodes
        elif n < 2_000:
            target = 16
        elif n <= 100_000:
            target = 32
        else:
            target = 64
        if tc.freeze_trainable_layers and tc.freeze_trainable_layers > arch.num_layers:
            raise SpecError(
                f"training_config.freeze_trainable_layers: {tc.freeze_trainable_layers} is more "
                f"than the model's {arch.num_layers} layers; use at most {arch.num_layers} "
                "(or method: full to train them all)"
            )
        ctx = cls(
            planner=planner,
            hardware=hw,
            precision=precision,
            seq_len=seq_len,
            epochs=epochs,
            packing=packing,
            prompt_format=prompt_format,
            target_effective_batch=target,
            virtual_tokens=tc.num_virtual_tokens or 20,
            freeze=tc.freeze_trainable_layers or max(1, arch.num_layers // 4),
            lr_scheduler=tc.lr_scheduler or "cosine",
            warmup_ratio=tc.warmup_ratio if tc.warmup_ratio is not None else 0.03,
            max_grad_norm=tc.max_grad_norm or 1.0,
            save_total_limit=tc.save_total_limit or 2,
            decisions=decisions,
        )
        put(
            "lr_scheduler",
            ctx.lr_scheduler,
            "set in the spec" if tc.lr_scheduler else "cosine decay after warmup",
        )
        put(
            "warmup_ratio",
            ctx.warmup_ratio,
            (
                "set in the spec"
                if tc.warmup_ratio is not None
                else "3% of steps (the seed's instability ladder)"
            ),
        )
        put(
            "max_grad_norm",
            ctx.max_grad_norm,
            "set in the spec" if tc.max_grad_norm else "gradient clipping at 1.0 (the seed)",
        )
        return ctx

    # -------------------------------------------------------- per-method values

    def lora_for(self, method: str) -> LoraPlan | None:
        if method not in LORA_LIKE:
            return None
        planner, spec_lora = self.planner, self.planner.tc.lora
        n = (
            planner.stats.rows
            if planner.stats
            else (planner.spec.dataset.num_examples or DEFAULT_NUM_EXAMPLES)
        )
        task = planner.spec.task_type.value
        if spec_lora and spec_lora.r:
            r, r_why = spec_lora.r, "set in the spec"
        elif task == "classification":
            r, r_why = 8, "a simple single-domain task: rank 4-8 (the seed's guide)"
        elif task == "generation":
            r, r_why = (
                64,
                "domain adaptation on raw text is a large change: rank 64 (the seed: 64-128)",
            )
        elif n > 100_000:
            r, r_why = 32, f"general instruction tuning on {n} rows: the top of the 16-32 range"
        else:
            r, r_why = 16, "general instruction tuning: rank 16, the seed's recommended start"
        alpha = spec_lora.alpha if spec_lora and spec_lora.alpha else 2 * r
        if spec_lora and spec_lora.dropout is not None:
            dropout = spec_lora.dropout
        else:
            dropout = 0.05 if n < 10_000 else 0.0
        if spec_lora and spec_lora.target_modules is not None:
            targets = resolve_target_modules(planner.arch, spec_lora.target_modules)
            t_why = "set in the spec"
        else:
            # One rule for every LoRA-family method, so full > LoRA > QLoRA holds in quality.
            targets, t_why = "all-linear", LORA_TARGETS_WHY
        if dropout and adapts_fused_experts(planner.arch, method, targets):
            dropout = 0.0  # peft cannot apply dropout to fused MoE expert tensors (Mixtral in transformers 5)
            self.decisions["lora.dropout"] = Decision(
                setting="lora.dropout",
                value=0.0,
                why="fused MoE experts are adapted: peft requires dropout 0",
            )
        self.decisions.setdefault("lora.r", Decision(setting="lora.r", value=r, why=r_why))
        self.decisions.setdefault(
            "lora.alpha",
            Decision(setting="lora.alpha", value=alpha, why="alpha = 2 x rank (the seed)"),
        )
        self.decisions.setdefault(
            "lora.dropout",
            Decision(
                setting="lora.dropout",
                value=dropout,
                why=(
                    "light regularization for under 10K rows"
                    if dropout
                    else "no dropout, the most common choice"
                ),
            ),
        )
        self.decisions.setdefault(
            "lora.target_modules", Decision(setting="lora.target_modules", value=targets, why=t_why)
        )
        return LoraPlan(
            r=r, alpha=alpha, dropout=dropout, target_modules=targets, use_dora=method == "dora"
        )

    def learning_rate_for(self, method: str) -> float:
        if self.planner.tc.learning_rate is not None:
            self.lr_source = "spec"
            return self.planner.tc.learning_rate
        billions = self.planner.counts.total / 1e9
        if method in ("full", "freeze"):
            return 5e-5 if billions < 1 else 2e-5 if billions <= 13 else 1e-5
        if method == "prompt_tuning":
            return 3e-2
        if method == "prefix_tuning":
            return 1e-2
        if method == "ia3":
            return 3e-3
        return 2e-4 if billions < 20 else 1e-4

    def lr_why(self, method: str) -> str:
        if self.planner.tc.learning_rate is not None:
            return "set in the spec"
        return {
            "full": "full fine-tuning: 1e-5 to 5e-5, lower for bigger models",
            "freeze": "partial fine-tuning: as for full fine-tuning",
            "prompt_tuning": "prompt tuning trains few parameters and needs a high rate (PEFT examples: 3e-2)",
            "prefix_tuning": "prefix tuning: 1e-2 (PEFT examples)",
            "ia3": "IA3: 3e-3 (the IA3 paper)",
        }.get(method, "LoRA-style adapters: 2e-4, 1e-4 above 20B parameters (QLoRA paper)")

    def weight_decay_for(self, method: str) -> float:
        if self.planner.tc.weight_decay is not None:
            return self.planner.tc.weight_decay
        return 0.01 if method in ("full", "freeze") else 0.0

    def optimizer_why(self, method: str) -> str:
        if self.planner.tc.optimizer is not None:
            return "set in the spec"
        if method == "qlora":
            return "paged 8-bit AdamW absorbs memory spikes (QLoRA paper)"
        return "fused AdamW: the fastest exact AdamW in PyTorch"

    def default_optimizer(self, method: str) -> str:
        if self.planner.tc.optimizer is not None:
            self.optimizer_source = "spec"
            return self.planner.tc.optimizer
        if method == "qlora":
            return "paged_adamw_8bit"
        return "adamw_torch_fused"

    def initial_draft(self, method: str) -> _Draft:
        tc = self.planner.tc
        world = self.world_size
        if tc.batch_size is not None:
            micro = tc.batch_size
            self.batch_why, self.batch_source = "set in the spec", "spec"
        else:
            micro = max(1, min(8, self.target_effective_batch // world))
            self.batch_why = f"the largest of 8, 4, 2, 1 that fits, toward an effective batch of {self.target_effective_batch}"
        if tc.gradient_accumulation_steps is not None:
            accumulation = tc.gradient_accumulation_steps
        else:
            accumulation = max(1, self.target_effective_batch // (micro * world))
        if tc.gradient_checkpointing is not None:
            gc = tc.gradient_checkpointing
            self.gc_why, self.gc_source = "set in the spec", "spec"
        else:
            gc = method == "qlora"
            self.gc_why = (
                "QLoRA runs with checkpointing (QLoRA paper)"
                if gc
                else "not needed: activations fit without it"
            )
        distributed = "ddp" if tc.distributed == "auto" else tc.distributed
        if distributed == "ddp" and world == 1:
            distributed = "none"  # one process: nothing to distribute
        return _Draft(
            method=method,
            micro_batch=micro,
            accumulation=accumulation,
            gradient_checkpointing=gc,
            optimizer=self.default_optimizer(method),
            distributed=distributed,
            cpu_offload=tc.cpu_offload or "none",
        )
