"""Bad inputs that need a setup a YAML file cannot carry: local model folders, FIFOs, folders.

Each case: exit 2, one message naming what is wrong, no traceback, no hang. Spec files alone
are in tests/bad_specs (snapshot files); data files in tests/test_data_*.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import run_cli

CONFIG = {
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "vocab_size": 100,
}
SPEC = (
    "base_model: ./model\ntask_type: instruction\n"
    "dataset: {path: org/data, format: alpaca, num_examples: 100}\n"
    "hardware: {gpus: 1, vram_per_gpu: 24GB}\n"
)
MODEL_CASES = {
    "heads-zero": ({"num_attention_heads": 0}, "num_attention_heads must be between 1 and"),
    "hidden-1e400": ({"hidden_size": 1e400}, "hidden_size must be a whole number, got inf"),
    "hidden-negative": ({"hidden_size": -64}, "hidden_size must be between 1 and"),
    "layers-zero": ({"num_hidden_layers": 0}, "num_hidden_layers must be between 1 and"),
    "vocab-bool": ({"vocab_size": True}, "vocab_size must be a whole number, got True"),
    "vocab-string": ({"vocab_size": "100"}, "vocab_size must be a whole number, got '100'"),
    "no-hidden": ({"hidden_size": None}, "no hidden_size (looked for hidden_size, n_embd, d_model)"),
    "kv-not-divisor": ({"num_key_value_heads": 3}, "is not a multiple of num_key_value_heads 3"),
    "hidden-not-divisible": ({"hidden_size": 66}, "hidden_size 66 is not a multiple of"),
    "model-type-list": ({"model_type": ["llama"]}, "model_type must be a string"),
    "intermediate-float": ({"intermediate_size": 1.5}, "intermediate_size must be a whole number"),
    "positions-huge": ({"max_position_embeddings": 2**40}, "max_position_embeddings must be between"),
}


def model_folder(root: Path, overrides: dict) -> Path:
    folder = root / "model"
    folder.mkdir()
    config = {**CONFIG, **overrides}
    config = {k: v for k, v in config.items() if v is not None}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def check(result, message: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    assert message in result.stderr, result.stderr
    assert len(result.stderr) < 2000


@pytest.mark.parametrize("case", sorted(MODEL_CASES))
def test_bad_local_config_json(case, tmp_path):
    overrides, message = MODEL_CASES[case]
    model_folder(tmp_path, overrides)
    (tmp_path / "spec.yaml").write_text(SPEC)
    check(run_cli("plan", "spec.yaml", cwd=tmp_path, timeout=60), message)


@pytest.mark.parametrize(
    "name,content,message",
    [
        ("config.json", b"[1, 2]", "config.json: expected a JSON object, got list"),
        ("config.json", b"null", "config.json: expected a JSON object, got NoneType"),
        ("config.json", b'{"hidden_size": ', "config.json:1:17: not valid JSON"),
        ("config.json", b"\xff\xfe{}", "config.json:1: not UTF-8 text"),
        ("chat_template.jinja", bytes(range(256)), "chat_template.jinja:2: not UTF-8 text (byte 0x80)"),
        ("tokenizer_config.json", b"{oops", "tokenizer_config.json:1:2: not valid JSON"),
    ],
)
def test_unreadable_model_files(tmp_path, name, content, message):
    folder = model_folder(tmp_path, {})
    (folder / name).write_bytes(content)
    (tmp_path / "spec.yaml").write_text(SPEC)
    check(run_cli("plan", "spec.yaml", cwd=tmp_path, timeout=60), message)


def test_model_folder_without_config(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "spec.yaml").write_text(SPEC)
    check(run_cli("plan", "spec.yaml", cwd=tmp_path, timeout=60), "local folder with no config.json")


def test_config_json_that_is_a_fifo(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    os.mkfifo(folder / "config.json")
    (tmp_path / "spec.yaml").write_text(SPEC)
    check(run_cli("plan", "spec.yaml", cwd=tmp_path, timeout=60), "is not a regular file")


def test_spec_that_is_a_fifo_is_refused_not_waited_on(tmp_path):
    os.mkfifo(tmp_path / "spec.yaml")
    check(run_cli("validate", "spec.yaml", cwd=tmp_path, timeout=30), "is not a regular file (a FIFO")


def test_spec_that_is_a_device(tmp_path):
    check(run_cli("validate", "/dev/zero", cwd=tmp_path, timeout=30), "is not a regular file")


def test_spec_that_is_a_folder(tmp_path):
    (tmp_path / "spec.yaml").mkdir()
    result = run_cli("validate", "spec.yaml", cwd=tmp_path, timeout=30)
    assert result.returncode == 2 and "Traceback" not in result.stderr


def test_huge_spec_is_refused_unread(tmp_path):
    (tmp_path / "spec.yaml").write_text("# " + "x" * (2 << 20))
    check(run_cli("validate", "spec.yaml", cwd=tmp_path, timeout=30), "a spec file is at most")


def test_hostile_spec_file_name_in_messages_is_harmless(tmp_path):
    name = "spec\x1b[2J\nrm -rf.yaml"
    (tmp_path / name).write_text("base_model: x\n")
    result = run_cli("validate", name, cwd=tmp_path, timeout=30)
    assert result.returncode == 2 and "Traceback" not in result.stderr


def test_a_hostile_spec_file_name_stays_on_one_line_in_messages(tmp_path):
    """A newline or an escape sequence in the spec's file name can't split or drive the output."""
    name = 'we"ird\nname\x1b[31m.yaml'
    spec = tmp_path / name
    spec.write_text("base_model: [unclosed\n")
    result = run_cli("validate", spec)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "\x1b" not in result.stderr and "\\n" in lines[0] and "YAML syntax error" in lines[0]
    missing = run_cli("validate", tmp_path / "gone\nname.yaml")
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1
