"""What the planner learns from a dataset file when it is at hand: rows, lengths, format errors.

The generator does not load a tokenizer (its start-up stays free of the ML stack), so token
counts are estimated from characters: about 4 characters per token for English text with the
BPE vocabularies of current LLMs (OpenAI's tokenizer guide; Llama 3 and Qwen2.5 are close to
it). The generated train.py counts real tokens; `check-data` reports both.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from .errors import SpecError

CHARS_PER_TOKEN = 4.0
# Per-format default field names; `custom` takes the spec's `columns` mapping instead.
DEFAULT_COLUMNS: dict[str, dict[str, str]] = {
    "alpaca": {"prompt": "instruction", "input": "input", "response": "output"},
    "sharegpt": {"messages": "conversations"},
    "chatml": {"messages": "messages"},
}
CLASSIFICATION_COLUMNS = {"text": "text", "label": "label"}
GENERATION_COLUMNS = {"text": "text"}
MAX_ROWS_READ = 200_000  # reading is linear; beyond this the statistics are extrapolated


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
    token_lengths: list[int] = field(repr=False)
    problems: list[str]
    sample_fields: list[str]
    file_bytes: int
    labels: list[str] = field(default_factory=list)  # distinct label values (classification)

    @property
    def mean_tokens(self) -> int:
        return max(1, round(sum(self.token_lengths) / max(1, len(self.token_lengths))))

    def percentile_tokens(self, q: float) -> int:
        ordered = sorted(self.token_lengths) or [1]
        return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def is_local_file(path: str) -> bool:
    return Path(path).expanduser().is_file()


def _rows(path: Path) -> Iterator[dict[str, Any]]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if line.strip():
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError as error:
                        raise SpecError(f"{path}:{number}: not valid JSON ({error.msg})") from None
    elif suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise SpecError(
                f"{path}:{error.lineno}:{error.colno}: not valid JSON ({error.msg})"
            ) from None
        if isinstance(data, dict):  # {"train": [...]} or {"data": [...]}
            data = next((v for v in data.values() if isinstance(v, list)), [data])
        yield from data
    elif suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as handle:
            yield from csv.DictReader(handle)
    elif suffix == ".parquet":
        try:
            import pyarrow.parquet as pq  # optional: only to count a parquet file's rows
        except ImportError:
            return
        yield from pq.read_table(path).to_pylist()
    else:
        raise SpecError(
            f"dataset.path: unsupported file type {suffix!r}; use .json, .jsonl, .csv or .parquet"
        )


def _row_text(row: dict[str, Any]) -> str:
    return json.dumps(row, ensure_ascii=False)


def row_problems(
    row: Any, index: int, task_type: str, data_format: str, columns: dict[str, str]
) -> list[str]:
    """Format problems of one row, named by row and field (the same checks train.py makes)."""
    if not isinstance(row, dict):
        return [f"row {index}: expected an object, got {type(row).__name__}"]
    problems = []
    if "messages" in columns:
        turns = row.get(columns["messages"])
        keys = ("from", "value") if data_format == "sharegpt" else ("role", "content")
        if not isinstance(turns, list) or not turns:
            problems.append(
                f"row {index}: field {columns['messages']!r} must be a non-empty list of turns"
            )
        else:
            for number, turn in enumerate(turns):
                if not isinstance(turn, dict) or any(k not in turn for k in keys):
                    problems.append(
                        f"row {index}, turn {number}: expected keys {keys[0]!r} and {keys[1]!r}"
                    )
                    break
        return problems
    optional = {"input", "system"}
    for role, name in columns.items():
        if role in optional:
            continue
        value = row.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            problems.append(
                f"row {index}: field {name!r} ({role}) is missing or empty; found {sorted(row)}"
            )
    return problems


def read_stats(
    path: str, task_type: str, data_format: str, columns: dict[str, str]
) -> DatasetStats | None:
    """Statistics of a local dataset file, or None for a hub id (not at hand)."""
    file = Path(path).expanduser()
    if not file.is_file():
        return None
    lengths: list[int] = []
    labels: set[str] = set()
    problems: list[str] = []
    sample_fields: list[str] = []
    for index, row in enumerate(_rows(file), 1):  # numbered from 1, as train.py reports rows
        if index > MAX_ROWS_READ:
            break
        if index == 1 and isinstance(row, dict):
            sample_fields = sorted(row)
        if len(problems) < 20:
            problems += row_problems(row, index, task_type, data_format, columns)
        lengths.append(max(1, math.ceil(len(_row_text(row)) / CHARS_PER_TOKEN)))
        if "label" in columns and isinstance(row, dict) and row.get(columns["label"]) is not None:
            labels.add(str(row[columns["label"]]))
    if not lengths:
        raise SpecError(f"dataset.path: {path} has no rows")
    return DatasetStats(
        rows=len(lengths),
        token_lengths=lengths,
        problems=problems,
        sample_fields=sample_fields,
        file_bytes=file.stat().st_size,
        labels=sorted(labels),
    )
