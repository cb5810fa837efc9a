"""Loading a spec file: YAML (libyaml, duplicate keys, alias bombs and depth refused) or JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from finetune_gen.errors import SpecError, short_repr
from finetune_gen.files.read import read_text_file
from finetune_gen.models.spec import Spec, parse_spec

# A spec is a short file: anything bigger, deeper or more repetitive is not one.
MAX_SPEC_BYTES = 1 << 20
MAX_DEPTH = 32
MAX_VALUES = 10_000
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: ~7x faster


def _yaml_problem(source: str, node: yaml.Node, message: str) -> SpecError:
    mark = node.start_mark
    return SpecError(f"{source}:{mark.line + 1}:{mark.column + 1}: {message}")


def _check_yaml_tree(root: yaml.Node, source: str) -> None:
    """Refuse duplicate keys, deep nesting and alias bombs before anything is constructed.

    Aliases make a node appear many times; sizes are counted per distinct node (memoized), so
    a "billion laughs" document is measured without being expanded.
    """
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: yaml.Node, depth: int) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if depth > MAX_DEPTH:
            raise _yaml_problem(source, node, f"nested more than {MAX_DEPTH} levels deep")
        if key in active:
            raise _yaml_problem(source, node, "an alias refers to the value that contains it")
        active.add(key)
        total = 1
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, yaml.Node] = {}
            for key_node, value_node in node.value:
                if isinstance(key_node, yaml.ScalarNode):
                    if key_node.value in seen:
                        first = seen[key_node.value].start_mark.line + 1
                        raise _yaml_problem(
                            source,
                            key_node,
                            f"duplicate key {short_repr(key_node.value)} (first set on line {first})",
                        )
                    seen[key_node.value] = key_node
                total += size(key_node, depth + 1) + size(value_node, depth + 1)
        elif isinstance(node, yaml.SequenceNode):
            total += sum(size(item, depth + 1) for item in node.value)
        if total > MAX_VALUES:
            raise _yaml_problem(
                source,
                node,
                f"expands to more than {MAX_VALUES:,} values (YAML aliases?); not a spec",
            )
        active.discard(key)
        sizes[key] = total
        return total

    size(root, 0)


def _load_yaml(text: str, source: str, loader_class: Any = _Loader) -> Any:
    loader = loader_class(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_yaml_tree(node, source)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise SpecError(f"duplicate key {short_repr(key)} in a JSON object")
        result[key] = value
    return result


def _json_constant(name: str) -> Any:
    raise SpecError(f"{name} is not a JSON number")


def _json_depth(text: str) -> int:
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
            continue
        if ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def read_spec_data(path: str | Path) -> Any:
    """Read YAML (safe loader only) or JSON; syntax errors name the line and column."""
    path = Path(path)
    text = read_text_file(path, "spec", MAX_SPEC_BYTES)
    if path.suffix.lower() == ".json":
        if _json_depth(text) > MAX_DEPTH:
            raise SpecError(f"{path}: nested more than {MAX_DEPTH} levels deep")
        try:
            return json.loads(text, object_pairs_hook=_json_object, parse_constant=_json_constant)
        except json.JSONDecodeError as error:
            raise SpecError(
                f"{path}:{error.lineno}:{error.colno}: JSON syntax error: {error.msg}"
            ) from None
        except SpecError as error:
            raise SpecError(f"{path}: {error.message}") from None
    try:
        try:
            return _load_yaml(text, str(path))
        except yaml.YAMLError:
            # Parse again with the pure-Python loader: its messages are clearer than libyaml's.
            return _load_yaml(text, str(path), yaml.SafeLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(error, "problem", None) or str(error)
        raise SpecError(f"{where}: YAML syntax error: {problem}") from None
    except RecursionError:
        raise SpecError(f"{path}: nested too deeply") from None


def load_spec(path: str | Path) -> Spec:
    return parse_spec(read_spec_data(path), source=str(path))
