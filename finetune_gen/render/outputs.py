"""The run folder's files: one row each, the single table everything that lists them reads.

A row names the file, its template, when the plan has it and what it is. Rendering
(`render.render_files`), `generate --check` (which names only the generator writes), the run
README's file table and the output object's `config_files` all read this table, so a new
file is one row here and one template named after it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from finetune_gen.models.plan import Plan
from finetune_gen.render.after_training import AfterTraining, serves
from finetune_gen.variants.distribution import DEEPSPEED_CONFIGS
from finetune_gen.variants.methods import METHODS
from finetune_gen.variants.tasks import TASKS


def _always(plan: Plan) -> bool:
    return True


@dataclass(frozen=True)
class Output:
    name: str
    # The template under templates/ that renders it; "" for data written as JSON by render.py.
    template: str
    # The run README's row, from the plan's after-training values ("" when the README does
    # not list the file); consecutive rows with the same text share one line of the table.
    describe: Callable[[Plan, AfterTraining], str]
    when: Callable[[Plan], bool] = _always
    config: bool = False  # one of the output object's config_files (contract section 3)


def _text(text: str) -> Callable[[Plan, AfterTraining], str]:
    return lambda plan, after: text


def _eval_text(plan: Plan, after: AfterTraining) -> str:
    metrics = "perplexity, task metrics" if TASKS[plan.task_type].perplexity else "task metrics"
    return f"{metrics} and a contamination check on the held-out split"


def _serve_text(plan: Plan, after: AfterTraining) -> str:
    return "serves the model with vLLM (OpenAI-compatible API)" + (
        ", merged or as a LoRA adapter" if after.serve_adapter else ""
    )


def _deepspeed(name: str) -> Output:
    return Output(
        name,
        "deepspeed.json.jinja",
        _text("the DeepSpeed ZeRO configuration train.py passes to the Trainer"),
        lambda plan: plan.launch.deepspeed_config == name,
        config=True,
    )


# In the order of the run README's file table.
OUTPUTS: tuple[Output, ...] = (
    Output(
        "train.py",
        "train.py.jinja",
        _text("the training script (standalone; `--help` lists its options)"),
    ),
    Output(
        "probe.py",
        "probe.py.jinja",
        _text("a few steps at the planned shape, measured against the estimate"),
    ),
    Output("eval.py", "eval.py.jinja", _eval_text),
    Output(
        "config.yaml",
        "config.yaml.jinja",
        _text("the resolved plan with the reason for each value"),
        config=True,
    ),
    Output(
        "launch.sh", "launch.sh.jinja", _text("the launch command for this hardware"), config=True
    ),
    Output(
        "slurm.sbatch",
        "slurm.sbatch.jinja",
        _text("the same run as a SLURM batch job (`sbatch slurm.sbatch`)"),
        lambda plan: plan.hardware.nodes > 1,
        config=True,
    ),
    Output(
        "merge.py",
        "merge.py.jinja",
        lambda plan, after: (
            f"merges the adapter into the base model ({after.merge_dtype}), checks the logits, "
            "saves safetensors"
        ),
        lambda plan: METHODS[plan.method].mergeable,
    ),
    Output("serve.sh", "serve.sh.jinja", _serve_text, serves, config=True),
    Output(
        "accelerate.yaml",
        "accelerate.yaml.jinja",
        _text("the same launch for `accelerate launch --config_file accelerate.yaml train.py`"),
        lambda plan: bool(plan.launch.accelerate_config),
        config=True,
    ),
    *(_deepspeed(name) for name in DEEPSPEED_CONFIGS),
    Output(
        "augment.py",
        "augment.py.jinja",
        _text("paraphrases the training prompts with a local model into a new file (opt-in)"),
        lambda plan: plan.dataset.augment.paraphrase,
    ),
    Output("resources.md", "resources.md.jinja", _text("memory, time, storage and cost estimate")),
    Output("resources.json", "", _text("memory, time, storage and cost estimate")),
    Output("eval_plan.md", "eval_plan.md.jinja", _text("what to evaluate and how")),
    Output("eval_plan.json", "", _text("what to evaluate and how")),
    Output("requirements.txt", "requirements.txt.jinja", _text("the Python packages"), config=True),
    Output("README.md", "README.md.jinja", _text("")),
)
# `generate --format notebook` writes this one file instead of the folder.
NOTEBOOK = "finetune.ipynb"
# Every name only the generator writes in a run folder (generate --check finds stale ones).
GENERATED_NAMES: frozenset[str] = frozenset({o.name for o in OUTPUTS} | {NOTEBOOK})
CONFIG_NAMES: frozenset[str] = frozenset(o.name for o in OUTPUTS if o.config)


def outputs_for(plan: Plan) -> list[Output]:
    """The rows of the files this plan's run folder has, in the table's order."""
    return [output for output in OUTPUTS if output.when(plan)]


def readme_rows(plan: Plan, after: AfterTraining) -> list[tuple[list[str], str]]:
    """The run README's file table: (file names, what they are)."""
    rows: list[tuple[list[str], str]] = []
    for output in outputs_for(plan):
        text = output.describe(plan, after)
        if not text:
            continue
        if rows and rows[-1][1] == text:
            rows[-1][0].append(output.name)
        else:
            rows.append(([output.name], text))
    return rows
