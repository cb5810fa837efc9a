"""Reading small input files (a spec, a model folder's config.json or chat template) safely.

Refuses what could block or never end (FIFOs, devices), what is too big to be such a file, and
text that is not UTF-8, each with a message naming the file; never a traceback.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

from finetune_gen.errors import SpecError


def read_text_file(path: Path, what: str, limit: int) -> str:
    """A small UTF-8 text file: refuses FIFOs and devices (which could block or never end)."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise SpecError(f"{path}: no such file") from None
    except OSError as error:
        raise SpecError(f"{path}: cannot read {what} ({error.strerror or error})") from None
    if stat.S_ISDIR(info.st_mode):
        raise SpecError(f"{path}: is a folder, not a {what} file")
    if not stat.S_ISREG(info.st_mode):
        raise SpecError(
            f"{path}: is not a regular file (a FIFO, socket or device); cannot read {what}"
        )
    if info.st_size > limit:
        raise SpecError(f"{path}: {info.st_size:,} bytes; a {what} file is at most {limit:,}")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise SpecError(f"{path}: cannot read {what} ({error.strerror or error})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise SpecError(f"{path}:{line}: not UTF-8 text (byte {data[error.start]:#04x})") from None


def read_json_object(path: Path, what: str, limit: int = 16 << 20) -> dict[str, Any]:
    """A JSON object from a small file; duplicate-free parsing is not needed for model files."""
    text = read_text_file(path, what, limit)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise SpecError(
            f"{path}:{error.lineno}:{error.colno}: not valid JSON: {error.msg}"
        ) from None
    except RecursionError:
        raise SpecError(f"{path}: nested too deeply") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data
