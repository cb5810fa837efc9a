"""Planning, orchestrated: a spec in, a self-sufficient :class:`Planned` out.

One function, :func:`plan`, runs the steps in order, so that no module below it has to call
back up: the recommender picks hardware when the spec names none (planning trial copies of
the planner), the planner plans, a plan that does not fit learns what would fit, and the
estimate is made from the finished plan. Callers need nothing else (no planner object) to
render, print or compare a plan.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from finetune_gen.errors import NoFitError
from finetune_gen.estimate.resources import Resources, estimate_resources
from finetune_gen.models.plan import Plan
from finetune_gen.models.spec import Spec
from finetune_gen.planning.planner import Diagnostic, Planner
from finetune_gen.planning.recommend import (
    recommend_hardware,
    smallest_fitting_hardware,
)


@dataclass(frozen=True)
class Planned:
    """A plan, its resource estimate and what planning has to say about it."""

    plan: Plan
    resources: Resources
    diagnostics: list[Diagnostic]


def plan(
    spec: Spec,
    *,
    spec_name: str = "spec.yaml",
    strict: bool = False,
    relocate: Callable[[Plan], Plan] | None = None,
) -> Planned:
    """Plan ``spec`` on its hardware, or on the cheapest catalog hardware that fits.

    ``relocate`` rewrites the finished plan's local paths (the run folder refers to its data
    relative to itself) before the estimate, whose assumptions name the dataset path.
    """
    planner = Planner(spec, spec_name=spec_name, strict=strict)
    hardware = recommend_hardware(planner) if spec.hardware is None else None
    try:
        planned, diagnostics = planner.plan(hardware)
    except NoFitError as error:
        raise error.with_suggestion(smallest_fitting_hardware(planner)) from None
    if relocate is not None:
        planned = relocate(planned)
    resources = estimate_resources(planned, planner.arch, planner.counts)
    return Planned(planned, resources, diagnostics)
