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
    assert "Contracts: 1 kept, 0 broken." in result.stdout


def test_no_import_is_excused_from_the_layers():
    """plan() orchestrates the recommender and the planner: nothing imports upward, not even lazily."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    for contract in config["tool"]["importlinter"]["contracts"]:
        assert not contract.get("ignore_imports"), contract["name"]
