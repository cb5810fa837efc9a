"""Evaluation and checkpoints that cost what they are worth, planned from the run's length.

Issue #11 measured the old schedule (the whole eval split at the training micro-batch and a
checkpoint at every one of ~10 evaluations, whatever the run's length) adding 47% to a
one-epoch run. Here:

* cadence: about ``TARGET_EVALUATIONS`` per run but at least ``MIN_STEPS_PER_EVAL`` optimizer
  steps apart (early stopping keeps the full count: it needs the points), and never more than
  ``MAX_STEPS_PER_EVAL`` apart;
* each evaluation reads a capped subset of the eval split, sized so that all evaluations
  together cost at most ``EVAL_COMPUTE_BUDGET`` of the training compute (a forward pass costs
  a fraction of a training step per token: estimate.eval_flops_per_token), between
  ``MIN_EVAL_EXAMPLES`` and ``MAX_EVAL_EXAMPLES`` rows; eval.py still evaluates the whole split
  after training;
* the eval batch is the largest of 8, 4, 2, 1 times the micro-batch whose estimated eval peak
  stays within the training peak (no activations are kept for backward);
* a resumable checkpoint every k-th evaluation, the smallest k whose writes take at most
  ``SAVE_TIME_BUDGET`` of the training time between them (every evaluation when the best
  checkpoint is the result: the Trainer can only load one it saved).

Pure functions: the planner passes the estimates in.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

TARGET_EVALUATIONS = 10
MIN_STEPS_PER_EVAL = 50
MAX_STEPS_PER_EVAL = 500
EVAL_COMPUTE_BUDGET = 0.10
# eval_loss is a mean over rows: its standard error falls as 1/sqrt(rows). 100 rows leave
# +-10% of the per-row spread, 1,000 rows +-3%; 10x more rows would only reach +-1%.
MIN_EVAL_EXAMPLES = 100
MAX_EVAL_EXAMPLES = 1000
EVAL_BATCH_FACTORS = (8, 4, 2, 1)
SAVE_TIME_BUDGET = 0.05


@dataclass(frozen=True)
class Choice:
    value: int
    why: str


def eval_cadence(total_steps: int, *, early_stopping: bool) -> Choice:
    """Steps between evaluations, from the run's length in optimizer steps."""
    steps = max(1, total_steps)
    if early_stopping:
        count = min(TARGET_EVALUATIONS, steps)
        rule = f"early stopping needs the points: about {TARGET_EVALUATIONS} evaluations"
    else:
        count = max(1, min(TARGET_EVALUATIONS, steps // MIN_STEPS_PER_EVAL))
        rule = (
            f"about {TARGET_EVALUATIONS} evaluations per run, at least {MIN_STEPS_PER_EVAL} "
            "steps apart so that eval_loss can move beyond its noise between them"
        )
    every = min(MAX_STEPS_PER_EVAL, math.ceil(steps / count))
    capped = f", and at most {MAX_STEPS_PER_EVAL} apart" if every == MAX_STEPS_PER_EVAL else ""
    if every >= steps:
        return Choice(steps, f"{rule}: the run's {steps} optimizer step(s) allow one, at its end")
    return Choice(every, f"{rule}{capped}: every {every} of the run's {steps} optimizer steps")


def evaluations_in_run(total_steps: int, eval_steps: int, has_eval: bool) -> int:
    """Evaluations the generated train.py runs: the Trainer's (at each multiple of eval_steps
    and at the last step) and the final trainer.evaluate()."""
    if not has_eval:
        return 0
    return math.ceil(max(1, total_steps) / max(1, eval_steps)) + 1


def eval_subset(
    eval_rows: int, *, train_rows: int, epochs: float, flops_ratio: float, evaluations: int
) -> Choice:
    """Rows evaluated at each evaluation: the eval split capped by cost and by worth.

    ``flops_ratio``: training FLOPs per token over evaluation FLOPs per token.
    """
    if eval_rows <= 0 or evaluations <= 0:
        return Choice(0, "no eval split: nothing is evaluated during training")
    budget = EVAL_COMPUTE_BUDGET * train_rows * epochs * flops_ratio / evaluations
    n = min(eval_rows, MAX_EVAL_EXAMPLES, max(MIN_EVAL_EXAMPLES, math.floor(budget)))
    cost = (
        f"{evaluations} evaluations x {n} rows cost "
        f"{n * evaluations / (train_rows * epochs * flops_ratio):.1%} of the training compute "
        f"(a forward pass is 1/{flops_ratio:.1f} of a training step per token)"
    )
    if n == eval_rows:
        return Choice(n, f"the whole eval split ({n} rows): {cost}")
    if n == MAX_EVAL_EXAMPLES and budget >= MAX_EVAL_EXAMPLES:
        why = (
            f"{n} of the {eval_rows} held-out rows: eval_loss's standard error falls as "
            f"1/sqrt(rows), +-3% of the per-row spread at {MAX_EVAL_EXAMPLES}; more rows add "
            f"cost, not information; {cost}"
        )
    elif n == MIN_EVAL_EXAMPLES and budget < MIN_EVAL_EXAMPLES:
        why = (
            f"{n} of the {eval_rows} held-out rows, the floor: fewer make eval_loss noise "
            f"(+-10% of the per-row spread at {MIN_EVAL_EXAMPLES}), although {cost}, over the "
            f"{EVAL_COMPUTE_BUDGET:.0%} budget"
        )
    else:
        why = (
            f"{n} of the {eval_rows} held-out rows: the most that keeps evaluation within "
            f"{EVAL_COMPUTE_BUDGET:.0%} of the training compute; {cost}"
        )
    return Choice(n, why + "; eval.py evaluates the whole split after training")


def eval_batch(
    micro_batch: int,
    *,
    eval_examples: int,
    world_size: int,
    eval_peak_gb: Callable[[int], float],
    train_peak_gb: float,
) -> Choice:
    """Sequences per GPU per eval step: the largest multiple whose eval peak fits the training's."""
    per_gpu = max(1, math.ceil(eval_examples / max(1, world_size)))
    for factor in EVAL_BATCH_FACTORS:
        size = micro_batch * factor
        if factor > 1 and size // 2 >= per_gpu:
            continue  # half this batch already holds every row a GPU evaluates
        peak = eval_peak_gb(size)
        if peak <= train_peak_gb or factor == 1:
            within = "stays within" if peak <= train_peak_gb else "exceeds (at the smallest batch)"
            return Choice(
                size,
                f"{factor} x the micro-batch of {micro_batch}: evaluation keeps no activations "
                f"for backward; its estimated peak ({peak:.1f} GB) {within} the training "
                f"peak ({train_peak_gb:.1f} GB)",
            )
    raise AssertionError("unreachable: factor 1 always returns")


def save_cadence(
    total_steps: int,
    eval_steps: int,
    *,
    best_is_result: bool,
    save_seconds: float,
    step_seconds: float,
    checkpoint_gb: float,
) -> tuple[Choice, int]:
    """(steps between resumable checkpoints, checkpoints written), a multiple of eval_steps."""
    steps = max(1, total_steps)
    if best_is_result:
        k = 1
        why = (
            "at every evaluation: the result is the best checkpoint by eval_loss, and the "
            "Trainer can only load one it saved"
        )
    else:
        k_max = max(1, steps // max(1, eval_steps))
        k = 1
        while k < k_max and save_seconds > SAVE_TIME_BUDGET * k * eval_steps * step_seconds:
            k += 1
        share = save_seconds / max(1e-9, k * eval_steps * step_seconds)
        why = (
            f"every {k} evaluation(s): a checkpoint ({checkpoint_gb:.2f} GB, ~{save_seconds:.1f} s "
            f"to write) costs {share:.1%} of the training time between two"
            + (
                f" (the most spaced the run allows; the target is {SAVE_TIME_BUDGET:.0%})"
                if share > SAVE_TIME_BUDGET
                else f" (at most {SAVE_TIME_BUDGET:.0%})"
            )
        )
    every = min(steps, k * eval_steps)
    checkpoints = math.ceil(steps / every)  # at each multiple, and the Trainer's at the end
    return Choice(every, f"{why}; {checkpoints} resumable checkpoint(s) in the run"), checkpoints
