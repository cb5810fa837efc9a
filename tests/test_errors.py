"""Bad input gets one clear line per problem, exit 2, no traceback (snapshot-tested).

Each tests/bad_specs/NAME.yaml (or .json) has NAME.expected: the exit code on the first line,
then the exact stderr. Update a snapshot only after reading it: the message is the interface
(`python tests/test_errors.py --update` writes the missing ones).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import run_cli

BAD = Path(__file__).parent / "bad_specs"
CASES = sorted(p.name for p in BAD.iterdir() if p.suffix in (".yaml", ".json"))
# No bad input may hang: a YAML alias bomb or a deep document is refused in well under this.
TIME_LIMIT_S = 30


def run_case(case: str):
    """The real CLI in this process (~30x faster than a subprocess), under a time limit."""
    import os
    import signal

    from click.testing import CliRunner

    from finetune_gen.cli import main

    def too_slow(*_):
        raise TimeoutError(f"{case}: no answer within {TIME_LIMIT_S} s")

    previous, here = signal.signal(signal.SIGALRM, too_slow), os.getcwd()
    signal.alarm(TIME_LIMIT_S)
    try:
        os.chdir(BAD)
        return CliRunner().invoke(main, ["generate", case, "--format", "json"], catch_exceptions=False)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        os.chdir(here)


@pytest.mark.parametrize("case", ["alias-bomb.yaml", "deep-nesting.yaml", "not-a-mapping.yaml"])
def test_bad_spec_message_from_a_real_process(case):
    """The in-process runner above is what a user sees: check it against a real process."""
    result = run_cli("generate", case, "--format", "json", cwd=BAD, timeout=TIME_LIMIT_S)
    expected = (BAD / f"{Path(case).stem}.expected").read_text()
    assert f"exit {result.returncode}\n{result.stderr}" == expected


@pytest.mark.parametrize("case", CASES)
def test_bad_spec_message(case):
    result = run_case(case)
    assert "Traceback" not in result.stderr
    got = f"exit {result.exit_code}\n{result.stderr}"
    expected = BAD / f"{Path(case).stem}.expected"
    assert expected.exists(), f"no snapshot for {case}; got:\n{got}"
    assert got == expected.read_text()
    assert result.exit_code in (2, 3)
    assert result.stdout == ""
    assert len(result.stderr) < 4000, "messages quote bad values only up to a short length"


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


if __name__ == "__main__":  # write snapshots that are missing; read each before committing
    import sys

    if "--update" in sys.argv:
        for case in CASES:
            target = BAD / f"{Path(case).stem}.expected"
            if not target.exists():
                result = run_case(case)
                target.write_text(f"exit {result.exit_code}\n{result.stderr}")
                print(f"{target.name}: exit {result.exit_code}")
