"""The resolved plan: every value the generated files use, decided once by the planner.

``Plan`` is frozen and has no unset values; templates read only the plan. Its JSON form is the
``plan`` object of the contract (section 3), extended with the reasons behind each decision.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from finetune_gen.variants.distribution import DISTRIBUTIONS
from finetune_gen.variants.methods import METHODS


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Decision(_Frozen):
    """One planner choice: the setting, its value and why (shown by `plan` and in config.yaml)."""

    setting: str
    value: Any
    why: str
    source: Literal["spec", "planner", "fallback"] = "planner"


class Fallback(_Frozen):
    """A step of the fallback ladder the planner applied because the run did not fit."""

    action: str
    setting: str
    from_: Any = Field(alias="from")
    to: Any
    why: str
    memory_before_gb: float
    memory_after_gb: float

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class LoraPlan(_Frozen):
    r: int
    alpha: int | float
    dropout: float
    target_modules: list[str] | str
    use_dora: bool = False


class QuantizationPlan(_Frozen):
    """bitsandbytes loading: 4-bit NF4 with double quantization for QLoRA."""

    bits: int
    quant_type: str
    double_quant: bool
    compute_dtype: str
    storage_dtype: str


class MixPlan(_Frozen):
    """An extra dataset sampled into training (dataset.mix): its columns as the main format's."""

    path: str
    columns: dict[str, str]
    weight: float | None = None
    rows: int | None = None
    planned_rows: int = 0  # drawn for the planned training rows (train.py recomputes it)
    available_rows: int | None = None  # counted from the file when at hand
    avg_tokens_per_example: int = 0


class AugmentPlan(_Frozen):
    system_prompts: list[str] = []
    instruction_templates: list[str] = []
    oversample: bool = False
    paraphrase: bool = False  # augment.py in the run folder
    paraphrase_model: str | None = None  # None: the base model


class DatasetPlan(_Frozen):
    path: str
    format: str
    train_split: float
    eval_split: float
    columns: dict[str, str]
    num_examples: int
    avg_tokens_per_example: int
    counted_from_file: bool
    system_message: str = "merge"  # merge | drop | error, for templates without a system role
    skip_bad_rows: bool = False
    # Dataset preparation (finetune_gen/data/split.py, rendered into train.py).
    test_split: float = 0.0
    stratify: bool = False
    remove_test_near_duplicates: bool = False
    near_dup_threshold: float = 0.4
    mix: list[MixPlan] = []
    augment: AugmentPlan = AugmentPlan()
    report: str | None = None  # the check-data report the counts came from

    @property
    def main_train_rows(self) -> int:
        return max(1, round(self.num_examples * self.train_split))

    @property
    def mix_rows(self) -> int:
        return sum(m.planned_rows for m in self.mix)

    @property
    def train_rows(self) -> int:
        """Training rows per epoch: this dataset's share plus the mixed rows."""
        return self.main_train_rows + self.mix_rows

    def train_tokens(self, max_seq_length: int | None = None) -> int:
        """Tokens per epoch (each row cut at max_seq_length when given)."""

        def cut(tokens: int) -> int:
            return min(tokens, max_seq_length) if max_seq_length else tokens

        main = self.main_train_rows * cut(self.avg_tokens_per_example)
        mixed = (
            m.planned_rows * cut(m.avg_tokens_per_example or self.avg_tokens_per_example)
            for m in self.mix
        )
        return main + sum(mixed)


class LaunchPlan(_Frozen):
    """How the run starts, read by launch.sh, accelerate.yaml, the DeepSpeed file and train.py."""

    processes: int  # world size: GPUs per node x nodes
    accelerate_type: str  # accelerate's distributed_type: NO | MULTI_GPU | FSDP | DEEPSPEED
    zero_stage: int  # DeepSpeed ZeRO stage; 0 without DeepSpeed
    deepspeed_config: str  # the DeepSpeed JSON file ("" without DeepSpeed)
    accelerate_config: str  # "accelerate.yaml" when several processes run, else ""

    @classmethod
    def for_distribution(cls, distributed: str, processes: int) -> "LaunchPlan":
        entry = DISTRIBUTIONS[distributed]
        several = processes > 1 or entry.multi_process
        return cls(
            processes=processes,
            accelerate_type=(
                entry.accelerate_type if entry.multi_process else ("MULTI_GPU" if several else "NO")
            ),
            zero_stage=entry.zero_stage,
            deepspeed_config=entry.deepspeed_config,
            accelerate_config="accelerate.yaml" if several else "",
        )


class GuardsPlan(_Frozen):
    """What the generated train.py does by itself when a run goes wrong (finetune_gen/planning/guards.py)."""

    on_nan: Literal["stop", "rollback"]
    max_rollbacks: int
    rollback_lr_factor: float  # the seed's training_instability ladder: reduce_learning_rate
    rollback_warmup_ratio: float  # ... and add_warmup_steps
    loss_spike_factor: float  # 0: off
    spike_window: int  # steps in the running median
    oom_guard: Literal["off", "first_steps", "any_step"]
    oom_first_steps: int  # "first_steps": an OOM up to this optimizer step is retried
    oom_ladder: list[str]  # the in-script rungs of the seed's memory_pressure ladder, in order
    oom_advice: list[str]  # spec changes to plan when the ladder runs out


class SchedulePlan(_Frozen):
    """What evaluation and checkpoints cost during training (finetune_gen/planning/schedule.py)."""

    total_steps: int  # optimizer steps of the whole run
    eval_split_rows: int  # the held-out rows (eval.py evaluates all of them after training)
    eval_examples: int  # rows evaluated at each evaluation during training (a capped subset)
    eval_batch_size: int  # per GPU; no activations are kept, so larger than the micro-batch
    evaluations: int  # evaluations in the run, train.py's final one included
    save_steps: int  # a resumable checkpoint every this many steps (a multiple of eval_steps)
    checkpoints: int  # resumable checkpoints written over the run (the end of training included)


class PaddingPlan(_Frozen):
    """The useful (non-padding) share of processed tokens, per collation (finetune_gen/estimate/padding.py)."""

    train: dict[str, float]  # collation -> fraction at the training micro-batch
    eval: dict[str, float]  # collation -> fraction at the eval batch
    source: str  # simulated on the data's lengths, or the measurement


# Usable share of a card's memory. The estimate is of max_memory_allocated plus the CUDA
# context; PyTorch's caching allocator reserves 5-20% more than it hands out (ESTIMATION.md,
# caveat 1), so the plan keeps 10% of the card free for it.
USABLE_VRAM_FRACTION = 0.90


class HardwarePlan(_Frozen):
    gpus: int
    nodes: int
    vram_per_gpu_gb: float
    usable_vram_gb: float
    gpu_type: str
    gpu_display: str
    supports_bf16: bool
    price_per_gpu_hour: float
    price_source: str
    assumed: bool

    @classmethod
    def for_gpu(
        cls,
        gpu: Any,
        gpus: int,
        *,
        nodes: int = 1,
        vram_gb: float | None = None,
        price: float | None = None,
        price_source: str | None = None,
        assumed: bool = False,
    ) -> "HardwarePlan":
        """Hardware of a catalog GPU type; the spec may give its own memory size and price."""
        vram = gpu.memory_gb if vram_gb is None else vram_gb
        return cls(
            gpus=gpus,
            nodes=nodes,
            vram_per_gpu_gb=vram,
            usable_vram_gb=round(vram * USABLE_VRAM_FRACTION, 2),
            gpu_type=gpu.name,
            gpu_display=gpu.display,
            supports_bf16=gpu.supports_bf16,
            price_per_gpu_hour=gpu.price_usd_hour if price is None else price,
            price_source=price_source or gpu.price_source,
            assumed=assumed,
        )


class Plan(_Frozen):
    generator_version: str
    spec_name: str
    base_model: str
    model_source: str
    model_type: str
    trust_remote_code: bool
    task_type: str
    num_labels: int  # classification: counted from the data (2 otherwise); sizes the head
    dataset: DatasetPlan
    prompt_format: str
    chat_template_family: str
    method: str
    quantization: QuantizationPlan | None
    lora: LoraPlan | None
    num_virtual_tokens: int | None
    freeze_trainable_layers: int | None
    distributed: str
    cpu_offload: str
    precision: str
    micro_batch_size: int
    gradient_accumulation_steps: int
    effective_batch_size: int
    gradient_checkpointing: bool
    optimizer: str
    learning_rate: float
    lr_scheduler: str
    warmup_ratio: float
    weight_decay: float
    max_grad_norm: float
    epochs: float
    max_seq_length: int
    packing: bool
    # How micro-batches are laid out (finetune_gen/planning/kernels.py): "padding_free", "group_by_length" or
    # "packing" expected on the target GPU; train.py uses the fallback when no varlen kernel is there.
    collation: str = "group_by_length"
    collation_fallback: str = "group_by_length"
    # Liger's fused kernels (CUDA only; liger-kernel is an optional requirement).
    use_liger_kernel: bool = False
    seed: int
    save_total_limit: int
    logging_steps: int
    eval_steps: int
    schedule: SchedulePlan
    padding: PaddingPlan
    # Training sequences per epoch: rows, or packed blocks (estimated from token counts).
    train_sequences: int = 0
    # The result is the last model trained unless the spec asks for the best by eval_loss.
    load_best_model_at_end: bool = False
    early_stopping_patience: int = 0  # evaluations without improvement; 0: off
    # Full fine-tuning in bf16: fp32 weights + bf16 autocast (True) or pure bf16 weights.
    fp32_master_weights: bool = False
    output_dir: str
    run_name: str
    decoder_layer_class: str
    guards: GuardsPlan
    hardware: HardwarePlan
    launch: LaunchPlan
    total_params: int
    trainable_params: int
    decisions: list[Decision]
    fallbacks_applied: list[Fallback]
    warnings: list[str]
    # Experiment trackers (TrainingArguments.report_to) and the W&B project ("" when none).
    report_to: list[str] = ["tensorboard"]
    wandb_project: str = ""

    @property
    def world_size(self) -> int:
        return self.hardware.gpus * self.hardware.nodes

    @property
    def is_peft(self) -> bool:
        return METHODS[self.method].is_peft

    def public_dict(self) -> dict[str, Any]:
        """The contract's ``plan`` object (JSON-safe, ``from`` spelled as in the contract)."""
        return self.model_dump(mode="json", by_alias=True)
