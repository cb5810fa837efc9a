"""The one builder of the estimator's TrainingShape, for a planning draft or a finished plan.

The planner sizes candidate configurations with it and resources.py sizes the final plan
with it, so the two cannot drift apart (they once did: the plan's label count was lost).
"""

from __future__ import annotations

from finetune_gen.estimate.formulas import TrainingShape
from finetune_gen.models.plan import LoraPlan, Plan
from finetune_gen.variants.distribution import DISTRIBUTIONS
from finetune_gen.variants.methods import METHODS, PROMPT_METHODS
from finetune_gen.variants.tasks import TASKS


def lora_targets(lora: LoraPlan | None) -> tuple[str, ...] | str | None:
    if lora is None:
        return None
    return (
        lora.target_modules if isinstance(lora.target_modules, str) else tuple(lora.target_modules)
    )


def estimator_task(task_type: str) -> str:
    return TASKS[task_type].head


def build_shape(
    *,
    method: str,
    trainable_params: int,
    precision: str,
    micro_batch_size: int,
    seq_len: int,
    gradient_checkpointing: bool,
    optimizer: str,
    distributed: str,
    world_size: int,
    gpus_per_node: int,
    cpu_offload: str,
    task: str,
    lora: LoraPlan | None,
    num_virtual_tokens: int,
    num_labels: int,
    full_master_weights_fp32: bool | None = None,
    use_liger_kernel: bool = False,
) -> TrainingShape:
    return TrainingShape(
        method=method,
        trainable_params=trainable_params,
        precision=precision,
        micro_batch_size=micro_batch_size,
        seq_len=seq_len,
        gradient_checkpointing=gradient_checkpointing,
        optimizer=optimizer,
        distributed=distributed,
        world_size=world_size,
        gpus_per_node=gpus_per_node,
        cpu_offload=cpu_offload,
        quant_bits=4 if method == "qlora" else 16,
        task=task,
        num_virtual_tokens=num_virtual_tokens if method in PROMPT_METHODS else 0,
        target_modules=lora_targets(lora),
        lora_dropout=lora.dropout if lora else 0.0,
        num_labels=num_labels,
        full_master_weights_fp32=full_master_weights_fp32,
        # Liger's fused linear cross-entropy replaces the causal-LM loss (estimate.py counts it).
        loss_impl="liger" if use_liger_kernel and task == "causal_lm" else "hf",
    )


# ---------------------------------------------------------------- the plan's kernels
# The one place that reads the collation and the Liger switch from a plan, for every estimate.


def planned_collation(plan: Plan) -> str:
    """The collation the plan expects at run time (estimate.COLLATIONS)."""
    return plan.collation


def planned_liger(plan: Plan) -> bool:
    """Whether the plan runs Liger kernels (fused linear cross-entropy among them)."""
    return plan.use_liger_kernel


def shape_for_plan(plan: Plan) -> TrainingShape:
    return build_shape(
        method=plan.method,
        trainable_params=plan.trainable_params,
        precision=plan.precision,
        micro_batch_size=plan.micro_batch_size,
        seq_len=plan.max_seq_length,
        gradient_checkpointing=plan.gradient_checkpointing,
        optimizer=plan.optimizer,
        distributed=plan.distributed,
        world_size=plan.world_size,
        gpus_per_node=plan.hardware.gpus,
        cpu_offload=plan.cpu_offload,
        task=estimator_task(plan.task_type),
        lora=plan.lora,
        num_virtual_tokens=plan.num_virtual_tokens or 0,
        num_labels=plan.num_labels,
        # The planner's regime for full fine-tuning (fp32 masters or pure bf16); None elsewhere.
        full_master_weights_fp32=(
            plan.fp32_master_weights
            if not METHODS[plan.method].is_peft
            and not DISTRIBUTIONS[plan.distributed].engine_keeps_masters
            and plan.precision != "fp32"
            else None
        ),
        use_liger_kernel=planned_liger(plan),
    )
