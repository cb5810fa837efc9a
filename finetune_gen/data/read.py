"""Streaming readers for dataset files: one row at a time, in bounded memory, every row counted.

JSONL, CSV, parquet and `.json` (an array of rows, or an object whose first list value holds
them, as train.py reads it) are read incrementally: memory holds one row (at most
``max_row_bytes`` of it) and a read buffer, never the file. A row that cannot be read (invalid
UTF-8, broken JSON, a row over the size limit, nesting too deep, a 5000-digit number) becomes a
:class:`Record` carrying the problem and its row and line numbers, and reading goes on; only
damage that makes the rest of the file unreadable (a broken `.json` array, a corrupt parquet
file) stops with a :class:`SpecError`.

Row numbers are 1-based and count rows as train.py does (blank JSONL lines and the CSV header
are not rows); line numbers are where the row starts in the file.
"""

from __future__ import annotations

import codecs
import csv
import json
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from finetune_gen.errors import SpecError

SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
# One row larger than this is reported and skipped, not parsed: a 2 GB single-line row would
# otherwise be held as bytes, text and parsed objects at once (8 GB seen).
DEFAULT_MAX_ROW_BYTES = 32 * 2**20
# Python refuses to convert integers longer than 4300 digits (sys.int_info); far below that a
# number in a training row is already damage, not data.
MAX_NUMBER_DIGITS = 100
_CHUNK = 1 << 20


class OversizedNumber(str):
    """An integer literal too long to be a real value (kept as its digits, reported by checks)."""


@dataclass
class Record:
    row: int  # 1-based row number, as train.py numbers rows
    line: int  # 1-based line where the row starts (0 where the file has no lines: parquet)
    value: Any = None  # the parsed row; None when it could not be read
    problem: str | None = None  # why it could not be read
    kind: str | None = None  # short problem class: undecodable, invalid_json, too_large, ...
    raw: bytes | None = None  # the row's bytes in the file (JSONL only; used by --write-clean)

    @property
    def where(self) -> str:
        return f"row {self.row}" + (
            f" (line {self.line})" if self.line and self.line != self.row else ""
        )


def _parse_int(text: str) -> int | OversizedNumber:
    digits = len(text.lstrip("-"))
    return int(text) if digits <= MAX_NUMBER_DIGITS else OversizedNumber(text)


_DECODER = json.JSONDecoder(parse_int=_parse_int)


def _loads(text: str) -> Any:
    return _DECODER.decode(text)  # raises RecursionError past the interpreter's nesting limit


def check_data_path(path: str | os.PathLike[str], field: str = "dataset.path") -> Path:
    """The path as a readable regular data file, or a SpecError saying what it is instead."""
    file = Path(path).expanduser()
    try:
        mode = file.stat().st_mode
    except FileNotFoundError:
        raise SpecError(f"{field}: {file} not found") from None
    except OSError as error:
        raise SpecError(f"{field}: {file}: cannot read ({error.strerror or error})") from None
    if stat.S_ISDIR(mode):
        raise SpecError(
            f"{field}: {file} is a directory; name one data file ({', '.join(SUFFIXES)})"
        )
    if not stat.S_ISREG(mode):
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a device or socket"
        raise SpecError(f"{field}: {file} is {kind}, not a regular file; name a data file")
    if file.suffix.lower() not in SUFFIXES:
        raise SpecError(
            f"{field}: unsupported file type {file.suffix!r}; use .json, .jsonl, .csv or .parquet"
        )
    if not os.access(file, os.R_OK):
        raise SpecError(f"{field}: {file}: permission denied")
    return file


class DataReader:
    """Iterate a data file's rows as :class:`Record` objects; progress in ``bytes_read``.

    ``max_bytes`` stops reading once that many bytes are read (``truncated`` is then True and
    the caller extrapolates); without it every row is read and counted.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_row_bytes: int = DEFAULT_MAX_ROW_BYTES,
        max_bytes: int | None = None,
        keep_raw: bool = False,
    ):
        self.path = check_data_path(path)
        self.suffix = self.path.suffix.lower()
        self.total_bytes = self.path.stat().st_size
        self.max_row_bytes = max_row_bytes
        self.max_bytes = max_bytes
        self.keep_raw = keep_raw
        self.bytes_read = 0
        self.truncated = False
        self.total_rows: int | None = None  # known up front for parquet
        self.csv_header: list[str] | None = None

    def __iter__(self) -> Iterator[Record]:
        reader = {
            ".jsonl": self._jsonl,
            ".json": self._json,
            ".csv": self._csv,
            ".parquet": self._parquet,
        }[self.suffix]
        try:
            yield from reader()
        except OSError as error:
            raise SpecError(f"{self.path}: read failed ({error.strerror or error})") from None

    def _over_budget(self) -> bool:
        if self.max_bytes is not None and self.bytes_read >= self.max_bytes:
            self.truncated = self.bytes_read < self.total_bytes
            return self.truncated
        return False

    # ---------------------------------------------------------------- lines (JSONL, CSV)

    def _lines(self, handle: BinaryIO) -> Iterator[tuple[int, bytes | None, int]]:
        """(line number, bytes or None when over the row limit, size) for each physical line."""
        number = 0
        while True:
            line = handle.readline(self.max_row_bytes + 1)
            if not line:
                return
            number += 1
            size = len(line)
            if size > self.max_row_bytes and not line.endswith(b"\n"):
                # Too long: skip to the end of the line without holding it.
                line = b""
                while True:
                    piece = handle.readline(_CHUNK)
                    size += len(piece)
                    if not piece or piece.endswith(b"\n"):
                        break
                self.bytes_read += size
                yield number, None, size
                continue
            self.bytes_read += size
            if number == 1 and line.startswith(codecs.BOM_UTF8):
                line = line[len(codecs.BOM_UTF8) :]
            yield number, line, size

    def _too_large(self, row: int, line: int, size: int) -> Record:
        return Record(
            row,
            line,
            problem=(
                f"row larger than the {self.max_row_bytes // 2**20} MiB row limit "
                f"({size / 2**20:.1f} MiB); not read"
            ),
            kind="too_large",
        )

    @staticmethod
    def _undecodable(row: int, line: int, error: UnicodeDecodeError) -> Record:
        byte = error.object[error.start : error.start + 1].hex()
        return Record(
            row,
            line,
            problem=f"invalid UTF-8 (byte 0x{byte} at column {error.start + 1} of line {line})",
            kind="undecodable",
        )

    def _jsonl(self) -> Iterator[Record]:
        row = 0
        with self.path.open("rb") as handle:
            for number, line, size in self._lines(handle):
                if line is not None and not line.strip():
                    continue
                row += 1
                if line is None:
                    yield self._too_large(row, number, size)
                else:
                    yield self._jsonl_record(row, number, line)
                if self._over_budget():
                    return

    def _jsonl_record(self, row: int, number: int, line: bytes) -> Record:
        raw = line if self.keep_raw else None
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as error:
            return self._undecodable(row, number, error)
        try:
            return Record(row, number, value=_loads(text.rstrip("\r\n")), raw=raw)
        except json.JSONDecodeError as error:
            return Record(
                row,
                number,
                problem=f"not valid JSON ({error.msg}; column {error.colno})",
                kind="invalid_json",
            )
        except RecursionError:
            return Record(row, number, problem="nested too deeply to read", kind="too_deep")

    def _csv(self) -> Iterator[Record]:
        limit = max(self.max_row_bytes, 1)
        if csv.field_size_limit() < limit:  # default 128 KiB: a long field is data, not an error
            csv.field_size_limit(limit)
        bad_lines: dict[int, Record] = {}

        def text_lines(handle: BinaryIO) -> Iterator[str]:
            for number, line, size in self._lines(handle):
                if line is None:
                    bad_lines[number] = self._too_large(0, number, size)
                    yield "\ufffd\n"  # a one-field placeholder, so the row is reported, not skipped
                    continue
                try:
                    yield line.decode("utf-8")
                except UnicodeDecodeError as error:
                    bad_lines[number] = self._undecodable(0, number, error)
                    yield line.decode("utf-8", errors="replace")

        with self.path.open("rb") as handle:
            reader = csv.reader(text_lines(handle))
            try:
                header = next(reader, None)
            except csv.Error as error:
                raise SpecError(
                    f"{self.path}: line 1: not a readable CSV header ({error})"
                ) from None
            if header is None:
                return
            if 1 in bad_lines:
                raise SpecError(f"{self.path}: line 1 (header): {bad_lines[1].problem}")
            duplicates = sorted({name for name in header if header.count(name) > 1})
            if duplicates:
                raise SpecError(f"{self.path}: line 1: duplicate column names {duplicates}")
            self.csv_header = header
            row = 0
            while True:
                start = reader.line_num + 1
                try:
                    fields = next(reader)
                except StopIteration:
                    return
                except csv.Error as error:
                    row += 1
                    yield Record(
                        row, start, problem=f"not readable as CSV ({error})", kind="invalid_csv"
                    )
                    continue
                if not fields:  # a blank line is no row
                    bad_lines.pop(start, None)
                    continue
                row += 1
                damaged = [
                    bad_lines.pop(n) for n in range(start, reader.line_num + 1) if n in bad_lines
                ]
                if damaged:
                    yield Record(row, start, problem=damaged[0].problem, kind=damaged[0].kind)
                elif len(fields) != len(header):
                    yield Record(
                        row,
                        start,
                        problem=f"{len(fields)} fields where the header has {len(header)}",
                        kind="invalid_csv",
                    )
                else:
                    yield Record(row, start, value=dict(zip(header, fields)))
                if self._over_budget():
                    return

    # ---------------------------------------------------------------- .json

    def _json(self) -> Iterator[Record]:
        with self.path.open("rb") as handle:
            yield from _JsonArrayStream(self, handle).records()

    # ---------------------------------------------------------------- parquet

    def _parquet(self) -> Iterator[Record]:
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise SpecError(
                f"{self.path}: reading parquet needs pyarrow (pip install pyarrow)"
            ) from None
        try:
            source = pq.ParquetFile(self.path)
            self.total_rows = source.metadata.num_rows
            row = 0
            per_row = self.total_bytes / max(1, self.total_rows)
            for batch in source.iter_batches(batch_size=1024):
                for value in batch.to_pylist():
                    row += 1
                    yield Record(row, 0, value=value)
                self.bytes_read = min(self.total_bytes, round(row * per_row))
                if self._over_budget():
                    return
        except SpecError:
            raise
        except Exception as error:  # pyarrow raises ArrowInvalid, OSError, ... on damaged files
            detail = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
            raise SpecError(f"{self.path}: not a readable parquet file ({detail})") from None


class _JsonArrayStream:
    """Rows of a `.json` file read element by element from a growing text buffer."""

    _TOKEN = re.compile(r'["\[\]{},]')
    _IN_STRING = re.compile(r'["\\]')
    _WHITESPACE = re.compile(r"[ \t\n\r]*")

    def __init__(self, reader: DataReader, handle: BinaryIO):
        self.reader = reader
        self.handle = handle
        self.decoder = codecs.getincrementaldecoder("utf-8")("strict")
        self.buf = ""
        self.pos = 0
        self.eof = False
        self.line = 1  # line number at self.pos
        self.first = True

    # -- buffer
    def _fill(self) -> bool:
        if self.eof:
            return False
        chunk = self.handle.read(_CHUNK)
        self.reader.bytes_read += len(chunk)
        if self.first:
            self.first = False
            chunk = chunk.removeprefix(codecs.BOM_UTF8)
        try:
            text = self.decoder.decode(chunk, final=not chunk)
        except UnicodeDecodeError as error:
            line = self.line + self.buf.count("\n", self.pos) + chunk[: error.start].count(b"\n")
            raise SpecError(
                f"{self.reader.path}: line {line}: invalid UTF-8 (byte 0x{chunk[error.start:error.start + 1].hex()})"
            ) from None
        if not chunk:
            self.eof = True
        if self.pos > _CHUNK:  # drop what is consumed so memory holds one row and one chunk
            self.buf = self.buf[self.pos :]
            self.pos = 0
        self.buf += text
        return True

    def _advance(self, to: int) -> None:
        self.line += self.buf.count("\n", self.pos, to)
        self.pos = to

    def _skip_ws(self) -> str:
        while True:
            end = self._WHITESPACE.match(self.buf, self.pos).end()
            if end > self.pos:
                self._advance(end)
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self._fill():
                return ""

    def _fail(self, message: str) -> SpecError:
        return SpecError(f"{self.reader.path}: line {self.line}: {message}")

    def _decode_value(self, limit: int | None) -> tuple[Any, bool]:
        """(value, True), or (None, False) when the value is larger than ``limit`` characters."""
        attempt = 0
        while True:
            try:
                value, end = _DECODER.raw_decode(self.buf, self.pos)
                if end == len(self.buf) and not self.eof and self.buf[self.pos] not in '[{"':
                    raise json.JSONDecodeError("number may continue", self.buf, end)
                if limit is not None and end - self.pos > limit:
                    return None, False  # read (within one chunk) but over the limit: not kept
                self._advance(end)
                return value, True
            except json.JSONDecodeError as error:
                size = len(self.buf) - self.pos
                if limit is not None and size > limit:
                    return None, False
                if self.eof:
                    raise self._fail(f"not valid JSON ({error.msg})") from None
                attempt = max(size * 2, _CHUNK)
                while len(self.buf) - self.pos < attempt and self._fill():
                    pass

    def _skip_value(self) -> None:
        """Skip one JSON value without parsing it (for rows over the size limit)."""
        depth, in_string = 0, False
        while True:
            pattern = self._IN_STRING if in_string else self._TOKEN
            match = pattern.search(self.buf, self.pos)
            if match is None:
                self._advance(len(self.buf))
                if not self._fill():
                    raise self._fail("not valid JSON (the file ends inside a row)")
                continue
            char, end = match.group(), match.end()
            if in_string:
                if char == "\\":
                    while end >= len(self.buf) and self._fill():
                        pass
                    end += 1
                else:
                    in_string = False
            elif char == '"':
                in_string = True
            elif char in "[{":
                depth += 1
            elif char in "]}":
                if depth == 0:
                    self._advance(match.start())
                    return
                depth -= 1
            elif depth == 0:  # a comma between rows
                self._advance(match.start())
                return
            self._advance(end)

    def records(self) -> Iterator[Record]:
        start = self._skip_ws()
        if start == "":
            return
        if start == "{":
            found = yield from self._object_rows()
            if found:
                return
        elif start != "[":
            value, _ = self._decode_value(limit=1000)
            shown = "a string" if isinstance(value, str) else json.dumps(value)[:40]
            raise SpecError(
                f"{self.reader.path}: holds {shown}, not rows; expected a list of rows "
                "(or an object with a list of rows)"
            )
        else:
            yield from self._array_rows()
        if self._skip_ws() != "":
            raise self._fail("unexpected content after the rows")

    def _object_rows(self) -> Iterator[Record]:
        """An object: stream its first list value as the rows; without one, the object is a row."""
        self._advance(self.pos + 1)
        members: dict[str, Any] = {}
        start_line = self.line
        while True:
            char = self._skip_ws()
            if char == "}":
                self._advance(self.pos + 1)
                yield Record(1, start_line, value=members)
                return True
            if char == ",":
                self._advance(self.pos + 1)
                continue
            if char != '"':
                raise self._fail("not valid JSON (expected a key)")
            key, _ = self._decode_value(limit=None)
            if self._skip_ws() != ":":
                raise self._fail("not valid JSON (expected ':')")
            self._advance(self.pos + 1)
            if self._skip_ws() == "[":
                yield from self._array_rows()
                # The rest of the object (other keys) is not rows; skip it.
                while (char := self._skip_ws()) not in ("}", ""):
                    self._skip_value() if char not in ",:" else self._advance(self.pos + 1)
                if char == "}":
                    self._advance(self.pos + 1)
                return True
            value, ok = self._decode_value(limit=self.reader.max_row_bytes)
            if not ok:
                raise self._fail(
                    "an object member larger than the row limit, before any list of rows"
                )
            members[key] = value

    def _array_rows(self) -> Iterator[Record]:
        self._advance(self.pos + 1)
        row = 0
        while True:
            char = self._skip_ws()
            if char == "]":
                self._advance(self.pos + 1)
                return
            if char == "":
                raise self._fail("not valid JSON (the file ends inside the list of rows)")
            if row and char == ",":
                self._advance(self.pos + 1)
                char = self._skip_ws()
            elif row:
                raise self._fail("not valid JSON (expected ',' or ']' between rows)")
            row += 1
            line = self.line
            start_bytes = self.reader.bytes_read
            try:
                value, ok = self._decode_value(limit=self.reader.max_row_bytes)
            except RecursionError:
                self._skip_value()
                yield Record(row, line, problem="nested too deeply to read", kind="too_deep")
                continue
            if ok:
                yield Record(row, line, value=value)
            else:
                self._skip_value()
                size = max(self.reader.max_row_bytes, self.reader.bytes_read - start_bytes)
                yield self.reader._too_large(row, line, size)
            if self.reader._over_budget():
                return
