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
