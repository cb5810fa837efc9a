"""Extract the option names of `vllm serve` from a vLLM wheel, without installing vLLM.

vLLM needs a CUDA build of torch and does not install on these CPU machines, so its argument
parser cannot be run here. Its options are declared in two files, though: explicit
`add_argument("--...")` calls, and dataclass fields of the frontend arguments that become
`--field-name`. This reads both from the wheel's source and writes the list that
tests/test_serve.py checks serve.sh against:

    pip download vllm==0.33.0 --no-deps -d /tmp/vllm
    python tests/vllm_flags.py /tmp/vllm/vllm-0.33.0-*.whl > tests/data/vllm-serve-flags.txt
"""

from __future__ import annotations

import ast
import re
import sys
import zipfile

SOURCES = ("vllm/engine/arg_utils.py", "vllm/entrypoints/common/cli_args.py")
FRONTEND_CLASSES = ("BaseFrontendArgs", "FrontendArgs")


def explicit_flags(tree: ast.AST) -> set[str]:
    flags = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument":
            for arg in node.args:
                if isinstance(arg, ast.Constant) and str(arg.value).startswith("--"):
                    flags.add(arg.value)
    return flags


def frontend_fields(tree: ast.AST) -> set[str]:
    flags = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name in FRONTEND_CLASSES:
            for item in node.body:
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    flags.add("--" + item.target.id.replace("_", "-"))
    return flags


def main(wheel: str) -> None:
    version = re.search(r"vllm-([^-]+)-", wheel)
    flags: set[str] = set()
    with zipfile.ZipFile(wheel) as archive:
        for name in SOURCES:
            tree = ast.parse(archive.read(name).decode())
            flags |= explicit_flags(tree) | frontend_fields(tree)
    print(f"# vllm {version.group(1) if version else '?'}: options of `vllm serve` (tests/vllm_flags.py)")
    print("\n".join(sorted(flags)))


if __name__ == "__main__":
    main(sys.argv[1])
