"""Bad input gets one clear line per problem, exit 2, no traceback (snapshot-tested).

Each tests/bad_specs/NAME.yaml has NAME.expected: the exit code on the first line, then the
exact stderr. Update a snapshot only after reading it: the message is the interface.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import run_cli

BAD = Path(__file__).parent / "bad_specs"
CASES = sorted(p.stem for p in BAD.glob("*.yaml"))


@pytest.mark.parametrize("case", CASES)
def test_bad_spec_message(case):
    result = run_cli("generate", f"{case}.yaml", "--format", "json", cwd=BAD)
    assert "Traceback" not in result.stderr
    got = f"exit {result.returncode}\n{result.stderr}"
    expected = BAD / f"{case}.expected"
    assert expected.exists(), f"no snapshot for {case}; got:\n{got}"
    assert got == expected.read_text()
    assert result.returncode in (2, 3)
    assert result.stdout == ""


def test_validate_accepts_a_good_spec():
    result = run_cli("validate", "examples/llama-lora-alpaca.yaml")
    assert result.returncode == 0 and "valid" in result.stdout


def test_generate_refuses_a_non_empty_folder_without_force(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    result = run_cli("generate", "examples/llama-lora-alpaca.yaml", "-o", tmp_path)
    assert result.returncode == 2 and "--force" in result.stderr
    forced = run_cli("generate", "examples/llama-lora-alpaca.yaml", "-o", tmp_path, "--force")
    assert forced.returncode == 0, forced.stderr
    assert (tmp_path / "notes.txt").read_text() == "mine"  # other files are kept
    assert (tmp_path / "train.py").exists()


def test_missing_spec_file_is_a_usage_error():
    result = run_cli("generate", "nope.yaml", "--format", "json")
    assert result.returncode == 2 and "Traceback" not in result.stderr
