"""`finetune-gen check-data SPEC` runs train.py's own label builder when the model is local.

The generated script is rendered for the spec and imported, so the figures are training's:
rows the chat template refuses (exit 2, named by file row, before any GPU time), the share of
tokens learned, responses cut at max_seq_length and the real token lengths.
"""

from __future__ import annotations

import json

import pytest
from chat_templates import FAMILIES, system_merged
from conftest import run_cli
from smoke import write_spec
from test_chat_templates import conversations, write_conversations

pytest.importorskip("transformers")


def check_data(spec, *extra):
    return run_cli("check-data", spec, *extra, timeout=600)


def test_real_lengths_learned_share_and_truncation_come_from_the_label_builder(
    tmp_path, tiny_models
):
    from transformers import AutoTokenizer

    name, limit = "gemma3", 48
    items = conversations(12)
    data = write_conversations(tmp_path / "chat.jsonl", items)
    model = tiny_models("llama", family=name)
    spec = write_spec(
        tmp_path, model, data, task_type="chat", format="chatml", max_seq_length=limit
    )
    result = check_data(spec, "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    examples = json.loads(result.stdout)["training_examples"]
    assert "generated train.py" in examples["builder"]
    tokenizer = AutoTokenizer.from_pretrained(model)
    ids = [tokenizer.apply_chat_template(m, tokenize=True)["input_ids"] for m in items]
    lengths = sorted(len(x) for x in ids)
    assert examples["rows"] == len(items) and examples["refused"]["count"] == 0
    assert examples["token_lengths"]["max"] == lengths[-1]
    assert examples["token_lengths"]["min"] == lengths[0]
    assert examples["over_max_seq_length"] == sum(n > limit for n in lengths) > 0
    # A row is truncated when a learned token lies beyond the limit: at least the rows whose
    # last reply ends past it (the reply ends the conversation, so those with length > limit).
    assert examples["truncated"]["count"] == examples["over_max_seq_length"]
    closing = tokenizer.convert_tokens_to_ids(FAMILIES[name].closing)
    learned_turns = sum(x[:limit].count(closing) for x in ids)
    assert 0 < examples["learned_token_share"] < 1
    assert learned_turns > 0


def test_rows_the_template_refuses_stop_check_data_by_row(tmp_path, tiny_models):
    """Gemma 2 has no system role; with system_message: error train.py would stop on every row
    with a system message: check-data says so, with the rows, instead of `format: ok`."""
    items = conversations(6)  # rows 1, 3, 5 have a system message
    data = write_conversations(tmp_path / "chat.jsonl", items)
    spec = write_spec(
        tmp_path,
        tiny_models("llama", family="gemma2"),
        data,
        task_type="chat",
        format="chatml",
        dataset={"system_message": "error"},
    )
    result = check_data(spec)
    assert result.returncode == 2, (result.stdout, result.stderr[-3000:])
    assert "train.py would stop on these rows" in result.stderr
    for row in (1, 3, 5):
        assert f"row {row}: has a system message" in result.stderr
    assert "row 2:" not in result.stderr
    assert "Traceback" not in result.stderr
    merged = write_spec(
        tmp_path,
        tiny_models("llama", family="gemma2"),
        data,
        task_type="chat",
        format="chatml",
        dataset={"system_message": "merge"},
    )
    result = check_data(merged)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "training examples (built by the generated train.py" in result.stdout
    assert system_merged(items[0])[0]["content"].startswith("You repeat words.")
