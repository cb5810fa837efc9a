"""Optimizers and learning-rate schedules the generated scripts may use: facts, no decisions.

One table, read by the spec (which names are accepted), the estimator (how many bytes of state
each keeps) and the run folder (whether bitsandbytes is a requirement). Every name is a
transformers ``optim`` / ``lr_scheduler_type`` value; tests/test_optimizers.py checks the table
against the installed transformers, so a renamed or removed value fails there, not on a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Optimizer:
    name: str
    # How the estimator counts its state: adamw_foreach | adamw_fused | bnb8 | bnb32 | adafactor | sgd
    state_kind: str
    needs_bitsandbytes: bool = False
    paged: bool = False


OPTIMIZERS: dict[str, Optimizer] = {
    o.name: o
    for o in (
        Optimizer("adamw_torch", "adamw_foreach"),
        Optimizer("adamw_torch_fused", "adamw_fused"),
        Optimizer("adamw_8bit", "bnb8", needs_bitsandbytes=True),
        Optimizer("adamw_bnb_8bit", "bnb8", needs_bitsandbytes=True),
        Optimizer("paged_adamw_8bit", "bnb8", needs_bitsandbytes=True, paged=True),
        Optimizer("paged_adamw_32bit", "bnb32", needs_bitsandbytes=True, paged=True),
        Optimizer("adafactor", "adafactor"),
        Optimizer("sgd", "sgd"),
    )
}

# Schedules that need nothing beyond the planned arguments (cosine_with_min_lr and
# warmup_stable_decay need lr_scheduler_kwargs the spec cannot give yet).
LR_SCHEDULERS: tuple[str, ...] = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
)


def optimizer(name: str) -> Optimizer | None:
    return OPTIMIZERS.get(name)


def needs_bitsandbytes(name: str) -> bool:
    entry = OPTIMIZERS.get(name)
    return bool(entry and entry.needs_bitsandbytes)
