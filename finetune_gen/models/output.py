"""The output object of `generate --format json` (contract section 3), as a pydantic model."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from finetune_gen.models.plan import Plan


class MemoryBreakdown(BaseModel):
    model_config = ConfigDict(extra="forbid")

    weights: float
    trainable_and_grads: float
    optimizer: float
    activations: float
    logits: float
    overhead: float


class EstimatedResources(BaseModel):
    model_config = ConfigDict(extra="allow")

    training_time: str
    gpu_memory: str
    storage: str
    training_hours: float
    gpu_memory_gb: float
    storage_gb: float
    cost_usd: float
    gpu_memory_breakdown_gb: MemoryBreakdown


class OutputObject(BaseModel):
    model_config = ConfigDict(extra="forbid")

    training_script: str
    config_files: dict[str, str]
    evaluation_plan: dict[str, Any]
    estimated_resources: EstimatedResources
    plan: Plan
