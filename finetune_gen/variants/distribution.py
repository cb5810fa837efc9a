"""The ways a run is spread over processes: one entry each, holding the facts every layer reads.

The spec's `training_config.distributed` values are this table's keys (plus "auto", the
planner's choice); the planner and the renderer read an entry's traits, never its name: does
it shard the weights, does the engine keep its own fp32 master weights, which ZeRO stage and
DeepSpeed file, which accelerate `distributed_type`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DistributionEntry:
    name: str
    title: str
    # accelerate's `distributed_type` (accelerate.yaml); "NO" for a single process.
    accelerate_type: str
    # Several processes: launch.sh starts them with torchrun, accelerate.yaml describes them.
    multi_process: bool = True
    zero_stage: int = 0  # DeepSpeed ZeRO stage; 0 when DeepSpeed is not used
    # Weights (and their gradients and optimizer states) split over the GPUs: ZeRO-3, FSDP.
    shards_weights: bool = False
    # The engine keeps fp32 master weights itself (DeepSpeed, FSDP mixed precision), so the
    # plan's fp32_master_weights choice only applies without one.
    engine_keeps_masters: bool = False

    @property
    def deepspeed_config(self) -> str:
        """The DeepSpeed JSON file train.py passes to the Trainer ("" without DeepSpeed)."""
        return f"ds_zero{self.zero_stage}.json" if self.zero_stage else ""

    @property
    def is_fsdp(self) -> bool:
        return self.accelerate_type == "FSDP"


DISTRIBUTIONS: dict[str, DistributionEntry] = {
    d.name: d
    for d in (
        DistributionEntry("none", "one process", "NO", multi_process=False),
        DistributionEntry("ddp", "DDP (a full copy per GPU)", "MULTI_GPU"),
        DistributionEntry(
            "fsdp",
            "FSDP2 (sharded weights)",
            "FSDP",
            shards_weights=True,
            engine_keeps_masters=True,
        ),
        DistributionEntry(
            "deepspeed_zero2",
            "DeepSpeed ZeRO-2 (sharded gradients and optimizer states)",
            "DEEPSPEED",
            zero_stage=2,
            engine_keeps_masters=True,
        ),
        DistributionEntry(
            "deepspeed_zero3",
            "DeepSpeed ZeRO-3 (sharded weights)",
            "DEEPSPEED",
            zero_stage=3,
            shards_weights=True,
            engine_keeps_masters=True,
        ),
    )
}
DISTRIBUTION_NAMES: tuple[str, ...] = tuple(DISTRIBUTIONS)
DEEPSPEED_CONFIGS: tuple[str, ...] = tuple(
    d.deepspeed_config for d in DISTRIBUTIONS.values() if d.deepspeed_config
)


def distribution(name: str) -> DistributionEntry:
    return DISTRIBUTIONS[name]
