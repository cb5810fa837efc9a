"""What the planner learns from a dataset file when it is at hand: rows, lengths, format errors.

The generator does not load a tokenizer (its start-up stays free of the ML stack), so token
counts are estimated from characters: about 4 characters per token for English text with the
BPE vocabularies of current LLMs (OpenAI's tokenizer guide; Llama 3 and Qwen2.5 are close to
it). The generated train.py counts real tokens; `check-data` reports both.
"""

from __future__ import annotations

import json
import math
import os
from array import array
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finetune_gen.data.check import _RowChecker
from finetune_gen.data.read import DataReader
from finetune_gen.errors import SpecError
from finetune_gen.variants.formats import FORMATS

CHARS_PER_TOKEN = 4.0
# Per-format default field names; `custom` takes the spec's `columns` mapping instead.
DEFAULT_COLUMNS: dict[str, dict[str, str]] = {
    name: f.columns for name, f in FORMATS.items() if f.columns
}
CLASSIFICATION_COLUMNS = {"text": "text", "label": "label"}
GENERATION_COLUMNS = {"text": "text"}
# Every row is counted up to this many bytes read (a 1M-row alpaca file is ~0.5 GiB; see the
# benchmark in the README for the rate); past it the count is extrapolated from the bytes
# read, and the plan says so.
PLAN_READ_LIMIT_BYTES = 1 * 2**30


def resolve_columns(
    task_type: str, data_format: str, columns: dict[str, str] | None
) -> dict[str, str]:
    """The role -> field mapping the script uses: the spec's, over the format's defaults."""
    if data_format == "custom":
        return dict(sorted((columns or {}).items()))
    if task_type == "classification" and data_format == "alpaca":
        base = {"text": "instruction", "input": "input", "label": "output"}
    elif task_type == "generation" and data_format == "alpaca":
        base = {"prompt": "instruction", "input": "input", "response": "output"}
    else:
        base = dict(DEFAULT_COLUMNS[data_format])
    base.update(columns or {})
    return dict(sorted(base.items()))


@dataclass
class DatasetStats:
    rows: int
    token_lengths: Sequence[int] = field(repr=False)
    problems: list[str]
    sample_fields: list[str]
    file_bytes: int
    labels: list[str] = field(default_factory=list)  # distinct label values (classification)
    # Past the reading limit the row count is extrapolated from the bytes read (and says so).
    rows_extrapolated: bool = False
    rows_read: int = 0
    bytes_read: int = 0
    warnings: list[str] = field(default_factory=list)  # soft problems: the planner warns
    # From a check-data report (dataset.report): its mean and 99th-percentile token lengths
    # replace the estimate, and `lengths_note` says where they came from.
    reported_mean: int | None = None
    reported_p99: int | None = None
    lengths_note: str = "estimated lengths"
    lengths_unit: str = "~4 chars/token"

    @property
    def mean_tokens(self) -> int:
        if self.reported_mean is not None:
            return self.reported_mean
        return max(1, round(sum(self.token_lengths) / max(1, len(self.token_lengths))))

    def percentile_tokens(self, q: float) -> int:
        if self.reported_p99 is not None and q == 0.99:
            return self.reported_p99
        ordered = sorted(self.token_lengths) or [1]
        return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]

    @property
    def count_note(self) -> str:
        if not self.rows_extrapolated:
            return f"{self.rows} rows counted"
        return (
            f"about {self.rows} rows, extrapolated from the first {self.bytes_read / 2**20:.0f} MiB "
            f"({self.rows_read} rows) of {self.file_bytes / 2**20:.0f} MiB"
        )


def is_local_file(path: str) -> bool:
    return Path(path).expanduser().is_file()


def _row_text(row: dict[str, Any]) -> str:
    return json.dumps(row, ensure_ascii=False, default=str)


# Problems train.py's chat template may still accept: the planner warns rather than refuses.
SOFT_PROBLEMS = {"roles_out_of_order", "no_assistant_turn"}


def read_stats(
    path: str,
    task_type: str,
    data_format: str,
    columns: dict[str, str],
    *,
    max_bytes: int | None | str = "default",
) -> DatasetStats | None:
    """Statistics of a local dataset file, or None for a hub id (not at hand).

    Every row is read (streaming, bounded memory) up to ``max_bytes``; past it the row count is
    extrapolated from the bytes read and ``rows_extrapolated`` is set. A path that exists but is
    a directory, a FIFO or a device is refused (it is not planned with default sizes).
    """
    file = Path(path).expanduser()
    if not os.path.lexists(file):
        return None
    limit = PLAN_READ_LIMIT_BYTES if max_bytes == "default" else max_bytes
    reader = DataReader(file, max_bytes=limit)  # type: ignore[arg-type]
    checker = _RowChecker(task_type, data_format, columns)
    lengths = array("I")
    labels: set[str] = set()
    problems: list[str] = []
    soft: Counter[str] = Counter()
    sample_fields: list[str] = []
    count = 0
    for record in reader:
        count += 1
        if count == 1 and isinstance(record.value, dict):
            sample_fields = sorted(record.value)
        if record.problem is not None:
            if len(problems) < 20:
                problems.append(f"{record.where}: {record.problem}")
            continue
        example, found = checker.check(record)
        for item in found:
            if item.kind in SOFT_PROBLEMS:
                soft[item.kind] += 1
            elif len(problems) < 20:
                problems.append(item.text())
        lengths.append(max(1, math.ceil(len(_row_text(record.value)) / CHARS_PER_TOKEN)))
        if example is not None and example.label is not None and len(labels) < 10_000:
            labels.add(example.label)
    if count == 0:
        raise SpecError(f"dataset.path: {path} has no rows")
    rows, extrapolated = count, False
    if reader.total_rows is not None:
        rows = reader.total_rows
    elif reader.truncated:
        rows, extrapolated = max(count, round(count * reader.total_bytes / reader.bytes_read)), True
    warnings = [
        f"{n} rows: {kind.replace('_', ' ')} (see finetune-gen check-data)"
        for kind, n in sorted(soft.items())
    ]
    return DatasetStats(
        rows=rows,
        token_lengths=lengths,
        problems=problems,
        sample_fields=sample_fields,
        file_bytes=reader.total_bytes,
        labels=sorted(labels),
        rows_extrapolated=extrapolated,
        rows_read=count,
        bytes_read=reader.bytes_read,
        warnings=warnings,
    )
