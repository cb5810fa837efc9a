"""The spec a user writes (contract section 1); `spec.load` reads it from YAML or JSON.

The models are forgiving where users are (``vram_per_gpu: 24GB``, ``24 GiB`` or ``24``) and
strict where a typo would silently change the run (unknown keys are rejected with the closest
valid name). Every validation problem becomes one ``path.to.field: message`` line.
"""

from __future__ import annotations

import difflib
import math
import re
from enum import Enum
from typing import Annotated, Any, Literal, Union, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from finetune_gen.errors import SpecError, short_repr
from finetune_gen.knowledge.optimizers import LR_SCHEDULERS, OPTIMIZERS
from finetune_gen.variants.distribution import DISTRIBUTION_NAMES
from finetune_gen.variants.formats import FORMAT_NAMES
from finetune_gen.variants.methods import METHOD_NAMES
from finetune_gen.variants.tasks import TASK_NAMES

# The registries' keys, in their order (the schema's enums and the error messages follow).
TaskType = Enum("TaskType", [(name, name) for name in TASK_NAMES], type=str, module=__name__)
DatasetFormat = Enum(
    "DatasetFormat", [(name, name) for name in FORMAT_NAMES], type=str, module=__name__
)


Method = Literal[METHOD_NAMES]  # type: ignore[valid-type]  # the registry's keys
METHODS: tuple[str, ...] = get_args(Method)
Distributed = Literal[("auto", *DISTRIBUTION_NAMES)]  # type: ignore[valid-type]  # "auto" + the registry
CpuOffload = Literal["none", "optimizer", "all"]
Precision = Literal["bf16", "fp16", "fp32"]
OnNan = Literal["stop", "rollback"]
OomGuard = Literal["off", "first_steps", "any_step"]
# Experiment trackers the Trainer reports to (TrainingArguments.report_to names).
Tracker = Literal["none", "tensorboard", "wandb", "mlflow", "trackio"]
COLUMN_ROLES = ("prompt", "response", "text", "label", "messages", "system", "input")


# Longest string a spec field may hold: paths and ids longer than this are no real paths (PATH_MAX).
MAX_STRING = 4096


def _check_text(value: Any) -> None:
    """Strings reach paths, code and configs: no NUL, no unpaired surrogate, bounded length."""
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("contains a NUL character, which no path or name can hold")
        if any("\ud800" <= ch <= "\udfff" for ch in value):
            raise ValueError("contains an unpaired surrogate (not valid Unicode text)")
        if len(value) > MAX_STRING:
            raise ValueError(f"is {len(value)} characters long; at most {MAX_STRING} are accepted")
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key)
            _check_text(item)
    elif isinstance(value, list):
        for item in value:
            _check_text(item)


def _type_args(annotation: Any) -> tuple[Any, ...]:
    args = get_args(annotation)
    return tuple(a for arg in args for a in _type_args(arg)) if args else (annotation,)


class _Strict(BaseModel):
    # Infinite and NaN numbers make no sense anywhere in a spec (epochs: .inf, vram: .nan).
    model_config = ConfigDict(extra="forbid", validate_default=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _plain_values(cls, value: Any, info: ValidationInfo) -> Any:
        """No booleans where numbers are expected (YAML's `true` would become 1); sane strings."""
        if isinstance(value, bool) and info.field_name:
            kinds = _type_args(cls.model_fields[info.field_name].annotation)
            if bool not in kinds and any(k in (int, float) for k in kinds):
                raise ValueError(f"expected a number, got the boolean {str(value).lower()}")
        _check_text(value)
        return value


_VRAM_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(gib|gb|g|mib|mb)?\s*$", re.IGNORECASE)
_UNIT_BYTES = {None: 1e9, "gb": 1e9, "g": 1e9, "gib": 2**30, "mb": 1e6, "mib": 2**20}


def parse_vram_gb(value: Union[str, int, float]) -> float:
    """Return memory in GB (10^9 bytes): "24GB" -> 24.0, "24 GiB" -> 25.77, 80 -> 80.0.

    "GB" and "G" are read as 10^9 bytes: cards sold as "24 GB" have 24 GiB, so this errs
    on the side of planning for slightly less memory than is there.
    """
    if isinstance(value, bool):
        raise ValueError("expected a size such as 24GB, 24 GiB or 24")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise ValueError("must be a finite size such as 24GB")
        if value <= 0:
            raise ValueError("must be greater than 0")
        return float(value)
    match = _VRAM_RE.match(str(value))
    if not match:
        raise ValueError(f"cannot read {value!r} as a size; write e.g. 24GB, 24 GiB, 80G or 24")
    number, unit = float(match.group(1)), match.group(2)
    if not math.isfinite(number):
        raise ValueError("must be a finite size such as 24GB")
    if number <= 0:
        raise ValueError("must be greater than 0")
    return round(number * _UNIT_BYTES[unit.lower() if unit else None] / 1e9, 3)


def _one_of(value: str | None, names: tuple[str, ...], what: str) -> str | None:
    if value is None or value in names:
        return value
    hint = difflib.get_close_matches(value, names, n=1)
    extra = f"; did you mean {hint[0]!r}?" if hint else ""
    raise ValueError(f"unknown {what} {short_repr(value)}{extra} (known: {', '.join(names)})")


class DatasetSpec(_Strict):
    path: str = Field(description="Local .json/.jsonl/.csv/.parquet file, or a hub dataset id.")
    format: DatasetFormat = Field(description="alpaca | sharegpt | chatml | custom")
    train_split: float = Field(
        0.9, gt=0, le=1, description="Fraction of the rows used for training."
    )
    eval_split: float = Field(
        0.1, ge=0, lt=1, description="Fraction of the rows held out for evaluation."
    )
    columns: dict[str, str] | None = Field(
        None,
        description="Field mapping for `custom` (roles: prompt, response, text, label, messages, system, input).",
    )
    num_examples: int | None = Field(
        None, gt=0, le=10**12, description="Rows in the dataset, when the file is not at hand."
    )
    avg_tokens_per_example: int | None = Field(
        None, gt=0, le=10**7, description="Mean tokens per row, when the file is not at hand."
    )

    # Dataset preparation (issue 14): test split, stratification, near-duplicate handling, mixing.
    test_split: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Fraction held out as a test set: written out, never trained on.",
    )
    stratify: bool = Field(
        False, description="classification: split train/eval/test keeping each class's share."
    )
    near_dup_threshold: float | None = Field(
        None,
        gt=0,
        le=1,
        description="MinHash Jaccard threshold for near duplicates (check-data; default 0.4).",
    )
    remove_test_near_duplicates: bool = Field(
        False, description="Drop training rows that are near duplicates of test rows."
    )
    mix: list["MixSpec"] | None = Field(
        None,
        description="Extra datasets sampled into training (against forgetting), each with a weight or a row count.",
    )
    augment: "AugmentSpec | None" = Field(
        None, description="Cheap augmentations of the training rows, applied by train.py (seeded)."
    )
    report: str | None = Field(
        None,
        description="A `check-data --json` report of this dataset: the planner uses its row count and token lengths.",
    )
    system_message: Literal["merge", "drop", "error"] = Field(
        "merge",
        description="System messages when the chat template has no system role (Gemma 2, Mistral"
        " v0.1): merge them into the first user turn, drop them, or stop with an error.",
    )
    skip_bad_rows: bool = Field(
        False,
        description="train.py skips (and counts) malformed rows instead of stopping on them.",
    )

    @field_validator("columns")
    @classmethod
    def _known_roles(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for role in value or {}:
            if role not in COLUMN_ROLES:
                hint = difflib.get_close_matches(role, COLUMN_ROLES, n=1)
                extra = f"; did you mean {hint[0]!r}?" if hint else ""
                raise ValueError(
                    f"unknown column role {role!r} (roles: {', '.join(COLUMN_ROLES)}){extra}"
                )
        return value

    @model_validator(mode="after")
    def _splits_fit(self) -> "DatasetSpec":
        if self.train_split + self.eval_split > 1.0 + 1e-9:
            raise ValueError("train_split + eval_split must not exceed 1")
        if self.test_split and self.train_split + self.eval_split + self.test_split > 1.0 + 1e-9:
            raise ValueError("train_split + eval_split + test_split must not exceed 1")
        weights = sum(m.weight or 0 for m in self.mix or [])
        if weights >= 1:
            raise ValueError(
                "mix: the weights must add up to less than 1 (the rest is this dataset)"
            )
        if self.format == DatasetFormat.custom and not self.columns:
            raise ValueError(
                "format 'custom' needs a `columns` mapping, e.g. {prompt: question, response: answer}"
            )
        return self


class MixSpec(_Strict):
    """One extra dataset mixed into training: `weight` (share of the training rows) or `rows`."""

    path: str = Field(description="Local .json/.jsonl/.csv/.parquet file, or a hub dataset id.")
    format: DatasetFormat = Field(description="alpaca | sharegpt | chatml | custom")
    columns: dict[str, str] | None = Field(None, description="Field mapping for `custom`.")
    weight: float | None = Field(
        None, gt=0, lt=1, description="Share of the mixed training set drawn from this dataset."
    )
    rows: int | None = Field(None, gt=0, description="Rows drawn from this dataset.")

    @model_validator(mode="after")
    def _one_amount(self) -> "MixSpec":
        if (self.weight is None) == (self.rows is None):
            raise ValueError("give exactly one of `weight` (e.g. 0.2) or `rows`")
        return self


class AugmentSpec(_Strict):
    """Training-row augmentations train.py applies (seeded) and reports with their row counts."""

    system_prompts: list[str] | None = Field(
        None,
        min_length=1,
        description="Each training row gets one of these system prompts (seeded choice); chat and instruction tasks.",
    )
    instruction_templates: list[str] | None = Field(
        None,
        min_length=1,
        description='Each training prompt is rewritten with one of these templates, e.g. "Question: {prompt}".',
    )
    oversample: bool = Field(
        False,
        description="classification: repeat rows of the smaller classes up to the largest class's count.",
    )
    paraphrase: bool = Field(
        False,
        description="Write augment.py: paraphrases the training prompts with a local model into a new file (for check-data, then dataset.mix).",
    )
    paraphrase_model: str | None = Field(
        None, description="The model augment.py paraphrases with (default: base_model)."
    )

    @field_validator("system_prompts", "instruction_templates")
    @classmethod
    def _texts(cls, value: list[str] | None, info: Any) -> list[str] | None:
        for index, text in enumerate(value or []):
            if not text.strip():
                raise ValueError(f"item {index} is empty")
            if info.field_name == "instruction_templates" and "{prompt}" not in text:
                raise ValueError(f"item {index} must contain {{prompt}}, where the prompt goes")
        return value


DatasetSpec.model_rebuild()


class LoraSpec(_Strict):
    r: int | None = Field(None, gt=0, le=1024, description="Rank.")
    alpha: float | None = Field(None, gt=0, le=1e6, description="Scaling; the planner uses 2 x r.")
    dropout: float | None = Field(None, ge=0, lt=1)
    target_modules: list[str] | str | None = Field(
        None, description='Module names, "all-linear", or a preset: minimal | recommended | all'
    )


class TrainingConfig(_Strict):
    method: Method | None = Field(
        None, description="Unset: the planner picks the best method that fits."
    )
    epochs: float | None = Field(None, gt=0, le=1000)
    batch_size: int | None = Field(None, gt=0, le=65536, description="Per-device micro-batch.")
    learning_rate: float | None = Field(None, gt=0, lt=1)
    max_seq_length: int | None = Field(None, gt=0, le=10**7)
    gradient_accumulation_steps: int | None = Field(None, gt=0, le=100_000)
    gradient_checkpointing: bool | None = None
    optimizer: str | None = Field(
        None, description="A Hugging Face `optim` name, e.g. adamw_torch_fused."
    )
    precision: Precision | None = None
    packing: bool | None = None
    lora: LoraSpec | None = None
    distributed: Distributed = "auto"
    cpu_offload: CpuOffload | None = None
    num_virtual_tokens: int | None = Field(
        None, gt=0, le=100_000, description="prefix_tuning / prompt_tuning only."
    )
    freeze_trainable_layers: int | None = Field(
        None, gt=0, le=100_000, description="freeze only: top layers trained."
    )
    warmup_ratio: float | None = Field(None, ge=0, lt=1)
    weight_decay: float | None = Field(None, ge=0, le=10)
    lr_scheduler: str | None = Field(
        None, description="A transformers lr_scheduler_type: " + ", ".join(LR_SCHEDULERS) + "."
    )
    max_grad_norm: float | None = Field(None, gt=0, le=1e6)
    # numpy's generator, seeded by the Trainer, takes 0 <= seed < 2**32.
    seed: int = Field(42, ge=0, lt=2**32)
    save_total_limit: int | None = Field(None, gt=0, le=10_000)
    # Run-time guards of the generated train.py (finetune_gen/planning/guards.py plans the unset ones).
    on_nan: OnNan | None = Field(
        None,
        description="A non-finite loss or gradient norm, or a loss spike: stop (keep the last "
        "good checkpoint) or rollback (restart from it with a lower learning rate).",
    )
    max_rollbacks: int | None = Field(
        None, ge=0, le=20, description="on_nan: rollback only: restarts before giving up."
    )
    loss_spike_factor: float | None = Field(
        None,
        ge=0,
        le=1e6,
        description="A step loss above this many times the running median counts as a "
        "divergence (0: off).",
    )
    oom_guard: OomGuard | None = Field(
        None,
        description="CUDA out of memory: retry with half the micro-batch (same effective "
        "batch), then gradient checkpointing; in the first steps, at any step, or off.",
    )
    load_best_model_at_end: bool | None = Field(
        None,
        description="Keep the checkpoint with the lowest eval_loss as the result (default: the last one).",
    )
    early_stopping_patience: int | None = Field(
        None,
        gt=0,
        description="Stop after N evaluations without a lower eval_loss (implies load_best_model_at_end).",
    )
    report_to: list[Tracker] | Tracker | None = Field(
        None,
        description="Experiment trackers: tensorboard (the default), wandb, mlflow, trackio, or none.",
    )
    wandb_project: str | None = Field(
        None,
        description="A Weights & Biases project: adds wandb to report_to (offline without a key).",
    )

    @field_validator("optimizer")
    @classmethod
    def _known_optimizer(cls, value: str | None) -> str | None:
        return _one_of(value, tuple(OPTIMIZERS), "optimizer")

    @field_validator("lr_scheduler")
    @classmethod
    def _known_scheduler(cls, value: str | None) -> str | None:
        return _one_of(value, LR_SCHEDULERS, "scheduler")

    @field_validator("loss_spike_factor")
    @classmethod
    def _spike_factor(cls, value: float | None) -> float | None:
        if value is not None and 0 < value <= 1:
            raise ValueError("must be above 1 (a multiple of the running median), or 0 for off")
        return value


class HardwareSpec(_Strict):
    gpus: int = Field(1, gt=0, le=1024, description="GPUs per node.")
    vram_per_gpu: Annotated[
        float | None,
        WithJsonSchema(
            {
                "anyOf": [
                    {"type": "number", "exclusiveMinimum": 0},
                    {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*([GgMm][Ii]?[Bb]?)?\s*$"},
                    {"type": "null"},
                ]
            }
        ),
    ] = Field(None, description='"24GB", "24 GiB", "80G" or a number of GB.')
    gpu_type: str | None = Field(
        None, min_length=1, description="A catalog name: a100_80gb, h100_80gb, rtx_4090, t4, ..."
    )
    nodes: int = Field(1, gt=0, le=1024)
    price_per_gpu_hour: float | None = Field(
        None, ge=0, le=100_000, description="USD; overrides the catalog price."
    )

    @field_validator("vram_per_gpu", mode="before")
    @classmethod
    def _parse_vram(cls, value: Any) -> float | None:
        return None if value is None else parse_vram_gb(value)


class Spec(_Strict):
    base_model: str = Field(description="Hugging Face id, or a local directory with config.json.")
    task_type: TaskType
    dataset: DatasetSpec
    training_config: TrainingConfig = Field(default_factory=TrainingConfig)
    hardware: HardwareSpec | None = Field(
        None, description="Unset: recommend the cheapest configuration."
    )
    trust_remote_code: bool = False
    output_dir: str = Field(
        "outputs", description="Where train.py writes checkpoints and the result."
    )
    run_name: str | None = None

    @field_validator("training_config", mode="before")
    @classmethod
    def _empty_section(cls, value: Any) -> Any:
        return {} if value is None else value  # a section whose keys are all commented out

    @field_validator("base_model", "output_dir", "run_name")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not value.strip():
            raise ValueError("must not be empty")
        return value


# ---------------------------------------------------------------- loading and messages


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model that owns the field at ``loc`` (for unknown-key suggestions)."""
    model: Any = Spec
    for part in loc[:-1]:
        if isinstance(part, int) or model is None:
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        annotation = field.annotation
        candidates = getattr(annotation, "__args__", (annotation,))
        model = next(
            (c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None
        )
    return model


def format_validation_error(error: ValidationError) -> list[str]:
    """One ``path.to.field: message`` line per problem, with a suggestion for unknown keys."""
    lines = []
    for item in error.errors():
        loc = tuple(
            p for p in item["loc"] if not (isinstance(p, str) and p.startswith("function-"))
        )
        path = ".".join(str(p) for p in loc) or "(top level)"
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            owner = _model_at(loc)
            names = list(owner.model_fields) if owner else []
            hint = difflib.get_close_matches(str(loc[-1]), names, n=1, cutoff=0.5)
            message = "unknown key" + (f"; did you mean {hint[0]!r}?" if hint else "")
            if names:
                message += f" (valid: {', '.join(names)})"
        elif item["type"] == "missing":
            message = "required field is missing"
        elif message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        elif item["type"] in ("enum", "literal_error"):
            expected = item.get("ctx", {}).get("expected", "")
            message = (
                f"expected one of {expected.replace(chr(39), '')}; got {short_repr(item['input'])}"
            )
        lines.append(f"{path}: {message}")
    return lines


def parse_spec(data: Any, *, source: str = "spec") -> Spec:
    if data is None:
        raise SpecError(f"{source}: the spec is empty (see `finetune-gen init` for a starter spec)")
    if not isinstance(data, dict):
        raise SpecError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return Spec.model_validate(data)
    except ValidationError as error:
        problems = format_validation_error(error)
        raise SpecError(f"{source} is not a valid spec", problems=problems) from None
