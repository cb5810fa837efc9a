"""Rewrite golden/*/expected/ (and plan.txt) from the current generator.

Run from the repository root after a deliberate change to the output, and read the diff
(`git diff golden/`) before committing it:

    python tests/update_golden.py
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from conftest import run_cli  # noqa: E402

PLAN_CASES = ("llama-lora-alpaca", "llama70b-no-fit", "mistral-full-fallback")


def update(case: Path) -> None:
    expected = case / "expected"
    if expected.exists():
        shutil.rmtree(expected)
    result = run_cli("generate", "spec.yaml", "-o", "expected", cwd=case)
    if result.returncode == 0:
        (expected / ".finetune-gen.json").unlink()  # derived hashes; tests/test_writer.py checks it
        print(f"{case.name}: {len(list(expected.iterdir()))} files")
    if case.name in PLAN_CASES or (case / "plan.txt").exists() or result.returncode != 0:
        plan = run_cli("plan", "spec.yaml", cwd=case)
        (case / "plan.txt").write_text(f"exit {plan.returncode}\n{plan.stdout}{plan.stderr}")
        print(f"{case.name}: plan.txt (exit {plan.returncode})")


if __name__ == "__main__":
    for case in sorted((ROOT / "golden").iterdir()):
        if (case / "spec.yaml").exists():
            update(case)
