"""Running `check-data` on one file: the streaming pass with a progress bar, and the summary table.

The tokenizer (``--tokenizer DIR``, or the spec's local base model) is the only path that
imports transformers, and only when it is asked for.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from finetune_gen.data.check import MIN_PER_CLASS, NEAR_DUP_THRESHOLD, DataChecker
from finetune_gen.data.read import DataReader
from finetune_gen.errors import SpecError

PROGRESS_MIN_BYTES = 64 * 2**20  # a bar for files this large, or any file on a terminal


def load_tokenizer(directory: str | Path) -> Any:
    folder = Path(directory).expanduser()
    if not folder.is_dir():
        raise SpecError(f"--tokenizer: {directory} is not a folder with a tokenizer")
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(folder))
    except ImportError:
        raise SpecError(
            "--tokenizer: needs transformers (pip install 'finetune-gen[train]')"
        ) from None
    except Exception as error:  # transformers raises OSError/ValueError/... on an unusable folder
        raise SpecError(
            f"--tokenizer: cannot load a tokenizer from {directory} ({str(error)[:160]})"
        ) from None


def has_tokenizer(directory: str | Path) -> bool:
    folder = Path(directory)
    return folder.is_dir() and any(
        (folder / name).is_file()
        for name in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
    )


def run_check(
    path: str | Path,
    *,
    task_type: str,
    data_format: str,
    columns: dict[str, str],
    tokenizer_dir: str | Path | None = None,
    max_seq_length: int | None = None,
    near_dup_threshold: float = NEAR_DUP_THRESHOLD,
    min_per_class: int = MIN_PER_CLASS,
    progress: bool | None = None,
) -> tuple[dict[str, Any], DataChecker]:
    reader = DataReader(path)
    tokenizer = load_tokenizer(tokenizer_dir) if tokenizer_dir else None
    checker = DataChecker(
        task_type,
        data_format,
        columns,
        near_dup_threshold=near_dup_threshold,
        max_seq_length=max_seq_length,
        min_per_class=min_per_class,
        tokenizer=tokenizer,
        tokenizer_name=str(tokenizer_dir) if tokenizer_dir else None,
    )
    if progress is None:
        progress = sys.stderr.isatty() or reader.total_bytes >= PROGRESS_MIN_BYTES
    if progress:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        with Progress(
            TextColumn("checking {task.fields[rows]:,} rows"),
            BarColumn(),
            DownloadColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
        ) as bar:
            task = bar.add_task("check", total=reader.total_bytes, rows=0)
            for record in reader:
                checker.add(record)
                if checker.count % 2000 == 0:
                    bar.update(task, completed=reader.bytes_read, rows=checker.count)
    else:
        for record in reader:
            checker.add(record)
    report = checker.finish()
    report = {"path": str(path), "bytes": reader.total_bytes, **report}
    return report, checker


def summary_table(report: dict[str, Any]) -> Any:
    """A rich table: one line per check, with counts and what they mean."""
    from rich.table import Table

    table = Table(title=f"check-data {report['path']}", show_lines=False)
    table.add_column("check")
    table.add_column("result", justify="right")
    table.add_column("detail", overflow="fold")
    problems = report["problems"]
    table.add_row(
        "rows",
        f"{report['rows']:,}",
        f"format {report['format']}, task {report['task_type']}; "
        + ", ".join(f"{k}={v}" for k, v in report["columns"].items()),
    )
    table.add_row(
        "format problems",
        f"{problems['rows']:,} rows",
        ", ".join(f"{k} {v}" for k, v in problems["by_kind"].items()) or "none",
    )
    exact, near = report["duplicates"]["exact"], report["duplicates"]["near"]
    table.add_row(
        "exact duplicates",
        f"{exact['extra_rows']:,} rows",
        f"{exact['clusters']} clusters (NFKC, case, whitespace)",
    )
    table.add_row(
        "near duplicates",
        f"{near['extra_rows']:,} rows" if near["checked"] else "skipped",
        f"{near['clusters']} clusters, MinHash Jaccard >= {near['threshold']}",
    )
    lengths = report["lengths"]
    table.add_row(
        "tokens per row",
        f"p50 {lengths['p50']:,}",
        f"mean {lengths['mean']}, p90 {lengths['p90']}, p99 {lengths['p99']}, max {lengths['max']}; "
        f"{lengths['tokenizer']}",
    )
    table.add_row(
        "learned tokens", f"{lengths['learned_token_share']:.0%}", "share of tokens in the loss"
    )
    if lengths["max_seq_length"]:
        table.add_row(
            "over max_seq_length",
            f"{lengths['over_max_seq_length']:,} rows",
            f"> {lengths['max_seq_length']} tokens",
        )
    if report["labels"]:
        labels = report["labels"]
        counts = ", ".join(f"{k}: {v}" for k, v in list(labels["counts"].items())[:12])
        table.add_row("labels", f"{labels['classes']} classes", counts)
    for name, flag in report["quality"].items():
        table.add_row(f"flag {name}", f"{flag['count']:,} rows", flag["rule"])
    return table


def problem_lines(report: dict[str, Any], limit: int = 20) -> list[str]:
    items = [item["message"] for item in report["problems"]["items"][:limit]]
    more = report["problems"]["count"] - len(items)
    return items + ([f"... and {more} more (see --json)"] if more > 0 else [])
