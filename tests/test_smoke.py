"""Generated train.py / eval.py / probe.py really run: tiny offline models on the CPU."""

from __future__ import annotations

import json

import pytest

import tiny
from smoke import assert_trained, generate, run_script, write_spec

pytestmark = pytest.mark.slow


def test_lora_instruction_alpaca_trains_and_evaluates(tmp_path, tiny_models):
    """The issue's foundation path: LoRA, instruction, alpaca; then eval.py and probe.py."""
    model = tiny_models("llama")
    data = tiny.write_alpaca(tmp_path / "alpaca.jsonl", rows=60)
    spec = write_spec(tmp_path, model, data, method="lora")
    run = generate(spec, tmp_path / "run")

    result = run_script(run, "train.py", "--max-steps", "20", "--output-dir", "out")
    assert (
        "running on the CPU in fp32" in result.stdout
        or "training on the CPU in fp32" in result.stdout
    )
    assert_trained(result, run / "out", "adapter_model.safetensors")
    assert (run / "out" / "tokenizer_config.json").exists()

    evaluated = run_script(run, "eval.py", "--model-dir", "out", "--max-samples", "4")
    assert evaluated.returncode == 0, evaluated.stderr[-4000:]
    results = json.loads((run / "out" / "eval_metrics.json").read_text())
    assert results["perplexity"] > 1 and results["label_tokens"] > 0
    assert 0 <= results["token_f1"] <= 1
    assert "contamination" in results

    probed = run_script(run, "probe.py", "--steps", "2", "--seq-length", "64")
    assert probed.returncode == 0, probed.stderr[-4000:]
    measured = json.loads((run / "probe_results.json").read_text())
    assert measured["tokens_per_second_per_gpu"] > 0


def test_resume_continues_from_the_newest_checkpoint(tmp_path, tiny_models):
    model = tiny_models("llama")
    data = tiny.write_alpaca(tmp_path / "alpaca.jsonl", rows=40)
    spec = write_spec(tmp_path, model, data, method="lora")
    run = generate(spec, tmp_path / "run")
    first = run_script(run, "train.py", "--max-steps", "4", "--output-dir", "out")
    assert first.returncode == 0, first.stderr[-3000:]
    assert any(p.name.startswith("checkpoint-") for p in (run / "out").iterdir())
    resumed = run_script(run, "train.py", "--max-steps", "6", "--output-dir", "out", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resuming from" in resumed.stdout
    state = json.loads((run / "out" / "trainer_state.json").read_text())
    assert state["global_step"] == 6


def test_check_data_shows_masking_and_stops(tmp_path, tiny_models):
    model = tiny_models("llama")
    data = tiny.write_alpaca(tmp_path / "alpaca.jsonl", rows=20)
    run = generate(write_spec(tmp_path, model, data, method="lora"), tmp_path / "run")
    result = run_script(run, "train.py", "--check-data")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "<<The" in result.stdout and "### Response:" in result.stdout
    assert not (run / "outputs").exists()


def test_bad_row_is_named_at_start_up(tmp_path, tiny_models):
    model = tiny_models("llama")
    data = tiny.write_alpaca(tmp_path / "alpaca.jsonl", rows=20)
    run = generate(write_spec(tmp_path, model, data, method="lora"), tmp_path / "run")
    # Break the file after generation (the generator checks it too): train.py must say which row.
    rows = data.read_text().splitlines()
    rows[3] = json.dumps({"instruction": "x", "input": ""})
    data.write_text("\n".join(rows) + "\n")
    result = run_script(run, "train.py", "--check-data")
    assert result.returncode != 0
    assert "field 'output' is missing or empty" in result.stderr + result.stdout
