"""Golden run folders: the real CLI regenerates each golden/<case>/expected/ byte for byte."""

from __future__ import annotations

import difflib
import shutil
from pathlib import Path

import pytest

from conftest import ROOT, run_cli

CASES = sorted(p.name for p in (ROOT / "golden").iterdir() if (p / "spec.yaml").exists())
UPDATE = "python tests/update_golden.py   (then read `git diff golden/` before committing)"


# The manifest holds hashes of the other files: derived, and tested in tests/test_writer.py.
MANIFEST = ".finetune-gen.json"


def tree(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }


def copy_case(case: str, tmp_path: Path) -> Path:
    """The case without its expected output, so the output folder's relative paths match."""
    target = tmp_path / case
    shutil.copytree(
        ROOT / "golden" / case, target, ignore=shutil.ignore_patterns("expected", "plan.txt")
    )
    return target


@pytest.mark.parametrize("case", CASES)
def test_golden_run_folder(case, tmp_path):
    work = copy_case(case, tmp_path)
    expected_dir = ROOT / "golden" / case / "expected"
    result = run_cli("generate", "spec.yaml", "-o", "expected", cwd=work)
    if not expected_dir.exists():
        assert result.returncode != 0, "golden case without expected/ must fail to generate"
        return
    assert result.returncode == 0, result.stderr
    want, got = tree(expected_dir), tree(work / "expected")
    assert sorted(got) == sorted(
        want
    ), f"files differ: missing {sorted(set(want) - set(got))}, extra {sorted(set(got) - set(want))}; update: {UPDATE}"
    for name in want:
        if got[name] != want[name]:
            diff = "".join(
                difflib.unified_diff(
                    want[name].decode().splitlines(True),
                    got[name].decode().splitlines(True),
                    f"golden/{case}/expected/{name}",
                    f"generated/{name}",
                )
            )
            pytest.fail(
                f"{name} differs from the golden file:\n{diff}\nIf intended, update with: {UPDATE}"
            )


@pytest.mark.parametrize("case", [c for c in CASES if (ROOT / "golden" / c / "plan.txt").exists()])
def test_golden_plan_output(case, tmp_path):
    work = copy_case(case, tmp_path)
    result = run_cli("plan", "spec.yaml", cwd=work)
    got = f"exit {result.returncode}\n{result.stdout}{result.stderr}"
    want = (ROOT / "golden" / case / "plan.txt").read_text()
    if got != want:
        diff = "".join(
            difflib.unified_diff(
                want.splitlines(True), got.splitlines(True), "plan.txt", "generated"
            )
        )
        pytest.fail(
            f"`finetune-gen plan` output differs:\n{diff}\nIf intended, update with: {UPDATE}"
        )


def test_output_is_identical_under_different_hash_seeds(tmp_path):
    import os
    import subprocess
    import sys

    work = copy_case(CASES[0], tmp_path)
    outputs = []
    for seed in ("1", "4242"):
        out = f"out-{seed}"
        subprocess.run(
            [sys.executable, "-m", "finetune_gen", "generate", "spec.yaml", "-o", out],
            cwd=work,
            check=True,
            capture_output=True,
            env={**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)},
        )
        outputs.append(tree(work / out))
    assert outputs[0] == outputs[1]


def test_generated_python_is_lint_clean():
    """Every golden script passes ruff's default rules (pyflakes, syntax, import order)."""
    import subprocess
    import sys

    scripts = sorted(str(p) for p in (ROOT / "golden").glob("*/expected/*.py"))
    assert scripts
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--isolated", "--no-cache", *scripts],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
