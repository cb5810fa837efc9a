"""The resource estimate of a plan: memory, time, storage and cost, with every assumption named.

This joins the estimator's pure functions (``estimate.py``) to a resolved plan and shapes the
result as the contract's ``estimated_resources`` object and the data of ``resources.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from finetune_gen.estimate.formulas import (
    MemoryEstimate,
    StorageEstimate,
    TimeEstimate,
    checkpoint_write_bytes,
    estimate_cost,
    estimate_memory,
    estimate_storage,
    estimate_time,
    named_assumptions,
)
from finetune_gen.estimate.shape import planned_collation, shape_for_plan
from finetune_gen.knowledge.architecture import Architecture
from finetune_gen.knowledge.catalog import get_gpu
from finetune_gen.knowledge.params import ParamCounts
from finetune_gen.models.plan import Plan


@dataclass(frozen=True)
class Resources:
    memory: MemoryEstimate
    time: TimeEstimate
    storage: StorageEstimate
    cost_usd: float
    gpu_label: str
    assumptions: list[str]
    collation: str = "group_by_length"
    eval_tokens: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The contract's ``estimated_resources`` object."""
        hours = round(self.time.hours, 2)
        return {
            "training_time": f"{_hours_text(hours)} on {self.gpu_label}",
            "gpu_memory": f"{self.memory.peak_gb:.1f} GB per GPU",
            "storage": f"{self.storage.total_gb:.1f} GB",
            "training_hours": hours,
            "gpu_memory_gb": round(self.memory.peak_gb, 2),
            "storage_gb": round(self.storage.total_gb, 2),
            "cost_usd": round(self.cost_usd, 2),
            "cpu_ram_gb": round(self.memory.cpu_ram_gb, 2),
            "tokens_per_second": round(self.time.tokens_per_second),
            "total_tokens": self.time.total_tokens,
            "mfu": round(self.time.mfu, 3),
            # what the GPU runs through: the plan's collation and its share of real tokens
            "collation": self.collation,
            "useful_token_fraction": round(self.time.useful_fraction, 3),
            "processed_tokens": self.time.processed_tokens,
            "eval_tokens": self.eval_tokens,
            "time_breakdown_hours": {
                "training": round(self.time.train_hours, 3),
                "evaluation": round(self.time.eval_hours, 3),
                "checkpoints": round(self.time.checkpoint_hours, 3),
                "loading": round(
                    self.time.hours
                    - self.time.train_hours
                    - self.time.eval_hours
                    - self.time.checkpoint_hours,
                    3,
                ),
            },
            "gpu_memory_breakdown_gb": self.memory.breakdown(),
            "storage_breakdown_gb": {
                "base_download": round(self.storage.base_download_gb, 2),
                "checkpoints": round(self.storage.checkpoints_gb, 2),
                "final_output": round(self.storage.final_output_gb, 2),
                "merged_export": round(self.storage.merged_export_gb, 2),
                "dataset_cache": round(self.storage.dataset_cache_gb, 2),
            },
            "assumptions": self.assumptions,
        }


def _hours_text(hours: float) -> str:
    if hours < 1:
        return f"{max(1, round(hours * 60))} min"
    return f"{hours:.1f} h"


def estimate_resources(plan: Plan, arch: Architecture, counts: ParamCounts) -> Resources:
    shape = shape_for_plan(plan)
    gpu = get_gpu(plan.hardware.gpu_type)
    # This dataset's training share plus the dataset.mix rows, each cut at max_seq_length.
    tokens_per_epoch = plan.dataset.train_tokens(plan.max_seq_length)
    memory = estimate_memory(arch, counts, shape)
    collation = planned_collation(plan)
    schedule = plan.schedule
    row_tokens = min(plan.dataset.avg_tokens_per_example, plan.max_seq_length)
    # every evaluation reads the capped subset, padded as the eval batches are
    eval_tokens = round(
        schedule.evaluations * schedule.eval_examples * row_tokens / plan.padding.eval[collation]
    )
    time = estimate_time(
        arch,
        counts,
        shape,
        gpu,
        tokens_per_epoch=tokens_per_epoch,
        epochs=plan.epochs,
        useful_fraction=plan.padding.train[collation],
        eval_tokens=eval_tokens,
        checkpoint_bytes=checkpoint_write_bytes(
            arch, counts, shape, checkpoints=schedule.checkpoints
        ),
        collation=collation,
    )
    storage = estimate_storage(
        arch,
        counts,
        shape,
        save_total_limit=plan.save_total_limit,
        dataset_bytes=None,
        tokens_per_epoch=tokens_per_epoch,
    )
    cost = estimate_cost(time.hours, plan.hardware.price_per_gpu_hour, plan.world_size)
    label = f"{plan.world_size}x {plan.hardware.gpu_display}"
    assumptions = (
        list(named_assumptions(shape)) + list(time.assumptions) + list(storage.assumptions)
    )
    if plan.hardware.assumed:
        assumptions.append(
            f"GPU speed and price assumed from a typical {plan.hardware.vram_per_gpu_gb:g} GB card "
            f"({plan.hardware.gpu_display}); set hardware.gpu_type for yours"
        )
    assumptions.append(
        f"price ${plan.hardware.price_per_gpu_hour:.2f}/GPU-hour ({plan.hardware.price_source})"
    )
    assumptions.append(
        f"useful-token fraction {plan.padding.train[collation]:.2f} for {collation} "
        f"({plan.padding.source})"
    )
    if not plan.dataset.counted_from_file:
        assumptions.append(
            f"dataset size from the spec or defaults: {plan.dataset.num_examples} rows x "
            f"{plan.dataset.avg_tokens_per_example} tokens"
        )
    elif plan.dataset.report:
        assumptions.append(
            f"dataset counted by check-data ({plan.dataset.report}): {plan.dataset.num_examples} rows, "
            f"~{plan.dataset.avg_tokens_per_example} tokens each"
        )
    else:
        assumptions.append(
            f"dataset counted from {plan.dataset.path}: {plan.dataset.num_examples} rows, "
            f"~{plan.dataset.avg_tokens_per_example} tokens each (4 characters per token)"
        )
    for mix in plan.dataset.mix:
        assumptions.append(
            f"mixed in: {mix.planned_rows} rows of {mix.path} per epoch"
            + (f", ~{mix.avg_tokens_per_example} tokens each" if mix.avg_tokens_per_example else "")
        )
    return Resources(
        memory=memory,
        time=time,
        storage=storage,
        cost_usd=cost,
        gpu_label=label,
        assumptions=list(dict.fromkeys(assumptions)),
        collation=collation,
        eval_tokens=eval_tokens,
    )
