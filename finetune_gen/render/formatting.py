"""black's output for a generated Python file, formatting only the parts that changed.

A spec edit (a new learning rate) changes one constant of a 2,000-line ``train.py``; black
would re-format the whole file for it. Here the source is cut into top-level chunks at
boundaries where black's output is known to be "previous chunk, two blank lines, next chunk"
(before a top-level ``def``/``class``/decorator that follows code, not a comment), each chunk
is formatted on its own and cached by its exact input, and the outputs are joined with two
blank lines. The result is byte-identical to ``black.format_str(source, mode=black.Mode())``:

- black infers the target versions from the features the *whole* file uses (f-strings, a
  trailing comma after ``*args``...), and they decide e.g. whether it adds trailing commas.
  The features of each chunk are found with black's own parser and cached; their union is the
  file's, and every chunk is formatted with the versions inferred from it, passed explicitly.
- Where black's blank lines before a definition depend on what precedes it (a comment block,
  a module docstring, a ``def f(): ...`` stub before it, ``# fmt:`` directives, form feeds,
  CR line ends, encoding declarations), no cut is made there, or the file is formatted whole.
"""

from __future__ import annotations

import ast
import hashlib
import itertools
import json
import os
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import black

# Part of every chunk cache key: bump it when the chunking rules change.
CHUNK_SCHEME = "chunks-1"

# Constructs whose formatting is not local to a chunk, or which this module does not model:
# the whole file is then formatted at once.
_WHOLE_FILE_MARKERS = ("\r", "\f", "\ufeff", "fmt:", "yapf:")
_ENCODING_COMMENT = re.compile(r"^[ \t]*#.*?coding[:=]", re.MULTILINE)


class NotPython(ValueError):
    """The source does not parse (black's message)."""


def run_black(source: str, mode: black.Mode) -> str:
    """The one place black formats anything (tests count its calls)."""
    import black  # imported here: a fully cached file needs no black at all

    try:
        return black.format_str(source, mode=mode)
    except black.parsing.InvalidInput as error:
        raise NotPython(str(error)) from error


def format_source(source: str, cache: Path | None) -> str:
    """``black.format_str(source, mode=black.Mode())``, reusing cached chunk outputs.

    ``cache`` is the folder of this black version's entries (None: no cache, format whole).
    Raises :class:`NotPython` for a source that does not parse.
    """
    if cache is not None:
        chunks = split_chunks(source)
        if chunks is not None and len(chunks) > 1:
            formatted = _format_chunks(chunks, cache / CHUNK_SCHEME)
            if formatted is not None:
                return formatted
    import black

    return run_black(source, black.Mode())


def split_chunks(source: str) -> list[str] | None:
    """``source`` cut before each safe top-level definition; None when it must stay whole.

    The pieces concatenate back to ``source``. A cut is made before a top-level def, class or
    decorated definition only when nothing but blank lines separates it from the previous
    statement (a comment there is attached to the definition by black), and that statement is
    neither a string (a module docstring gets its own blank-line rule) nor holds a stub
    ``...`` body (black keeps a stub's neighbour on the next line if the user did).
    """
    if any(marker in source for marker in _WHOLE_FILE_MARKERS):
        return None
    if _ENCODING_COMMENT.search(source):
        return None
    try:
        with warnings.catch_warnings():  # "invalid escape sequence": black does not warn
            warnings.simplefilter("ignore")
            tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None  # black reports the error when it formats the whole file
    lines = source.split("\n")
    line_starts = [0]
    for line in lines[:-1]:
        line_starts.append(line_starts[-1] + len(line) + 1)
    cuts = [0]
    body = tree.body
    for previous, statement in itertools.pairwise(body):
        if not isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        start = min([statement.lineno] + [d.lineno for d in statement.decorator_list])
        end = previous.end_lineno or previous.lineno
        gap = lines[end : start - 1]  # the lines strictly between the two statements
        if any(line.strip() for line in gap):
            continue  # a comment block before the definition
        if _is_constant_statement(previous) or _holds_stub(previous):
            continue
        cuts.append(line_starts[start - 1])
    cuts.append(len(source))
    return [source[a:b] for a, b in itertools.pairwise(cuts)]


def _is_constant_statement(node: ast.stmt) -> bool:
    """A bare string (a docstring) or ``...``."""
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)


def _holds_stub(node: ast.stmt) -> bool:
    """Whether ``node`` may end with a stub line (a def/class with a body of only ``...``).

    black keeps a stub's next line right under it when the user did; the line before a cut is
    the end of the previous statement, so only its chain of last statements is looked at.
    """
    definitions = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    while True:
        # `...` or a lone docstring: both kept out, to be safe
        if (
            isinstance(node, definitions)
            and len(node.body) == 1
            and _is_constant_statement(node.body[0])
        ):
            return True
        tails = [getattr(node, name, None) for name in ("finalbody", "orelse", "handlers")]
        tails += [getattr(node, "body", None)]
        if isinstance(node, ast.Match):
            tails = [node.cases[-1].body]
        last = next((tail[-1] for tail in tails if isinstance(tail, list) and tail), None)
        if last is None:
            return False
        node = last.body[-1] if isinstance(last, ast.ExceptHandler) else last


def _format_chunks(chunks: list[str], folder: Path) -> str | None:
    """The chunks formatted and joined, or None when the file must be formatted whole."""
    keys = [hashlib.sha256(chunk.encode("utf-8")).hexdigest() for chunk in chunks]
    features: set[str] = set()
    for index, (chunk, key) in enumerate(zip(chunks, keys)):
        used = _read_json(folder / f"{key}.features.json")
        if not (isinstance(used, list) and all(isinstance(name, str) for name in used)):
            used = _features_used(chunk, head=index == 0)
            if used is None:
                return None
            _write(folder / f"{key}.features.json", json.dumps(used))
        features.update(used)
    # The features the whole file uses decide the target versions black formats for.
    tag = hashlib.sha256(" ".join(sorted(features)).encode("utf-8")).hexdigest()[:16]
    mode: black.Mode | None = None
    outputs = []
    for chunk, key in zip(chunks, keys):
        entry = folder / f"{key}.{tag}.py"
        formatted = _read_text(entry)
        if formatted is None:
            if mode is None:
                mode = _mode_for(features)
                if mode is None:
                    return None
            formatted = run_black(chunk, mode)
            _write(entry, formatted)
        outputs.append(formatted)
    return "\n\n".join(outputs)  # each ends with a newline: two blank lines between


def _features_used(chunk: str, head: bool) -> list[str] | None:
    """black's names of the features ``chunk`` uses (its __future__ imports if ``head``)."""
    import black
    from black.parsing import InvalidInput, lib2to3_parse

    try:
        node = lib2to3_parse(chunk.lstrip())
    except InvalidInput:
        return None
    future = black.get_future_imports(node) if head else set()
    return sorted(f.name for f in black.get_features_used(node, future_imports=future))


def _mode_for(feature_names: set[str]) -> black.Mode | None:
    """black.Mode() with the target versions black would infer for these features."""
    import black
    from black.mode import VERSION_TO_FEATURES, Feature

    try:
        features = {Feature[name] for name in feature_names}
    except KeyError:  # a damaged cache entry
        return None
    if Feature.PARENTHESIZED_CONTEXT_MANAGERS in features:
        # black may remove those parentheses, and its second pass re-infers the versions
        # from its own output: the inference would no longer be the file's.
        return None
    versions = {v for v in black.TargetVersion if features <= VERSION_TO_FEATURES[v]}
    if not versions:  # an empty set would mean "infer per chunk"
        return None
    return black.Mode(target_versions=versions)


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _read_json(path: Path) -> Any:
    text = _read_text(path)
    try:
        return json.loads(text) if text is not None else None
    except ValueError:
        return None


def _write(path: Path, text: str) -> None:
    """Written atomically (temporary + rename); a read-only cache is left alone."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}")
        temporary.write_text(text, encoding="utf-8")
        temporary.replace(path)
    except OSError:
        pass
