"""`generate --format notebook`: the run folder as one Jupyter notebook (nbformat 4).

Each file becomes a `%%writefile` cell, so running the notebook top to bottom recreates the
run folder in the notebook's directory and then trains.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .generate import Generated


def _cell(kind: str, text: str) -> dict:
    cell = {"cell_type": kind, "metadata": {}, "source": text.splitlines(keepends=True)}
    if kind == "code":
        cell.update(execution_count=None, outputs=[])
    return cell


def notebook_file(result: "Generated") -> str:
    cells = [_cell("markdown", result.files["README.md"])]
    for name, text in result.files.items():
        if name == "README.md":
            continue
        cells.append(_cell("code", f"%%writefile {name}\n{text}"))
    cells.append(_cell("code", "!python train.py --check-data"))
    cells.append(_cell("code", "!bash launch.sh --probe"))
    cells.append(_cell("code", "!bash launch.sh"))
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
