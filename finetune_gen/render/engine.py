"""Render a plan into the files of a run folder: Jinja templates, then black for Python.

Templates only present the plan. What they need beyond the plan's own fields (TrainingArguments
keyword arguments, import lines, PEFT config keywords) is computed here, in :func:`build_view`,
from the plan alone.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

from finetune_gen import __version__
from finetune_gen.estimate.resources import Resources
from finetune_gen.knowledge.optimizers import needs_bitsandbytes
from finetune_gen.knowledge.params import ia3_modules
from finetune_gen.knowledge.prompts import (
    ALPACA_PROMPT,
    DEFAULT_CHAT_TEMPLATE,
    PROMPT_FORMATS,
    PromptFormat,
)
from finetune_gen.models.plan import Plan
from finetune_gen.render.after_training import after_training
from finetune_gen.render.formatting import NotPython, format_source
from finetune_gen.render.outputs import outputs_for, readme_rows
from finetune_gen.render.quoting import FILTERS, doc_text, one_line
from finetune_gen.variants.distribution import DISTRIBUTIONS
from finetune_gen.variants.formats import FORMATS
from finetune_gen.variants.methods import METHODS
from finetune_gen.variants.tasks import TASKS, TaskEntry


def templates_dir() -> Path:
    """Templates ship inside the wheel as finetune_gen/templates; in a checkout they sit at the top."""
    package = Path(__file__).resolve().parent.parent  # finetune_gen/
    packaged = package / "templates"  # a wheel: templates/ is force-included into the package
    return packaged if packaged.is_dir() else package.parent / "templates"


def _template_cache() -> jinja2.BytecodeCache | None:
    """Compiled templates kept between runs: compiling the templates was ~40% of `generate`.

    Jinja keys each entry by the template's name and checks its source's hash on load, so an
    edited template is compiled again; the files are written atomically (temporary + rename).
    """
    root = _cache_root()
    if root is None:
        return None
    folder = root / f"jinja-{jinja2.__version__}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    if not os.access(folder, os.W_OK):
        return None  # a read-only home: compile every time
    return jinja2.FileSystemBytecodeCache(str(folder))


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        bytecode_cache=_template_cache(),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters.update(FILTERS)
    env.globals.update(version=__version__)
    return env


@dataclass
class View:
    """Presentation values derived from the plan (no decisions are made here)."""

    task: TaskEntry
    prompt: PromptFormat
    task_kind: str
    method_kind: str
    method_title: str
    artifact: str
    auto_model_class: str
    imports: list[str]
    features: list[str]
    training_args: dict[str, Any]
    # Causal-LM tasks train with TRL's SFTTrainer (its SFTConfig, its collator); classification
    # with transformers' Trainer. GuardedTrainer derives from trainer_base.
    trainer_base: str = "Trainer"
    config_class: str = "TrainingArguments"
    peft_config_class: str = ""
    peft_kwargs: dict[str, Any] = field(default_factory=dict)
    bnb_kwargs: dict[str, Any] = field(default_factory=dict)
    alpaca_prompt: str = ALPACA_PROMPT
    default_chat_template: str = DEFAULT_CHAT_TEMPLATE
    # How the peft config learns tokens this script adds (chat markers): LoraConfig trains just
    # their embedding / lm_head rows (trainable_token_indices); other configs save whole modules.
    new_token_training: str = "trainable_token_indices"
    # Fields joined into one text (classification, generation): (role, required) pairs; empty
    # when the rows are conversations (the format's messages field).
    text_fields: list[tuple[str, bool]] = field(default_factory=list)
    # The AutoPeftModel class that reloads the adapter in eval.py.
    auto_peft_class: str = "AutoPeftModelForCausalLM"
    # Whether eval_loss is a per-token language-model loss (perplexity is meaningful).
    perplexity: bool = True
    # 4-bit loading or a bitsandbytes optimizer (the optimizer table says which).
    needs_bitsandbytes: bool = False
    # Why this plan cannot run with the installed libraries ("" when it can): the generated
    # scripts stop at start-up with this explanation instead of failing mid-way.
    # eval.py: how it loads the model, its dtype on a GPU, the weights' size, what samples hold,
    # and the contamination code shared with `finetune-gen check-contamination`.
    eval_loading: str = ""
    eval_dtype: str = "bfloat16"
    eval_weights_gb: float = 0.0
    samples_description: str = ""
    contamination_core: str = ""
    # The format partial that turns a row into messages (custom: chosen by its columns).
    format_partial: str = "alpaca"
    # Classification: the side texts are padded on (the head reads the last real token).
    padding_side: str = "right"
    # train.py's split, mixing and augmentation code (finetune_gen/data/split.py's shared core)
    # and the dataset.mix entries it samples from.
    split_core: str = ""
    mix: list[dict[str, Any]] = field(default_factory=list)


def training_arguments(plan: Plan) -> dict[str, Any]:
    """TrainingArguments keywords (transformers 5 names: eval_strategy, warmup_steps as a ratio)."""
    args: dict[str, Any] = {
        "num_train_epochs": plan.epochs,
        "per_device_train_batch_size": plan.micro_batch_size,
        "per_device_eval_batch_size": plan.schedule.eval_batch_size,
        "gradient_accumulation_steps": plan.gradient_accumulation_steps,
        "learning_rate": plan.learning_rate,
        "lr_scheduler_type": plan.lr_scheduler,
        "warmup_steps": plan.warmup_ratio,  # a float below 1 is a fraction of all steps
        "weight_decay": plan.weight_decay,
        "max_grad_norm": plan.max_grad_norm,
        "optim": plan.optimizer,
        "gradient_checkpointing": plan.gradient_checkpointing,
        "gradient_checkpointing_kwargs": {"use_reentrant": False},
        "logging_steps": plan.logging_steps,
        "eval_strategy": "steps",
        "eval_steps": plan.eval_steps,
        "save_strategy": "steps",
        "save_steps": plan.schedule.save_steps,
        "save_total_limit": plan.save_total_limit,
        # The result is the last model trained unless the plan asks for the best checkpoint
        # (also what early stopping keeps); the metric is set either way for EarlyStopping.
        "load_best_model_at_end": plan.load_best_model_at_end,
        "metric_for_best_model": "eval_loss",
        "seed": plan.seed,
        "run_name": plan.run_name,  # the name trackers (wandb, tensorboard) show
        # Count real (non-padding) tokens, for the tokens/s that train.py logs.
        "include_num_input_tokens_seen": "non_padding",
    }
    if plan.world_size > 1:
        # Frozen base weights never get gradients; DDP must not wait for them.
        args["ddp_find_unused_parameters"] = False
    if plan.launch.deepspeed_config:
        args["deepspeed"] = plan.launch.deepspeed_config
    if DISTRIBUTIONS[plan.distributed].is_fsdp:
        # FSDP2, one unit per decoder layer. Its own activation checkpointing replaces the
        # Trainer's (checkpointing twice breaks the backward pass).
        args["fsdp"] = True
        args["fsdp_config"] = {
            "version": 2,
            "transformer_layer_cls_to_wrap": [plan.decoder_layer_class],
            "cpu_ram_efficient_loading": True,
            "cpu_offload": plan.cpu_offload != "none",
            "activation_checkpointing": plan.gradient_checkpointing,
        }
        args["gradient_checkpointing"] = False
    return args


def peft_arguments(plan: Plan) -> dict[str, Any]:
    """Keyword arguments of the method's peft config class (peft 0.17+ names)."""
    task = TASKS[plan.task_type].peft_task_type
    if plan.method in ("prefix_tuning", "prompt_tuning"):
        kwargs: dict[str, Any] = {"num_virtual_tokens": plan.num_virtual_tokens, "task_type": task}
        if plan.method == "prompt_tuning":
            # TEXT initialisation would load a tokenizer by name; random needs nothing else.
            kwargs["prompt_tuning_init"] = "RANDOM"
        return kwargs
    if plan.method == "ia3":
        # IA3 rescales keys/queries, values and the feed-forward output (the IA3 paper). The
        # modules are peft's defaults for the architecture, named so the script does not depend
        # on peft's table; the planner counted trainable parameters with the same table.
        modules = ia3_modules(plan.model_type)
        if modules is None:
            raise ValueError(
                f"no IA3 modules for model_type {plan.model_type!r}"
            )  # the planner refuses these
        targets, feedforward = modules
        return {"target_modules": targets, "feedforward_modules": feedforward, "task_type": task}
    if plan.lora is None:
        return {"task_type": task}
    if METHODS[plan.method].adapter in ("loha", "lokr"):
        return {
            "r": plan.lora.r,
            "alpha": plan.lora.alpha,
            "rank_dropout": plan.lora.dropout,
            "target_modules": plan.lora.target_modules,
            "task_type": task,
        }
    kwargs = {
        "r": plan.lora.r,
        "lora_alpha": plan.lora.alpha,
        "lora_dropout": plan.lora.dropout,
        "target_modules": plan.lora.target_modules,
        "bias": "none",
        "task_type": task,
    }
    if plan.lora.use_dora:
        kwargs["use_dora"] = True
    kwargs.update(METHODS[plan.method].peft_options)
    return kwargs


def build_view(plan: Plan) -> View:
    task = TASKS[plan.task_type]
    auto_model = task.auto_model_class
    transformers_names = [
        auto_model,
        "AutoTokenizer",
        "Trainer",
        "TrainerCallback",
        "TrainingArguments",
    ]
    if plan.early_stopping_patience:
        transformers_names.append("EarlyStoppingCallback")
    imports = []
    if plan.is_peft:
        peft_names = {METHODS[plan.method].peft_config_class, "get_peft_model"}
        if plan.quantization:
            peft_names.add("prepare_model_for_kbit_training")
            transformers_names.append("BitsAndBytesConfig")
        imports.append(f"from peft import {', '.join(sorted(peft_names))}")
    language_model = not task.classifies  # trained on TRL's SFTTrainer (classification: Trainer)
    if language_model:  # SFTTrainer and SFTConfig take their place
        transformers_names = [
            n for n in transformers_names if n != "TrainingArguments"  # Trainer: its own loss
        ]
    imports.append(f"from transformers import {', '.join(sorted(transformers_names))}")
    if language_model:
        imports.append("from trl import SFTConfig, SFTTrainer")
        imports.append("from trl.trainer.sft_trainer import DataCollatorForLanguageModeling")
    if PROMPT_FORMATS[plan.prompt_format].chat:
        imports.insert(0, "from jinja2 import TemplateError")

    loss_on = task.loss_on
    if task.raw_text:
        loss_on += ", " + ("packed into full blocks" if plan.packing else "one text per sequence")
    features = [
        f"loads {plan.base_model} with {METHODS[plan.method].title}",
        f"reads {plan.dataset.path} ({plan.dataset.format}); "
        f"{plan.dataset.train_split:g} for training, {plan.dataset.eval_split:g} held out for evaluation",
        f"computes the loss on {loss_on}",
        f"micro-batch {plan.micro_batch_size} x {plan.gradient_accumulation_steps} accumulation steps"
        f" x {plan.world_size} GPU(s) = {plan.effective_batch_size} sequences per optimizer step",
        f"evaluates {plan.schedule.eval_examples} held-out rows every {plan.eval_steps} step(s); "
        f"saves a checkpoint every {plan.schedule.save_steps} step(s) (the newest {plan.save_total_limit} kept)"
        ", then the result, the tokenizer and the metrics",
        "the result is "
        + (
            "the checkpoint with the lowest eval_loss"
            if plan.load_best_model_at_end
            else "the last model trained"
        )
        + (
            f"; early stopping after {plan.early_stopping_patience} evaluations without improvement"
            if plan.early_stopping_patience
            else ""
        ),
    ]
    if (
        not plan.is_peft
        and plan.precision != "fp32"
        and not DISTRIBUTIONS[plan.distributed].engine_keeps_masters
    ):
        features.append(
            "fp32 master weights with " + plan.precision + " autocast"
            if plan.fp32_master_weights
            else "pure bf16 weights and optimizer states (a fallback: small updates round away)"
        )
    method_kind = METHODS[plan.method].partial
    view = View(
        task=task,
        prompt=PROMPT_FORMATS[plan.prompt_format],
        task_kind=task.partial,
        method_kind=method_kind,
        method_title=METHODS[plan.method].title,
        artifact="adapter" if plan.is_peft else "model",
        auto_model_class=auto_model,
        imports=imports,
        features=features,
        training_args=training_arguments(plan),
        format_partial=FORMATS[plan.dataset.format].partial_for(plan.dataset.columns),
        padding_side=(
            "left" if task.classifies and METHODS[plan.method].feeds_embeddings else "right"
        ),
    )
    if language_model:
        view.trainer_base, view.config_class = "LanguageModelTrainer", "SFTConfig"
    if plan.is_peft:
        view.peft_config_class = METHODS[plan.method].peft_config_class
        view.peft_kwargs = peft_arguments(plan)
        if view.peft_config_class != "LoraConfig":
            view.new_token_training = "modules_to_save"
    view.text_fields = task.text_fields(plan.dataset.columns)
    view.auto_peft_class = task.auto_peft_class
    view.perplexity = task.perplexity
    view.needs_bitsandbytes = bool(plan.quantization) or needs_bitsandbytes(plan.optimizer)
    _eval_view(plan, view)
    _data_view(plan, view)
    if plan.quantization:
        view.bnb_kwargs = {
            "load_in_4bit": True,
            "bnb_4bit_quant_type": plan.quantization.quant_type,
            "bnb_4bit_use_double_quant": plan.quantization.double_quant,
            "bnb_4bit_compute_dtype": plan.quantization.compute_dtype,
            "bnb_4bit_quant_storage": plan.quantization.storage_dtype,
        }
    return view


def _data_view(plan: Plan, view: View) -> None:
    """train.py's data preparation: the shared split core, the mixed datasets, what it does."""
    from finetune_gen.data.split import core_source

    data = plan.dataset
    names = ["SplitError", "split_counts", "split_indices"]
    if data.stratify:
        names.append("stratified_indices")
    if data.mix:
        names += ["mix_row_counts", "sample_indices"]
    if data.augment.oversample:
        names.append("oversample_indices")
    if data.remove_test_near_duplicates:
        names += ["normalize", "shingles", "row_text", "near_duplicate_indices"]
    view.split_core = core_source(*names)
    view.mix = [
        {"path": m.path, "columns": m.columns, "weight": m.weight, "rows": m.rows} for m in data.mix
    ]
    if data.test_split:
        view.features.append(
            f"holds out {data.test_split:g} of the rows as a test set (test_rows.jsonl in the output "
            "folder), never trained on; eval.py evaluates on it"
        )
    if data.stratify:
        view.features.append("splits by label: every split keeps each class's share")
    if data.remove_test_near_duplicates:
        view.features.append(
            f"drops training rows that are near duplicates of test rows (MinHash Jaccard >= {data.near_dup_threshold:g})"
        )
    for m in data.mix:
        amount = f"a {m.weight:g} share of the training rows" if m.weight else f"{m.rows} rows"
        view.features.append(
            f"mixes in {amount} from {m.path} (seeded; ~{m.planned_rows} rows planned)"
        )
    augment = data.augment
    if augment.oversample:
        view.features.append(
            "oversamples the smaller classes up to the largest one (training rows only)"
        )
    if augment.system_prompts:
        view.features.append(
            f"gives each training row one of {len(augment.system_prompts)} system prompts (seeded)"
        )
    if augment.instruction_templates:
        view.features.append(
            f"rewrites each training prompt with one of {len(augment.instruction_templates)} templates (seeded)"
        )


def _eval_view(plan: Plan, view: View) -> None:
    from finetune_gen.data.contamination import core_source
    from finetune_gen.render.evaluation import eval_weights_gb

    dtype = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}[plan.precision]
    if plan.quantization:
        dtype = plan.quantization.compute_dtype
    view.eval_dtype = dtype
    view.eval_weights_gb = eval_weights_gb(plan)
    base = (
        f"the adapter over {doc_text(plan.base_model)}"  # docstring text: escaped
        + (" loaded in 4-bit NF4 (the QLoRA base it was trained on)" if plan.quantization else "")
        if plan.is_peft
        else "the saved full model"
    )
    view.eval_loading = (
        f"{base}, in {dtype} on a GPU (fp32 on the CPU), with a device map over the GPUs when the "
        f"~{view.eval_weights_gb:g} GB of weights do not fit one"
    )
    view.samples_description = TASKS[plan.task_type].samples
    view.contamination_core = core_source()


def _black_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("black")
    except PackageNotFoundError:
        return "unknown"


def _cache_root() -> Path | None:
    """~/.cache/finetune-gen (or $XDG_CACHE_HOME's); None with FINETUNE_GEN_NO_CACHE set."""
    if os.environ.get("FINETUNE_GEN_NO_CACHE"):
        return None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "finetune-gen"


def _format_cache() -> Path | None:
    root = _cache_root()
    return root / f"black-{_black_version()}" if root is not None else None


def format_python(source: str, name: str) -> str:
    """black's output for ``source``, from a cache keyed by the exact input when it was seen.

    black is most of `generate`'s time. Its output depends only on its input and version, so
    a file that did not change since the last generation (eval.py and probe.py after a spec
    edit, every file on `generate --check`) is not formatted again; in a file that changed,
    only its changed top-level chunks are (:mod:`finetune_gen.render.formatting`).
    """
    cache = _format_cache()
    entry = cache / (hashlib.sha256(source.encode("utf-8")).hexdigest() + ".py") if cache else None
    if entry is not None:
        try:
            return entry.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            pass
    try:
        formatted = format_source(source, cache)
    except NotPython as error:  # a template bug, never user input
        raise RuntimeError(f"generated {name} is not valid Python: {error}") from error
    if entry is not None:
        try:
            entry.parent.mkdir(parents=True, exist_ok=True)
            temporary = entry.with_name(f".{entry.name}.{os.getpid()}")
            temporary.write_text(formatted, encoding="utf-8")
            temporary.replace(entry)
        except OSError:
            pass  # a read-only home: format every time
    return formatted


def render_files(plan: Plan, resources: Resources, evaluation: dict[str, Any]) -> dict[str, str]:
    """Every file of the run folder, by relative path, in a stable order."""
    env = environment()
    view = build_view(plan)
    # The spec's file name, made printable and short; each template quotes it for its language.
    header = f"Generated by finetune-gen {__version__} from {one_line(plan.spec_name, limit=80)}."
    context = {
        "plan": plan,
        "view": view,
        "resources": resources,
        "evaluation": evaluation,
        "header": header,
        "after": after_training(plan, resources),
    }
    outputs = outputs_for(plan)
    context["files"] = [output.name for output in outputs]
    context["readme_files"] = readme_rows(plan, context["after"])
    data = {"eval_plan.json": evaluation, "resources.json": resources.to_dict()}
    files: dict[str, str] = {}
    for output in outputs:
        if not output.template:  # data, written as JSON
            files[output.name] = json.dumps(data[output.name], indent=2, sort_keys=True) + "\n"
            continue
        text = env.get_template(output.template).render(**context)
        if output.name.endswith(".py"):
            text = format_python(text, output.name)
        files[output.name] = text
    return dict(sorted(files.items()))
