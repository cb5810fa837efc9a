"""The one way values reach generated text: a named filter per output language.

Spec strings (model ids, paths, column names, the spec file's name...) and strings read from a
local model folder are data. They reach a generated file only through one of these functions,
each of which keeps the value inside its context whatever characters it holds:

| filter    | context                           | how                                             |
| --------- | --------------------------------- | ----------------------------------------------- |
| `py`      | a Python expression               | `repr` of str/int/float/bool/None, lists, dicts |
| `doc`     | inside a Python docstring         | one line; quotes, backslashes, controls escaped |
| `comment` | after `#` (Python, YAML, shell)   | one line; line breaks and controls escaped      |
| `yaml`    | a YAML value                      | JSON-style quoting, PyYAML's emitter when needed |
| `json`    | a JSON value                      | `json.dumps` (ASCII escapes)                    |
| `sh`      | one shell word (bash)             | single quotes, or `$'...'` for control chars    |
| `md`      | Markdown inline code              | a backtick fence longer than any run inside     |
| `mdtext`  | Markdown prose, a table cell      | one line; `|`, `<` and controls escaped         |

"Escaped" for text meant to be read (docstrings, comments, Markdown) means made visible: a
newline shows as ``\\n``, U+2028 as ``\\u2028``; the exact value is always in the plan constants
(Python literals) and config.yaml (a YAML string that round-trips).
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from typing import Any

import yaml

# Characters that end a line somewhere: Python's str.splitlines, YAML 1.1 (NEL, LS, PS), Markdown.
_LINE_BREAKS = frozenset("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")
# Readable text is cut here; the exact value lives in the constants and config.yaml.
TEXT_LIMIT = 160


def _visible(ch: str) -> str:
    """A printable stand-in for a character that is not printable or breaks a line."""
    code = ord(ch)
    if ch == "\n":
        return "\\n"
    if ch == "\r":
        return "\\r"
    if ch == "\t":
        return "\\t"
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _needs_escape(ch: str) -> bool:
    return ch in _LINE_BREAKS or not ch.isprintable() or unicodedata.category(ch) in ("Cf", "Co")


def one_line(value: Any, *, limit: int = TEXT_LIMIT) -> str:
    """Text on one line with every control, format and line-break character made visible."""
    text = "".join(_visible(ch) if _needs_escape(ch) else ch for ch in str(value))
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---------------------------------------------------------------- Python


def py_literal(value: Any) -> str:
    """A Python literal for a plan value: strings from the spec can never become code."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"float({repr(str(value))})"  # repr(inf) is the name `inf`, not a literal
    if isinstance(value, (str, bool, int, float)) or value is None:
        return repr(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{py_literal(k)}: {py_literal(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(py_literal(v) for v in value) + "]"
    raise TypeError(f"no Python literal for {type(value).__name__}")


def doc_text(value: Any) -> str:
    """Text for a docstring: cannot close it (quotes escaped), start an escape or a new line.

    Also breaks ``%(``: argparse %-formats a description that contains ``%(prog)``, and the
    scripts pass their docstring to argparse.
    """
    text = one_line(value)
    return (
        text.replace("\\", "\\\\").replace('"', '\\"').replace("'", "\\'").replace("%(", "%\\\\x28")
    )


def comment_text(value: Any) -> str:
    """Text after ``#`` in Python, YAML or shell: one line, nothing that ends the comment."""
    return one_line(value)


# ---------------------------------------------------------------- YAML and JSON


class _FlowDumper(yaml.SafeDumper):
    pass


def _yaml_string(text: str) -> str:
    if all(not _needs_escape(ch) for ch in text) and "\ufeff" not in text:
        # JSON's quoting is a YAML double-quoted scalar for printable text: the familiar form.
        return json.dumps(text, ensure_ascii=False)
    # PyYAML's emitter escapes what YAML cannot hold raw, astral characters included (JSON's
    # surrogate-pair escapes would not round-trip through a YAML loader).
    dumped = yaml.dump(
        text, Dumper=_FlowDumper, default_style='"', allow_unicode=False, width=math.inf
    )
    return dumped.removesuffix("\n")


def yaml_value(value: Any) -> str:
    """A YAML flow value that loads back to exactly ``value``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float):
        if math.isnan(value):
            return ".nan"
        if math.isinf(value):
            return ".inf" if value > 0 else "-.inf"
        text = repr(value)
        if "e" in text and "." not in text:  # YAML 1.1 (PyYAML) reads 2e-05 as a string
            mantissa, exponent = text.split("e")
            text = f"{mantissa}.0e{exponent}"
        return text
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return _yaml_string(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{yaml_value(k)}: {yaml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(yaml_value(v) for v in value) + "]"
    raise TypeError(f"no YAML value for {type(value).__name__}")


def json_value(value: Any) -> str:
    return json.dumps(value)


# ---------------------------------------------------------------- shell

_SHELL_SAFE = re.compile(r"[A-Za-z0-9@%+=:,./_-]+")
_ANSI_C = {"\\": "\\\\", "'": "\\'", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def shell_word(value: Any) -> str:
    """One bash word. Text with control characters uses ``$'...'`` so it stays on one line."""
    text = str(value)
    if _SHELL_SAFE.fullmatch(text):
        return text  # as shlex.quote: plain words stay readable
    if all(not _needs_escape(ch) for ch in text):
        return "'" + text.replace("'", "'\"'\"'") + "'"
    parts = []
    for ch in text:
        if ch in _ANSI_C:
            parts.append(_ANSI_C[ch])
        elif _needs_escape(ch):
            parts.extend(f"\\x{byte:02x}" for byte in ch.encode("utf-8"))
        else:
            parts.append(ch)
    return "$'" + "".join(parts) + "'"


# ---------------------------------------------------------------- Markdown


def md_code(value: Any) -> str:
    """Markdown inline code holding ``value`` on one line (also safe in a table cell)."""
    text = one_line(value, limit=10_000).replace("|", "\\|")  # code is copied: never cut
    longest = run = 0
    for ch in text:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or not text.strip() else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def md_text(value: Any) -> str:
    """Markdown prose on one line: cannot start a line, break a table or open HTML."""
    return one_line(value, limit=10_000).replace("|", "\\|").replace("<", "&lt;")


FILTERS = {
    "py": py_literal,
    "doc": doc_text,
    "comment": comment_text,
    "yaml": yaml_value,
    "json": json_value,
    "sh": shell_word,
    "md": md_code,
    "mdtext": md_text,
}
