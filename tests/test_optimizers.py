"""The project's optimizer and scheduler tables agree with the installed transformers."""

from __future__ import annotations

import pytest

from finetune_gen.knowledge.optimizers import LR_SCHEDULERS, OPTIMIZERS, needs_bitsandbytes

transformers = pytest.importorskip("transformers")


def test_every_optimizer_is_a_transformers_optim_name():
    from transformers.training_args import OptimizerNames

    known = {o.value for o in OptimizerNames}
    assert set(OPTIMIZERS) <= known, sorted(set(OPTIMIZERS) - known)


def test_bitsandbytes_flag_matches_what_transformers_imports():
    # transformers builds these from bitsandbytes.optim; the others come from torch or itself.
    for name, entry in OPTIMIZERS.items():
        assert entry.needs_bitsandbytes == ("8bit" in name or "paged" in name or "bnb" in name), name
    assert needs_bitsandbytes("paged_adamw_32bit")  # the drift the design review found
    assert not needs_bitsandbytes("adamw_torch")


@pytest.mark.parametrize("name", LR_SCHEDULERS)
def test_every_scheduler_builds_with_the_planned_arguments(name):
    import torch
    from transformers import get_scheduler

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = get_scheduler(name, optimizer, num_warmup_steps=2, num_training_steps=10)
    for _ in range(3):
        optimizer.step()
        scheduler.step()


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimizer_is_accepted_by_training_arguments(name, tmp_path):
    from transformers import TrainingArguments

    args = TrainingArguments(output_dir=str(tmp_path), optim=name, use_cpu=True, report_to=[])
    assert args.optim == name
