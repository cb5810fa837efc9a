"""Contamination: n-gram overlap between the text a model trains on and evaluation texts.

Content only: the strings a row holds (prompts, responses, message contents), never its keys
or JSON punctuation, so rows in the same format do not match just for being in the same format.
N-grams found in many training rows (a shared system prompt, a template's boilerplate) are
ignored: they say nothing about whether an evaluation example was seen in training.

The core (between the markers below) uses only the standard library and is rendered verbatim
into the generated eval.py (see ``core_source``), so the CLI's `check-contamination` and
eval.py run the same code while eval.py stays a standalone script.

Memory stays bounded by the evaluation side: its n-grams are held (as hashes), the training
file is streamed once, counting only n-grams the evaluation side has.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any, Iterable, Iterator

from finetune_gen.errors import SpecError
from finetune_gen.variants.formats import FORMATS

# Fields holding a row's content, per dataset format; other fields (ids, metadata) are skipped.
FORMAT_FIELDS: dict[str, list[str]] = {
    name: f.content_fields for name, f in FORMATS.items() if f.columns
}

# ---- shared core: rendered verbatim into the generated eval.py (standard library only) ----
DEFAULT_NGRAM = 13
# An n-gram in at least this many training rows is boilerplate (system prompt, template), not
# evidence that an evaluation example was trained on. Small sets use half their rows instead.
COMMON_NGRAM_ROWS = 10
WORD_PATTERN = re.compile(r"\w+")


def content_texts(value, fields=None):
    """The strings a row holds (values, never keys), each one a separate text.

    `fields` restricts a row (a dict) to those top-level fields; inside them every string
    counts (message contents; one-word values such as roles yield no n-gram).
    """
    if isinstance(value, dict) and fields is not None:
        value = {key: value[key] for key in fields if key in value}
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from content_texts(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from content_texts(item)


def text_words(text):
    """Lower-cased words: punctuation and spacing differences do not hide a copy."""
    return WORD_PATTERN.findall(text.lower())


def text_ngrams(texts, n):
    """Hashes of every n-word sequence within each text (n-grams never span two fields)."""
    grams = set()
    for text in texts:
        words = text_words(text)
        grams.update(hash(tuple(words[i : i + n])) for i in range(len(words) - n + 1))
    return grams


def common_row_limit(train_rows):
    """How many training rows an n-gram must be in to count as boilerplate."""
    return min(COMMON_NGRAM_ROWS, max(2, (train_rows + 1) // 2))


def ngram_overlap(train_texts, eval_texts, n=DEFAULT_NGRAM, common_rows=None, threshold=0.0):
    """Which evaluation rows share n-grams with the training rows, and how much.

    train_texts, eval_texts: iterables with one list of texts per row (see content_texts);
    the training side is streamed once. A row is flagged when the share of its n-grams (common
    ones left out) also found in training is above `threshold` (0: any shared n-gram).
    Rows are numbered from 1, in the order given.
    """
    eval_texts = [list(texts) for texts in eval_texts]
    eval_grams = [text_ngrams(texts, n) for texts in eval_texts]
    wanted = set().union(*eval_grams)
    train_row_count, seen_in = 0, {}  # n-gram hash -> training row numbers (the first 5)
    found_in_rows = {}  # n-gram hash -> number of training rows holding it
    for number, texts in enumerate(train_texts, 1):
        train_row_count = number
        for gram in text_ngrams(texts, n) & wanted:
            found_in_rows[gram] = found_in_rows.get(gram, 0) + 1
            rows = seen_in.setdefault(gram, [])
            if len(rows) < 5:
                rows.append(number)
    limit = common_rows or common_row_limit(train_row_count)
    common = {gram for gram, count in found_in_rows.items() if count >= limit}
    flagged = []
    for number, (texts, grams) in enumerate(zip(eval_texts, eval_grams), 1):
        counted = grams - common
        shared = {gram for gram in counted if gram in found_in_rows}
        if not shared or len(shared) / len(counted) <= threshold:
            continue
        flagged.append(
            {
                "row": number,
                "overlap": round(len(shared) / len(counted), 4),
                "shared_ngrams": len(shared),
                "ngrams": len(counted),
                "train_rows": sorted({row for gram in shared for row in seen_in[gram]})[:10],
                "example": first_shared_ngram(texts, shared, n),
            }
        )
    return {
        "ngram": n,
        "train_rows": train_row_count,
        "eval_rows": len(eval_texts),
        "common_ngram_min_rows": limit,
        "ignored_common_ngrams": len(common),
        "threshold": threshold,
        "contaminated_rows": len(flagged),
        "contaminated_fraction": round(len(flagged) / max(1, len(eval_texts)), 4),
        "flagged": flagged,
    }


def first_shared_ngram(texts, shared, n):
    """The words of the first shared n-gram of a row, to show what matched."""
    for text in texts:
        words = text_words(text)
        for i in range(len(words) - n + 1):
            if hash(tuple(words[i : i + n])) in shared:
                return " ".join(words[i : i + n])
    return ""


# ---- end of the shared core ----

_CORE_START = "# ---- shared core: rendered verbatim"
_CORE_END = "# ---- end of the shared core ----"


def core_source() -> str:
    """The source of the shared core, for the eval.py template (needs `import re` there)."""
    text = Path(__file__).read_text(encoding="utf-8")
    start = text.index(_CORE_START)
    start = text.index("\n", start) + 1
    return text[start : text.index(_CORE_END)].strip() + "\n"


# ---------------------------------------------------------------- reading files


def read_rows(path: Path) -> Iterator[Any]:
    """Rows of a local .jsonl / .json / .csv / .parquet file, streamed where the format allows."""
    if not path.is_file():
        raise SpecError(f"{path}: no such file")
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
        if isinstance(data, dict):  # {"train": [...]} or a single row
            data = next((value for value in data.values() if isinstance(value, list)), [data])
        yield from data
    elif suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as handle:
            yield from csv.DictReader(handle)
    elif suffix == ".parquet":
        import pyarrow.parquet as pq  # installed with datasets; imported only for parquet

        for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
            yield from batch.to_pylist()
    else:
        raise SpecError(
            f"{path}: unsupported file type {suffix!r}; use .jsonl, .json, .csv or .parquet"
        )


def row_texts(rows: Iterable[Any], data_format: str | None = None) -> Iterator[list[str]]:
    fields = FORMAT_FIELDS.get(data_format or "")
    for row in rows:
        yield list(content_texts(row, fields))


def check_files(
    train: Path,
    against: list[Path],
    *,
    data_format: str | None = None,
    n: int = DEFAULT_NGRAM,
    common_rows: int | None = None,
    threshold: float = 0.0,
) -> dict[str, Any]:
    """The overlap report of each `against` file with the training file."""
    if n < 1:
        raise SpecError(f"--n: must be at least 1, got {n}")
    reports = {}
    for path in against:
        eval_texts = list(row_texts(read_rows(path), data_format))
        reports[str(path)] = ngram_overlap(
            row_texts(read_rows(train), data_format), eval_texts, n, common_rows, threshold
        )
    return {"train": str(train), "against": reports}


def report_text(report: dict[str, Any], max_rows: int = 20) -> str:
    lines = []
    for path, result in report["against"].items():
        lines.append(
            f"{path}: {result['contaminated_rows']} of {result['eval_rows']} rows share "
            f"{result['ngram']}-grams with {report['train']} ({result['train_rows']} rows; "
            f"{result['ignored_common_ngrams']} n-grams found in {result['common_ngram_min_rows']}+ "
            "training rows ignored as boilerplate)"
        )
        for item in result["flagged"][:max_rows]:
            train_rows = ", ".join(map(str, item["train_rows"]))
            lines.append(
                f"  row {item['row']}: {100 * item['overlap']:.1f}% of its {item['ngrams']} n-grams "
                f"(training rows {train_rows}): {item['example']!r}"
            )
        if len(result["flagged"]) > max_rows:
            lines.append(f"  ... and {len(result['flagged']) - max_rows} more (see --json)")
    return "\n".join(lines)
