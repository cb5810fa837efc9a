"""`check-data --write-clean OUT`: a deduplicated, filtered copy of a dataset in its own format.

Dropped: rows with a format problem, every exact or near duplicate but the first row of its
cluster, and rows with a quality flag. The input is only read; the copy is written to a
temporary file beside OUT and moved into place, with a report of every dropped row and why.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from finetune_gen.data.check import DataChecker
from finetune_gen.data.read import DataReader, Record
from finetune_gen.errors import SpecError


def drop_reasons(checker: DataChecker) -> dict[int, list[str]]:
    """Row number -> why it is dropped (in order: problem, duplicate, flags)."""
    reasons: dict[int, list[str]] = {}
    for row, kind in checker.bad_rows.items():
        reasons.setdefault(row, []).append(f"problem:{kind}")
    for label, clusters in (
        ("exact_duplicate", checker.exact_clusters),
        ("near_duplicate", checker.near_clusters),
    ):
        for cluster in clusters:
            for row in cluster[1:]:
                reasons.setdefault(row, []).append(f"{label}_of_row_{cluster[0]}")
    for row, flags in checker.flag_rows.items():
        reasons.setdefault(row, []).extend(f"flag:{name}" for name in flags)
    return reasons


def clean_paths(source: Path, out: Path) -> tuple[Path, Path]:
    """(clean data file, report file): OUT is a file with the input's suffix, or a folder."""
    if out.suffix.lower() in (".jsonl", ".json", ".csv", ".parquet") and not out.is_dir():
        if out.suffix.lower() != source.suffix.lower():
            raise SpecError(
                f"--write-clean: {out} must have the input's suffix {source.suffix} (same format)"
            )
        data, report = out, out.with_name(out.stem + ".report.json")
    else:
        data, report = out / source.name, out / "report.json"
    if data.resolve() == source.resolve():
        raise SpecError(f"--write-clean: {out} is the input file; the input is never modified")
    return data, report


def _atomic_write(target: Path, write: Any) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"
    )
    os.close(handle)
    try:
        write(Path(temporary))
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _kept(records: Iterator[Record], reasons: dict[int, list[str]]) -> Iterator[Record]:
    return (record for record in records if record.row not in reasons)


def write_clean(source: str | Path, out: str | Path, checker: DataChecker) -> dict[str, Any]:
    source, out = Path(source), Path(out)
    data_path, report_path = clean_paths(source, out)
    reasons = drop_reasons(checker)
    reader = DataReader(source, keep_raw=True)
    kept = 0

    def write(temporary: Path) -> None:
        nonlocal kept
        suffix = reader.suffix
        records = _kept(iter(reader), reasons)
        if suffix == ".jsonl":
            with temporary.open("wb") as handle:
                for record in records:
                    raw = record.raw or json.dumps(record.value, ensure_ascii=False).encode()
                    handle.write(raw if raw.endswith(b"\n") else raw + b"\n")
                    kept += 1
        elif suffix == ".json":
            with temporary.open("w", encoding="utf-8") as handle:
                handle.write("[")
                for record in records:
                    handle.write(
                        ("," if kept else "") + "\n" + json.dumps(record.value, ensure_ascii=False)
                    )
                    kept += 1
                handle.write("\n]\n")
        elif suffix == ".csv":
            with temporary.open("w", encoding="utf-8", newline="") as handle:
                writer: Any = None
                for record in records:
                    if writer is None:
                        writer = csv.writer(handle)
                        writer.writerow(reader.csv_header)
                    writer.writerow([record.value[name] for name in reader.csv_header or []])
                    kept += 1
                if writer is None and reader.csv_header:
                    csv.writer(handle).writerow(reader.csv_header)
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            schema = pq.ParquetFile(source).schema_arrow
            with pq.ParquetWriter(temporary, schema) as writer:
                batch: list[dict[str, Any]] = []
                for record in records:
                    batch.append(record.value)
                    kept += 1
                    if len(batch) >= 1024:
                        writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                        batch = []
                if batch:
                    writer.write_table(pa.Table.from_pylist(batch, schema=schema))

    _atomic_write(data_path, write)
    by_reason: Counter[str] = Counter()
    for why in reasons.values():
        for reason in why:
            by_reason[reason.split(":")[0] if ":" in reason else reason.split("_of_row_")[0]] += 1
    report = {
        "input": str(source),
        "output": str(data_path),
        "rows_in": checker.count,
        "rows_out": kept,
        "dropped": {
            "count": len(reasons),
            "by_reason": dict(sorted(by_reason.items())),
            "rows": [{"row": row, "reasons": why} for row, why in sorted(reasons.items())],
        },
    }
    _atomic_write(
        report_path, lambda p: p.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    )
    return {**report, "report": str(report_path)}
