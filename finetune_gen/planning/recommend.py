"""Hardware recommendations: the cheapest catalog configuration that fits a spec.

Used when the spec has no ``hardware`` section, and to say what would fit when nothing fits
the given hardware (exit 3). Each candidate (1, 2, 4 or 8 GPUs of each catalog type, one
node) is planned by a quiet trial copy of the planner (``Planner.trial``) and ranked by
estimated cost, then time. ``planning.plan`` calls these; the planner never does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from finetune_gen.errors import NoFitError
from finetune_gen.estimate.resources import estimate_resources
from finetune_gen.knowledge.catalog import list_gpus
from finetune_gen.models.plan import HardwarePlan

if TYPE_CHECKING:
    from finetune_gen.planning.planner import Planner

GPU_COUNTS = (1, 2, 4, 8)


@dataclass(frozen=True)
class Candidate:
    hardware: HardwarePlan
    method: str
    peak_gb: float
    hours: float
    cost_usd: float

    def describe(self) -> str:
        hw = self.hardware
        return (
            f"{hw.gpus}x {hw.gpu_display} ({self.method}, ~{self.peak_gb:.1f} GB per GPU, "
            f"~{self.hours:.1f} h, ~${self.cost_usd:,.0f})"
        )


def candidates(planner: "Planner", *, method: str | None = None) -> list[Candidate]:
    """Every catalog configuration the spec fits on, cheapest first."""
    found = []
    for gpu in list_gpus():
        for count in GPU_COUNTS:
            trial = planner.trial(method)
            if trial.tc.precision == "bf16" and not gpu.supports_bf16:
                continue
            try:
                plan, _ = trial.plan(HardwarePlan.for_gpu(gpu, count))
            except NoFitError:
                continue
            if plan.cpu_offload != "none":
                continue  # recommend configurations that run at full speed
            resources = estimate_resources(plan, planner.arch, planner.counts)
            found.append(
                Candidate(
                    hardware=plan.hardware,
                    method=plan.method,
                    peak_gb=resources.memory.peak_gb,
                    hours=resources.time.hours,
                    cost_usd=resources.cost_usd,
                )
            )
            break  # more GPUs of the same type only add cost once one count fits
    return sorted(
        found, key=lambda c: (round(c.cost_usd, 2), round(c.hours, 3), c.hardware.gpu_type)
    )


def recommend_hardware(planner: "Planner") -> HardwarePlan:
    """The cheapest configuration that fits; the next ones become a diagnostic."""
    options = candidates(planner)
    if not options:
        raise NoFitError(
            f"{planner.spec.base_model} does not fit any catalog configuration of up to "
            f"{max(GPU_COUNTS)} GPUs without CPU offload; give hardware with several nodes "
            "or a shorter max_seq_length"
        )
    best, rest = options[0], options[1:4]
    planner.warn(
        "no hardware in the spec: recommending the cheapest configuration that fits",
        f"chosen {best.describe()}"
        + (f"; alternatives: {'; '.join(c.describe() for c in rest)}" if rest else ""),
        "hardware",
    )
    return best.hardware


def smallest_fitting_hardware(planner: "Planner") -> str:
    """A sentence naming the cheapest configuration that fits this spec (for exit 3)."""
    options = candidates(planner, method=planner.tc.method)
    if not options:
        return ""
    return options[0].describe()
