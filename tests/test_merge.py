"""merge.py: an adapter trained by a smoke run is merged into its base, and computes the same."""

from __future__ import annotations

import json

import pytest

import tiny
from smoke import generate, run_script, write_spec


def merged_folder(tmp_path, tiny_models, method, steps=10):
    model = tiny_models("llama")
    data = tiny.write_alpaca(tmp_path / "alpaca.jsonl", rows=40)
    run = generate(write_spec(tmp_path, model, data, method=method), tmp_path / "run")
    trained = run_script(run, "train.py", "--max-steps", str(steps), "--output-dir", "out")
    assert trained.returncode == 0, trained.stderr[-4000:]
    merged = run_script(run, "merge.py", "--adapter-dir", "out", "--output-dir", "merged")
    assert merged.returncode == 0, merged.stdout[-2000:] + merged.stderr[-4000:]
    return run, merged.stdout


def saved_dtypes(folder):
    from safetensors import safe_open

    dtypes = set()
    for shard in folder.glob("*.safetensors"):
        with safe_open(str(shard), "pt") as handle:
            dtypes |= {handle.get_slice(name).get_dtype() for name in handle.keys()}
    return dtypes


@pytest.mark.slow
def test_lora_merge_computes_what_base_plus_adapter_computes(tmp_path, tiny_models):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run, stdout = merged_folder(tmp_path, tiny_models, "lora")
    merged_dir = run / "merged"
    assert list(merged_dir.glob("*.safetensors")), sorted(p.name for p in merged_dir.iterdir())
    assert (merged_dir / "tokenizer_config.json").exists()
    assert "Saved the merged model to merged/" in stdout and "logit check" in stdout
    generation = json.loads((merged_dir / "generation_config.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    assert tokenizer.eos_token_id in [generation["eos_token_id"]] + list(
        generation["eos_token_id"] if isinstance(generation["eos_token_id"], list) else []
    )

    # Independently of merge.py: base + adapter in the merge precision, and the saved folder.
    config = json.loads((run / "out" / "adapter_config.json").read_text())
    base_path = config["base_model_name_or_path"]
    inputs = tokenizer("What colour is the cat number one?", return_tensors="pt")
    with torch.no_grad():
        base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.bfloat16).eval()
        base_only = base(**inputs).logits.float()
        reference = PeftModel.from_pretrained(base, run / "out").eval()(**inputs).logits.float()
        merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.bfloat16).eval()
        got = merged(**inputs).logits.float()
    assert "lora" not in " ".join(name for name, _ in merged.named_parameters())
    difference = (got - reference).abs().max().item()
    adapter_effect = (reference - base_only).abs().max().item()
    assert difference < 5e-2 * max(1.0, reference.abs().max().item()), difference
    assert adapter_effect > 10 * difference, (adapter_effect, difference)


@pytest.mark.slow
def test_qlora_merge_reloads_the_base_in_16_bits(tmp_path, tiny_models):
    run, stdout = merged_folder(tmp_path, tiny_models, "qlora", steps=6)
    assert "in bfloat16 (not quantized)" in stdout
    config = json.loads((run / "merged" / "config.json").read_text())
    assert "quantization_config" not in config
    assert saved_dtypes(run / "merged") == {"BF16"}
    assert 'MERGE_DTYPE = "bfloat16"' in (run / "merge.py").read_text()


@pytest.mark.parametrize(
    "method, has_merge",
    [("lora", True), ("dora", True), ("qlora", True), ("ia3", True), ("prefix_tuning", False), ("full", False)],
)
def test_merge_script_only_where_peft_can_merge(tmp_path, tiny_models, method, has_merge):
    model = tiny_models("llama")
    data = tiny.write_alpaca(tmp_path / "alpaca.jsonl", rows=20)
    run = generate(write_spec(tmp_path, model, data, method=method), tmp_path / "run")
    assert (run / "merge.py").exists() == has_merge
    readme = (run / "README.md").read_text()
    assert ("python merge.py" in readme) == has_merge


@pytest.mark.slow
def test_merged_chat_model_stops_at_the_end_of_turn_token(tmp_path, tiny_models):
    """A base without a chat template gets ChatML markers in training; the merged model keeps
    their trained rows and its generation config stops at <|im_end|> as well as EOS."""
    from transformers import AutoTokenizer

    model = tiny_models("llama")
    data = tiny.write_chat(tmp_path / "chat.jsonl", "chatml", rows=40)
    spec = write_spec(tmp_path, model, data, method="lora", task_type="chat", format="chatml")
    run = generate(spec, tmp_path / "run")
    trained = run_script(run, "train.py", "--max-steps", "4", "--output-dir", "out", "--report-to", "none")
    assert trained.returncode == 0, trained.stderr[-4000:]
    merged = run_script(run, "merge.py", "--adapter-dir", "out", "--output-dir", "merged")
    assert merged.returncode == 0, merged.stderr[-4000:]
    tokenizer = AutoTokenizer.from_pretrained(run / "merged")
    stop = json.loads((run / "merged" / "generation_config.json").read_text())["eos_token_id"]
    stop = {stop} if isinstance(stop, int) else set(stop)
    # train.py made <|im_end|> the saved EOS (it ends every learned turn); generation stops there.
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in stop
    assert tokenizer.eos_token_id in stop
