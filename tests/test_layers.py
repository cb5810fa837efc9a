"""The package's layers import one way (contracts in pyproject.toml, docs/architecture.md)."""

from __future__ import annotations

import shutil
import subprocess
import sys

from conftest import ROOT


def test_import_contracts_are_kept():
    command = shutil.which("lint-imports") or str(sys.executable).replace("python", "lint-imports")
    result = subprocess.run([command], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " 0 broken." in result.stdout


def test_every_module_is_in_a_layer():
    """A module outside every contract would be free to import anything: each package folder is
    a layer of the first contract, and each top-level module is named in it."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    layers = config["tool"]["importlinter"]["contracts"][0]["layers"]
    named = {name.strip() for layer in layers for name in layer.split("|")}
    package = ROOT / "finetune_gen"
    modules = {f"finetune_gen.{p.stem}" for p in package.glob("*.py") if p.stem not in ("__init__", "__main__")}
    folders = {f"finetune_gen.{p.parent.name}" for p in package.glob("*/__init__.py")}
    assert modules | folders == named


def test_no_import_is_excused_from_the_layers():
    """plan() orchestrates the recommender and the planner: nothing imports upward, not even lazily."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    for contract in config["tool"]["importlinter"]["contracts"]:
        assert not contract.get("ignore_imports"), contract["name"]
