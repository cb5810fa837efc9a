"""The spec a user writes (contract section 1), and loading it from YAML or JSON.

The models are forgiving where users are (``vram_per_gpu: 24GB``, ``24 GiB`` or ``24``) and
strict where a typo would silently change the run (unknown keys are rejected with the closest
valid name). Every validation problem becomes one ``path.to.field: message`` line.
"""

from __future__ import annotations

import difflib
import json
import re
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from .errors import SpecError


class TaskType(str, Enum):
    instruction = "instruction"
    chat = "chat"
    classification = "classification"
    generation = "generation"


class DatasetFormat(str, Enum):
    alpaca = "alpaca"
    sharegpt = "sharegpt"
    chatml = "chatml"
    custom = "custom"


Method = Literal[
    "full",
    "lora",
    "qlora",
    "dora",
    "prefix_tuning",
    "prompt_tuning",
    "ia3",
    "loha",
    "lokr",
    "freeze",
]
METHODS: tuple[str, ...] = get_args(Method)
Distributed = Literal["auto", "none", "ddp", "fsdp", "deepspeed_zero2", "deepspeed_zero3"]
CpuOffload = Literal["none", "optimizer", "all"]
Precision = Literal["bf16", "fp16", "fp32"]
COLUMN_ROLES = ("prompt", "response", "text", "label", "messages", "system", "input")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


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
        if value <= 0:
            raise ValueError("must be greater than 0")
        return float(value)
    match = _VRAM_RE.match(str(value))
    if not match:
        raise ValueError(f"cannot read {value!r} as a size; write e.g. 24GB, 24 GiB, 80G or 24")
    number, unit = float(match.group(1)), match.group(2)
    if number <= 0:
        raise ValueError("must be greater than 0")
    return round(number * _UNIT_BYTES[unit.lower() if unit else None] / 1e9, 3)


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
        None, gt=0, description="Rows in the dataset, when the file is not at hand."
    )
    avg_tokens_per_example: int | None = Field(
        None, gt=0, description="Mean tokens per row, when the file is not at hand."
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
        if self.format == DatasetFormat.custom and not self.columns:
            raise ValueError(
                "format 'custom' needs a `columns` mapping, e.g. {prompt: question, response: answer}"
            )
        return self


class LoraSpec(_Strict):
    r: int | None = Field(None, gt=0, le=1024, description="Rank.")
    alpha: float | None = Field(None, gt=0, description="Scaling; the planner uses 2 x r.")
    dropout: float | None = Field(None, ge=0, lt=1)
    target_modules: list[str] | str | None = Field(
        None, description='Module names, "all-linear", or a preset: minimal | recommended | all'
    )


class TrainingConfig(_Strict):
    method: Method | None = Field(
        None, description="Unset: the planner picks the best method that fits."
    )
    epochs: float | None = Field(None, gt=0)
    batch_size: int | None = Field(None, gt=0, description="Per-device micro-batch.")
    learning_rate: float | None = Field(None, gt=0, lt=1)
    max_seq_length: int | None = Field(None, gt=0)
    gradient_accumulation_steps: int | None = Field(None, gt=0)
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
        None, gt=0, description="prefix_tuning / prompt_tuning only."
    )
    freeze_trainable_layers: int | None = Field(
        None, gt=0, description="freeze only: top layers trained."
    )
    warmup_ratio: float | None = Field(None, ge=0, lt=1)
    weight_decay: float | None = Field(None, ge=0)
    lr_scheduler: str | None = None
    max_grad_norm: float | None = Field(None, gt=0)
    seed: int = 42
    save_total_limit: int | None = Field(None, gt=0)


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
        None, description="A catalog name: a100_80gb, h100_80gb, rtx_4090, t4, ..."
    )
    nodes: int = Field(1, gt=0, le=1024)
    price_per_gpu_hour: float | None = Field(
        None, ge=0, description="USD; overrides the catalog price."
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

    @field_validator("base_model", "output_dir")
    @classmethod
    def _not_blank(cls, value: str) -> str:
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
            message = f"expected one of {expected.replace(chr(39), '')}; got {item['input']!r}"
        lines.append(f"{path}: {message}")
    return lines


def parse_spec(data: Any, *, source: str = "spec") -> Spec:
    if not isinstance(data, dict):
        raise SpecError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return Spec.model_validate(data)
    except ValidationError as error:
        problems = format_validation_error(error)
        raise SpecError(f"{source} is not a valid spec", problems=problems) from None


def read_spec_data(path: str | Path) -> Any:
    """Read YAML (safe loader only) or JSON; syntax errors name the line and column."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{path}: no such file") from None
    except (IsADirectoryError, UnicodeDecodeError, PermissionError) as error:
        raise SpecError(f"{path}: cannot read spec ({error})") from None
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            raise SpecError(
                f"{path}:{error.lineno}:{error.colno}: JSON syntax error: {error.msg}"
            ) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(error, "problem", None) or str(error)
        raise SpecError(f"{where}: YAML syntax error: {problem}") from None


def load_spec(path: str | Path) -> Spec:
    return parse_spec(read_spec_data(path), source=str(path))
