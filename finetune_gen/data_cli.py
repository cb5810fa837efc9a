"""The `check-data` command's work: read the options or the spec, run the check, print, clean."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import click

from finetune_gen.data.check import MIN_PER_CLASS, NEAR_DUP_THRESHOLD
from finetune_gen.data.stats import resolve_columns
from finetune_gen.errors import FinetuneGenError, SpecError
from finetune_gen.variants.tasks import TASKS

SPEC_SUFFIXES = (".yaml", ".yml", ".json")
TASK_ROLES = {name: entry.roles for name, entry in TASKS.items()}


def parse_columns(args: tuple[str, ...]) -> dict[str, str]:
    from finetune_gen.models.spec import COLUMN_ROLES

    columns: dict[str, str] = {}
    for arg in args:
        for item in filter(None, (part.strip() for part in arg.split(","))):
            role, sep, name = item.partition("=")
            if not sep or not role.strip() or not name.strip():
                raise SpecError(f"--columns: expected ROLE=FIELD, got {item[:60]!r}")
            if role.strip() not in COLUMN_ROLES:
                raise SpecError(
                    f"--columns: unknown role {role.strip()[:40]!r} (roles: {', '.join(COLUMN_ROLES)})"
                )
            columns[role.strip()] = name.strip()
    return columns


def infer_task(columns: dict[str, str]) -> str:
    if "label" in columns:
        return "classification"
    if "messages" in columns:
        return "chat"
    if "text" in columns and "response" not in columns:
        return "generation"
    return "instruction"


def _check_roles(task: str, data_format: str, columns: dict[str, str]) -> None:
    needs = TASK_ROLES[task]
    if not any(all(role in columns for role in option) for option in needs):
        wanted = " or ".join("+".join(option) for option in needs)
        raise SpecError(
            f"--columns: task {task} needs the column roles {wanted}; format {data_format} gives "
            f"{', '.join(sorted(columns)) or 'none'}"
        )


def _splits(
    spec: Any, rows: int, data_path: Path | None = None, columns: dict[str, str] | None = None
) -> dict[str, Any]:
    """The split train.py will make of these rows (row numbers of the test set, 1-based);
    stratified by the label column when the spec says so (the same code as train.py's)."""
    from finetune_gen.data.split import split_rows, stratified_split

    ds = spec.dataset
    shares = {
        "train_split": ds.train_split,
        "eval_split": ds.eval_split,
        "test_split": ds.test_split,
        "seed": spec.training_config.seed,
    }
    try:
        if ds.stratify and data_path is not None and columns and "label" in columns:
            from finetune_gen.data.read import DataReader

            labels = [
                record.value.get(columns["label"])
                for record in DataReader(data_path)
                if record.problem is None and isinstance(record.value, dict)
            ]
            splits = stratified_split(labels, **shares)
        else:
            splits = split_rows(rows, **shares)
    except SpecError as error:
        return {"error": error.message}
    return {
        "stratified": bool(ds.stratify),
        "seed": spec.training_config.seed,
        "train": len(splits.train),
        "eval": len(splits.eval),
        "test": len(splits.test),
        "test_rows": [i + 1 for i in splits.test],
    }


def check_data_command(
    source: Path,
    *,
    data_format: str | None,
    column_args: tuple[str, ...],
    task_type: str | None,
    tokenizer_dir: Path | None,
    max_seq_length: int | None,
    near_dup_threshold: float | None,
    min_per_class: int | None,
    as_json: bool,
    clean_out: Path | None,
) -> None:
    from finetune_gen.data.report import (
        has_tokenizer,
        problem_lines,
        run_check,
        summary_table,
    )

    is_data = data_format is not None or source.suffix.lower() in (".jsonl", ".csv", ".parquet")
    model_path, model_local = "", False
    if is_data:
        if data_format is None:
            raise SpecError(
                f"check-data: {source} is a data file; say its format with --format alpaca|sharegpt|chatml|custom"
            )
        explicit = parse_columns(column_args)
        if data_format == "custom" and not explicit:
            raise SpecError(
                "--columns: format custom needs a mapping, e.g. --columns prompt=question --columns response=answer"
            )
        base = resolve_columns(task_type or "instruction", data_format, explicit)
        task = task_type or infer_task(base)
        columns = resolve_columns(task, data_format, explicit)
        data_path, shown = source, str(source)
        threshold = near_dup_threshold or NEAR_DUP_THRESHOLD
        minimum = min_per_class or MIN_PER_CLASS
    else:
        if column_args:
            raise SpecError(
                "--columns: only with a data file and --format (a spec has dataset.columns)"
            )
        from finetune_gen.api import _localize
        from finetune_gen.spec.load import load_spec

        spec = load_spec(source)
        spec_dir = source.resolve().parent
        path, local = _localize(spec.dataset.path, spec_dir, is_dataset=True)
        if not local:
            raise SpecError(
                f"dataset.path: {spec.dataset.path} is not a local file; check-data reads local files only"
            )
        task = task_type or spec.task_type.value
        data_format = spec.dataset.format.value
        columns = resolve_columns(task, data_format, spec.dataset.columns)
        data_path, shown = Path(path), spec.dataset.path
        max_seq_length = max_seq_length or spec.training_config.max_seq_length
        threshold = (
            near_dup_threshold
            or getattr(spec.dataset, "near_dup_threshold", None)
            or NEAR_DUP_THRESHOLD
        )
        # Each class should be able to appear in the evaluation split.
        eval_minimum = math.ceil(1 / spec.dataset.eval_split) if spec.dataset.eval_split > 0 else 0
        minimum = min_per_class or max(MIN_PER_CLASS, eval_minimum)
        model_path, model_local = _localize(spec.base_model, spec_dir, is_dataset=False)
        if tokenizer_dir is None and model_local and has_tokenizer(model_path):
            tokenizer_dir = Path(model_path)
    _check_roles(task, data_format, columns)
    report, checker = run_check(
        data_path,
        task_type=task,
        data_format=data_format,
        columns=columns,
        tokenizer_dir=tokenizer_dir,
        max_seq_length=max_seq_length,
        near_dup_threshold=threshold,
        min_per_class=minimum,
    )
    report["path"] = shown
    # What dataset.report matches a training file by (finetune_gen/planning/data_prep.py).
    report["data_file"] = str(Path(data_path).resolve())
    report["data_bytes"] = Path(data_path).stat().st_size if Path(data_path).is_file() else None
    if report["rows"] == 0:
        raise SpecError(f"{shown}: no rows")
    if not is_data:
        report["splits"] = _splits(spec, report["rows"], Path(data_path), columns)
    label_problems: list[str] = []
    if (
        not is_data
        and task in ("instruction", "chat")
        and model_local
        and has_tokenizer(model_path)
    ):
        report["training_examples"], label_problems = _training_examples(source, spec)
    cleaned: dict[str, Any] | None = None
    if clean_out is not None:
        from finetune_gen.data.clean import write_clean

        cleaned = write_clean(data_path, clean_out, checker)
        report["clean"] = {k: cleaned[k] for k in ("output", "report", "rows_in", "rows_out")} | {
            "dropped": cleaned["dropped"]["count"]
        }
    if as_json:
        click.echo(json.dumps(report, indent=2, sort_keys=True, default=str))
    else:
        from rich.console import Console

        Console(soft_wrap=False).print(summary_table(report))
        from finetune_gen.render.quoting import (
            one_line,  # a value quoted from the data stays on its line
        )

        for warning in report["warnings"]:
            click.echo(f"warning: {one_line(warning, limit=2000)}")
        splits = report.get("splits")
        if splits and "error" not in splits:
            click.echo(
                f"split (seed {splits['seed']}): train {splits['train']}, eval {splits['eval']}, "
                f"test {splits['test']} rows"
                + (" (never trained on; --json lists them)" if splits["test"] else "")
            )
        exact, near = report["duplicates"]["exact"], report["duplicates"]["near"]
        for label, part in (("exact duplicates", exact), ("near duplicates", near)):
            for cluster in part["listed"][:5]:
                rows = ", ".join(map(str, cluster[:8])) + (" ..." if len(cluster) > 8 else "")
                click.echo(f"{label}: rows {rows}")
        for name, flag in report["quality"].items():
            if flag["count"]:
                click.echo(
                    f"flag {name}: rows {', '.join(map(str, flag['rows'][:10]))}"
                    + (" ..." if flag["count"] > 10 else "")
                )
        if cleaned is not None:
            click.echo(
                f"wrote {one_line(cleaned['output'])}: {cleaned['rows_out']} of {cleaned['rows_in']} rows "
                f"({cleaned['dropped']['count']} dropped, why in {cleaned['report']})"
            )
        if "training_examples" in report:
            from finetune_gen.label_check import label_lines

            examples = report["training_examples"]
            lines = (
                [f"training examples: not built: {examples['error']}"]
                if "error" in examples
                else label_lines(examples)
            )
            for line in lines:
                click.echo(line)
    if report["problems"]["count"] and cleaned is None:
        raise SpecError(
            f"{shown}: {report['problems']['rows']} of {report['rows']} rows do not match format {data_format!r}",
            problems=problem_lines(report),
        )
    if label_problems and cleaned is None:
        raise SpecError(
            f"{shown}: train.py would stop on these rows (its own label builder, run on the data)",
            problems=label_problems,
        )
    if not report["problems"]["count"] and not as_json:
        click.echo("format: ok")


def _training_examples(source: Path, spec: Any) -> tuple[dict[str, Any], list[str]]:
    """The generated train.py's label builder on the data (the model folder is local), and
    what in it would stop training; {"error": ...} when it cannot run (the reason why)."""
    try:
        from finetune_gen.label_check import label_problems, label_report

        report = label_report(source)
    except FinetuneGenError as error:  # the spec does not plan (nothing fits, ...)
        return {"error": str(error).splitlines()[0]}, []
    except ImportError as error:
        return {
            "error": f"needs the training stack (pip install 'finetune-gen[train]'): {error}"
        }, []
    except SystemExit as stop:  # train.py's own refusal (a template that renders nothing, ...)
        message = str(stop.code)
        return {"error": message}, [message]
    return report, label_problems(report, spec.dataset.skip_bad_rows)
