"""The useful (non-padding) share of the tokens a run processes, by collation.

A padded micro-batch costs ``batch x its longest example`` tokens of compute; only the real
tokens train. How much is padding depends on the collation (the plan's ``training.collation``)
and on the data's length distribution:

* ``pad_to_longest``: random batches padded to their longest example;
* ``group_by_length``: the HF Trainer's ``LengthGroupedSampler`` (transformers
  ``trainer_pt_utils.get_length_grouped_indices``): random mega-batches of
  ``min(n // (4 x batch), 50)`` sampler batches, each sorted by length, then cut into
  micro-batches. Its sampler batch is the per-device batch x gradient accumulation;
* ``padding_free`` and ``packing``: no padding (flattened examples with ``position_ids``, or
  full packed sequences).

With the lengths at hand the fraction is simulated on them (fixed seed, deterministic);
without, it is the issue's CPU measurement (estimate.DEFAULT_USEFUL_FRACTION). Pure Python.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from finetune_gen.estimate.formulas import COLLATIONS, DEFAULT_USEFUL_FRACTION

# Lengths simulated at most (an evenly spaced sample of bigger sets): keeps `plan` instant.
MAX_SIMULATED = 20_000
MEGA_BATCH_MULT = 50  # transformers' default cap on sampler batches per mega-batch


def useful_fraction(
    collation: str,
    lengths: Sequence[int] | None,
    *,
    micro_batch: int,
    sampler_batch: int | None = None,
    max_length: int | None = None,
    seed: int = 0,
) -> tuple[float, str]:
    """(fraction, where it comes from) for ``collation`` at ``micro_batch`` examples a batch."""
    if collation not in COLLATIONS:
        raise ValueError(f"collation {collation!r} not one of {', '.join(COLLATIONS)}")
    if collation in ("padding_free", "packing"):
        return 1.0, "no padding"
    if not lengths:
        return (
            DEFAULT_USEFUL_FRACTION[collation],
            "the issue's CPU measurement; the data is not at hand",
        )
    picked = list(lengths)
    if len(picked) > MAX_SIMULATED:
        step = len(picked) / MAX_SIMULATED
        picked = [picked[int(i * step)] for i in range(MAX_SIMULATED)]
    if max_length:
        picked = [min(n, max_length) for n in picked]
    order = picked[:]
    random.Random(seed).shuffle(order)
    micro = max(1, micro_batch)
    if collation == "group_by_length":
        batch = max(micro, sampler_batch or micro)
        mult = max(1, min(len(order) // (batch * 4), MEGA_BATCH_MULT))
        mega = mult * batch
        order = [
            n
            for start in range(0, len(order), mega)
            for n in sorted(order[start : start + mega], reverse=True)
        ]
    processed = sum(
        len(order[i : i + micro]) * max(order[i : i + micro]) for i in range(0, len(order), micro)
    )
    return sum(order) / processed, f"simulated on the data's {len(lengths):,} estimated lengths"
