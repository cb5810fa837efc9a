"""The human-readable plan: every decision with its reason, the memory breakdown, the fallbacks.

Rendered with rich at a fixed width and without colour so the text is the same in a terminal,
a notebook and a golden file.
"""

from __future__ import annotations

import io
import json

from rich import box
from rich.console import Console
from rich.table import Table

from finetune_gen.estimate.resources import Resources
from finetune_gen.models.plan import Plan

WIDTH = 100


def _value(value: object) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def summary_text(plan: Plan, resources: Resources, *, detailed: bool = False) -> str:
    console = Console(
        file=io.StringIO(), width=WIDTH, color_system=None, force_terminal=False, highlight=False
    )
    hw = plan.hardware
    console.print(
        f"{plan.base_model} · {plan.task_type} · {plan.method} on {plan.world_size}x {hw.gpu_display} "
        f"({hw.vram_per_gpu_gb:g} GB, {hw.usable_vram_gb:g} GB usable)"
    )
    console.print(
        f"params {plan.total_params:,} total, {plan.trainable_params:,} trainable "
        f"({100 * plan.trainable_params / plan.total_params:.3f}%)"
    )
    est = resources.to_dict()
    console.print(
        f"estimate: {est['gpu_memory']} peak · {est['training_time']} · "
        f"{est['storage']} disk · ${est['cost_usd']:,.2f}"
    )

    table = Table(title="Decisions" if detailed else None, box=box.SIMPLE_HEAD, expand=False)
    table.add_column("setting", no_wrap=True)
    table.add_column("value", max_width=28)
    table.add_column("why", ratio=1)
    for decision in plan.decisions:
        if (
            not detailed
            and decision.source == "planner"
            and decision.setting.startswith(("lora.", "warmup", "max_grad", "lr_sched"))
        ):
            continue
        mark = {"spec": " (spec)", "fallback": " (fallback)"}.get(decision.source, "")
        table.add_row(decision.setting + mark, _value(decision.value), decision.why)
    console.print(table)

    if detailed:
        memory = Table(title="Peak GPU memory per GPU (GB)", box=box.SIMPLE_HEAD)
        memory.add_column("part")
        memory.add_column("GB", justify="right")
        for part, gigabytes in est["gpu_memory_breakdown_gb"].items():
            memory.add_row(part, f"{gigabytes:.2f}")
        memory.add_row("total", f"{est['gpu_memory_gb']:.2f}")
        console.print(memory)

    if plan.fallbacks_applied:
        console.print("Fallbacks applied (the run did not fit as first planned):")
        for step in plan.fallbacks_applied:
            console.print(
                f"  - {step.action}: {step.setting} {step.from_} -> {step.to} "
                f"({step.memory_before_gb:.1f} -> {step.memory_after_gb:.1f} GB): {step.why}"
            )
    for warning in plan.warnings:
        console.print(f"warning: {warning}")
    if detailed:
        console.print("Assumptions:")
        for assumption in resources.assumptions:
            console.print(f"  - {assumption}")
    text = console.file.getvalue()  # type: ignore[attr-defined]
    return "\n".join(line.rstrip() for line in text.splitlines()).rstrip() + "\n"
