"""The planner's side of dataset preparation: checks of the preparation keys, the mixed
datasets' planned rows, and the numbers of a check-data report.

What train.py does with these (split, mix, oversample, augment) is finetune_gen/data/split.py's
shared core, rendered into it; here only counts and errors are produced.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finetune_gen.data.split import mix_counts, planned_train_rows
from finetune_gen.data.stats import read_stats, resolve_columns
from finetune_gen.errors import SpecError
from finetune_gen.models.plan import AugmentPlan, MixPlan

DEFAULT_NEAR_DUP_THRESHOLD = 0.4


def check_preparation(dataset: Any, task_type: str, columns: dict[str, str]) -> None:
    """Preparation keys that cannot apply to this task or format: `path: message` errors."""
    classification = task_type == "classification"
    if dataset.stratify and not classification:
        raise SpecError("dataset.stratify: needs task_type classification (a label to stratify by)")
    augment = dataset.augment
    if augment is None:
        return
    if augment.oversample and not classification:
        raise SpecError(
            "dataset.augment.oversample: needs task_type classification (classes to balance)"
        )
    if augment.system_prompts and task_type not in ("instruction", "chat"):
        raise SpecError("dataset.augment.system_prompts: needs task_type instruction or chat")
    if augment.paraphrase_model and not augment.paraphrase:
        raise SpecError(
            "dataset.augment.paraphrase_model: set dataset.augment.paraphrase: true to write augment.py"
        )
    if augment.paraphrase and (
        task_type not in ("instruction", "chat") or not ({"prompt", "messages"} & set(columns))
    ):
        raise SpecError(
            "dataset.augment.paraphrase: needs an instruction or chat task (prompts to paraphrase)"
        )
    if augment.instruction_templates and (
        task_type not in ("instruction", "chat") or "prompt" not in columns
    ):
        raise SpecError(
            "dataset.augment.instruction_templates: needs an instruction or chat task with a prompt "
            f"column (format alpaca, or custom with `prompt`); this one has {', '.join(sorted(columns))}"
        )


def augment_plan(dataset: Any) -> AugmentPlan:
    augment = dataset.augment
    if augment is None:
        return AugmentPlan()
    return AugmentPlan(
        system_prompts=list(augment.system_prompts or []),
        instruction_templates=list(augment.instruction_templates or []),
        oversample=augment.oversample,
        paraphrase=augment.paraphrase,
        paraphrase_model=augment.paraphrase_model,
    )


def mix_plans(
    dataset: Any, task_type: str, main_columns: dict[str, str], rows: int
) -> list[MixPlan]:
    """Each dataset.mix entry with its columns and the rows drawn for the planned training rows."""
    if not dataset.mix:
        return []
    main_train = planned_train_rows(
        rows, dataset.train_split, dataset.eval_split, dataset.test_split
    )
    counts = mix_counts(main_train, [(m.weight, m.rows) for m in dataset.mix])
    plans = []
    for index, (mix, count) in enumerate(zip(dataset.mix, counts)):
        where = f"dataset.mix[{index}]"
        if mix.format != dataset.format:
            raise SpecError(
                f"{where}.format: {mix.format.value!r} differs from dataset.format "
                f"{dataset.format.value!r}; train.py encodes one format: convert the file to "
                f"{dataset.format.value} (its fields may have other names: map them with `columns`)"
            )
        columns = resolve_columns(task_type, mix.format.value, mix.columns or dataset.columns)
        missing = sorted(set(main_columns) - set(columns))
        if missing:
            raise SpecError(
                f"{where}.columns: map the roles {', '.join(missing)} as dataset.columns does"
            )
        stats = read_stats(mix.path, task_type, mix.format.value, columns)
        if stats is not None and stats.problems:
            raise SpecError(
                f"{where}.path: {mix.path} does not match format {mix.format.value!r}",
                problems=stats.problems[:10],
            )
        if stats is None and _looks_local(mix.path):
            raise SpecError(f"{where}.path: {mix.path} not found")
        plans.append(
            MixPlan(
                path=mix.path,
                columns={role: columns[role] for role in main_columns},
                weight=mix.weight,
                rows=mix.rows,
                planned_rows=count,
                available_rows=stats.rows if stats else None,
                avg_tokens_per_example=stats.mean_tokens if stats else 0,
            )
        )
    return plans


def _looks_local(path: str) -> bool:
    return path.startswith((".", "/", "~")) or path.lower().endswith(
        (".json", ".jsonl", ".csv", ".parquet")
    )


@dataclass(frozen=True)
class ReportNumbers:
    """What the planner takes from a check-data report."""

    rows: int
    mean_tokens: int
    p99_tokens: int
    tokenizer: str | None  # None: check-data estimated the lengths too
    note: str


def read_report(report_path: str, data_path: str) -> tuple[ReportNumbers | None, str | None]:
    """(numbers, None) from a check-data --json report that describes data_path, or
    (None, why not) when it describes another file or is older than the data."""
    path = Path(report_path)
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpecError(f"dataset.report: {report_path} not found") from None
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise SpecError(
            f"dataset.report: {report_path} is not a check-data --json report ({error})"
        ) from None
    if (
        not isinstance(report, dict)
        or not isinstance(report.get("lengths"), dict)
        or "rows" not in report
    ):
        raise SpecError(
            f"dataset.report: {report_path} is not a check-data --json report (run check-data --json)"
        )
    data = Path(data_path)
    if not data.is_file():
        return None, f"{data_path} is not a local file"
    clean = report.get("clean") or {}
    described = report.get("data_file") or report.get("path") or ""
    if clean.get("output") and Path(clean["output"]).name == data.name:
        rows = int(clean["rows_out"])
        what = f"rows after cleaning ({clean['rows_in']} checked, {clean['dropped']} dropped)"
    elif Path(str(described)).name == data.name and report.get("data_bytes") in (
        None,
        data.stat().st_size,
    ):
        rows = int(report.get("valid_rows", report["rows"]))
        what = "valid rows"
    else:
        return None, f"it describes {described or 'another file'}, not {data.name}"
    if os.path.getmtime(data) > os.path.getmtime(path):
        return (
            None,
            f"{data.name} changed after the report was written; run check-data --json again",
        )
    lengths = report["lengths"]
    measured = not lengths.get("estimated", True)
    tokenizer = str(lengths.get("tokenizer")) if measured else None
    mean = max(1, round(float(lengths.get("mean") or 1)))
    p99 = max(1, int(lengths.get("p99") or mean))
    note = (
        f"check-data report {path.name}: {rows} {what}; token lengths "
        + (f"measured with {tokenizer}" if measured else "estimated by check-data")
        + f" (mean {mean}, p99 {p99})"
    )
    return ReportNumbers(rows, mean, p99, tokenizer, note), None
