"""`generate --format notebook`: the run folder as one Jupyter notebook (nbformat 4.5).

The notebook runs top to bottom: it writes the run folder's files (`%%writefile` cells of the
generated files themselves, so nothing can drift from `generate -o`), installs what is
missing, shows the plan and the data with its masking, trains, evaluates and merges, each
step by running the run folder's own scripts.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from finetune_gen.api import Generated

# The order the files are written in: what a reader wants to see first.
FIRST_FILES = ("config.yaml", "requirements.txt", "train.py", "eval.py", "launch.sh")

RUN_HELPER = '''\
import os
import subprocess
import sys


def run(*command):
    """Run one of the run folder's scripts, its output shown here; stop the notebook on failure."""
    env = dict(os.environ)
    # `python` in the scripts is this kernel's interpreter.
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    for line in process.stdout:
        print(line, end="")
    if process.wait() != 0:
        raise RuntimeError(f"{' '.join(command)} failed with exit code {process.returncode}")
'''

INSTALL_CELL = """\
# Install the packages in requirements.txt that this kernel cannot import yet.
import importlib.util
import re

MODULES = {"scikit-learn": "sklearn", "pyyaml": "yaml"}
requirements = [line.split("#")[0].strip() for line in open("requirements.txt", encoding="utf-8")]
names = [re.split(r"[<>=!~;\\[ ]", line)[0] for line in requirements if line]
missing = [name for name in names if importlib.util.find_spec(MODULES.get(name.lower(), name).replace("-", "_")) is None]
if missing:
    print("installing:", ", ".join(missing))
    run(sys.executable, "-m", "pip", "install", "-q", "-r", "requirements.txt")
else:
    print("every package in requirements.txt is installed")
"""

DATA_PREVIEW_CELL = """\
# The first rows as train.py reads them (its own loader and split), then one example with
# its masking: [masked] tokens are context, <<learned>> tokens carry the loss.
import importlib

import train

importlib.reload(train)
train_rows, eval_rows = train.load_rows()
print(f"{len(train_rows)} training rows, {len(eval_rows)} evaluation rows")
train_rows.select(range(min(3, len(train_rows)))).to_pandas()
"""


def _cell(index: int, kind: str, text: str) -> dict:
    cell = {
        "cell_type": kind,
        "id": f"cell-{index:02d}",
        "metadata": {},
        "source": text.splitlines(keepends=True),
    }
    if kind == "code":
        cell.update(execution_count=None, outputs=[])
    return cell


def _section(markdown: str, title: str) -> str:
    """One `## title` section of the README (its heading included), or ""."""
    match = re.search(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", markdown, re.S | re.M)
    return match.group(0).strip() + "\n" if match else ""


def _ordered(files: dict[str, str]) -> list[str]:
    first = [name for name in FIRST_FILES if name in files]
    return first + sorted(name for name in files if name not in first and name != "README.md")


def notebook_cells(result: "Generated") -> list[tuple[str, str]]:
    """(kind, source) of each cell, in order."""
    files = result.files
    readme = files["README.md"]
    title = readme.splitlines()[0]
    plan = result.plan
    cells: list[tuple[str, str]] = [
        (
            "markdown",
            f"{title}\n\nRun the cells top to bottom: they write the run folder beside this notebook, "
            "install what is missing, check the data, train, evaluate"
            + (" and merge the adapter" if "merge.py" in files else "")
            + ".\n\n"
            + _section(readme, "The plan")
            + (
                "\n" + _section(readme, "Read before running")
                if "## Read before running" in readme
                else ""
            ),
        ),
        (
            "markdown",
            "## The run folder\n\nThe generated files, exactly as `finetune-gen generate -o` writes them.",
        ),
    ]
    for name in _ordered(files):
        cells.append(("code", f"%%writefile {name}\n{files[name]}"))
    cells += [
        ("markdown", "## Setup"),
        ("code", RUN_HELPER),
        ("code", INSTALL_CELL),
        (
            "markdown",
            "## The data\n\nThe first rows, then how one example is tokenized and which tokens are learned.",
        ),
        ("code", DATA_PREVIEW_CELL),
        ("code", 'run(sys.executable, "train.py", "--check-data")'),
        (
            "markdown",
            "## Training\n\nThe planned run (`launch.sh`). Add options to `TRAIN_OPTIONS`, e.g. "
            '`["--max-steps", "20"]` for a short smoke run.',
        ),
        ("code", 'TRAIN_OPTIONS = []\nrun("bash", "launch.sh", *TRAIN_OPTIONS)'),
        ("markdown", "## Evaluation"),
        ("code", f'run(sys.executable, "eval.py", "--model-dir", {json.dumps(plan.output_dir)})'),
    ]
    if "merge.py" in files:
        cells += [
            (
                "markdown",
                "## Merge\n\nThe adapter merged into the base model, checked against base + adapter.",
            ),
            ("code", 'run(sys.executable, "merge.py")'),
        ]
    if "serve.sh" in files:
        cells.append(
            (
                "markdown",
                "## Serve\n\nOn a machine with a GPU and vLLM: `bash serve.sh` (an OpenAI-compatible "
                "API; the script ends with a `curl` example).",
            )
        )
    return cells


def notebook_file(result: "Generated") -> str:
    cells = [_cell(index, kind, text) for index, (kind, text) in enumerate(notebook_cells(result))]
    notebook = {
        "cells": cells,
        "metadata": {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    return json.dumps(notebook, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
