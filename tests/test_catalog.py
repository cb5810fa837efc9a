"""The model and GPU catalogs and ``resolve_model``'s resolution order (no network)."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
from pathlib import Path

import pytest

from finetune_gen.knowledge import catalog
from finetune_gen.knowledge.catalog import (
    chat_template_family_of,
    get_gpu,
    get_model,
    guess_gpu,
    list_gpus,
    list_models,
    resolve_model,
)
from finetune_gen.errors import SpecError

TINY_LLAMA_CONFIG = {
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 512,
    "max_position_embeddings": 256,
    "tie_word_embeddings": False,
}
FAMILIES = {"llama3", "llama2", "mistral", "chatml", "gemma", "phi3", "zephyr", "none"}


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    """No test touches the network or the user's cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("FINETUNE_GEN_OFFLINE", raising=False)

    def no_network(repo_id, filename):
        raise AssertionError(f"unexpected hub request for {repo_id}/{filename}")

    monkeypatch.setattr(catalog, "_hub_get", no_network)


# ----------------------------------------------------------------------------- model catalog


REQUIRED_IDS = [
    "meta-llama/Llama-2-7b-hf",
    "meta-llama/Llama-2-7b-chat-hf",
    "meta-llama/Llama-2-13b-hf",
    "meta-llama/Llama-2-70b-hf",
    "meta-llama/Llama-3.1-8B",
    "meta-llama/Llama-3.1-8B-Instruct",
    "meta-llama/Llama-3.1-70B",
    "meta-llama/Llama-3.1-70B-Instruct",
    "meta-llama/Llama-3.1-405B",
    "meta-llama/Llama-3.1-405B-Instruct",
    "meta-llama/Llama-3.2-1B",
    "meta-llama/Llama-3.2-1B-Instruct",
    "meta-llama/Llama-3.2-3B",
    "meta-llama/Llama-3.2-3B-Instruct",
    "meta-llama/Llama-3.3-70B-Instruct",
    "mistralai/Mistral-7B-v0.1",
    "mistralai/Mistral-7B-Instruct-v0.1",
    "mistralai/Mistral-7B-v0.3",
    "mistralai/Mistral-7B-Instruct-v0.3",
    "mistralai/Mixtral-8x7B-v0.1",
    "mistralai/Mixtral-8x7B-Instruct-v0.1",
    *[
        f"Qwen/Qwen2.5-{s}{v}"
        for s in ("0.5B", "1.5B", "3B", "7B", "14B", "32B", "72B")
        for v in ("", "-Instruct")
    ],
    *[f"Qwen/Qwen3-{s}" for s in ("0.6B", "1.7B", "4B", "8B", "14B", "32B")],
    *[f"google/gemma-2-{s}{v}" for s in ("2b", "9b", "27b") for v in ("", "-it")],
    "google/gemma-3-1b-pt",
    "google/gemma-3-1b-it",
    *[f"google/gemma-{s}{v}" for s in ("2b", "7b") for v in ("", "-it")],
    "microsoft/phi-1_5",
    "microsoft/phi-2",
    "microsoft/Phi-3-mini-4k-instruct",
    "microsoft/Phi-3-medium-4k-instruct",
    "microsoft/phi-4",
    "TinyLlama/TinyLlama-1.1B-Chat-v1.0",
    *[f"HuggingFaceTB/SmolLM2-{s}{v}" for s in ("135M", "360M", "1.7B") for v in ("", "-Instruct")],
    "openai-community/gpt2",
    "openai-community/gpt2-medium",
]


def test_required_models_present():
    ids = {m.id for m in list_models()}
    assert not [i for i in REQUIRED_IDS if i not in ids]


def test_catalog_entries_are_consistent():
    models = list_models()
    assert [m.id.lower() for m in models] == sorted(m.id.lower() for m in models)
    names: dict[str, str] = {}
    for m in models:
        for name in (m.id, *m.aliases):
            assert names.setdefault(name.lower(), m.id) == m.id, f"{name} names two entries"
        assert m.config["model_type"]
        assert m.chat_template_family in FAMILIES, m.id
        assert "chat_template_family" not in m.config and "base" not in m.config
        arch = m.architecture
        assert arch.has_chat_template == m.has_chat_template
        assert arch.num_layers > 0 and arch.hidden_size > 0 and arch.vocab_size > 0
        tail = m.id.split("/")[-1].lower()
        if tail.endswith(("-instruct", "-it", "-chat-hf")) or "-chat-" in tail:
            assert m.has_chat_template, m.id
        if m.published_params is not None:
            assert isinstance(m.published_params, int) and m.published_params > 0


def test_chat_template_facts():
    assert not get_model("meta-llama/Llama-3.1-8B").has_chat_template
    assert get_model("meta-llama/Llama-3.1-8B-Instruct").has_chat_template
    assert get_model("meta-llama/Llama-3.1-8B-Instruct").chat_template_family == "llama3"
    assert get_model("Qwen/Qwen2.5-7B").chat_template_family == "chatml"
    assert get_model("google/gemma-2-9b-it").chat_template_family == "gemma"
    assert get_model("microsoft/Phi-3-mini-4k-instruct").chat_template_family == "phi3"
    assert get_model("openai-community/gpt2").chat_template_family == "none"
    assert get_model("google/gemma-2b-it").has_chat_template
    assert not get_model("google/gemma-2b").has_chat_template
    assert get_model("google/gemma-2b-it").chat_template_family == "gemma"
    assert not get_model("microsoft/phi-1_5").has_chat_template


def test_gemma_and_phi_config_facts():
    """The config.json facts that size these models (published counts: test_params.py)."""
    g = get_model("google/gemma-2b").architecture
    assert (g.model_type, g.hidden_size, g.num_layers, g.intermediate_size) == (
        "gemma",
        2048,
        18,
        16384,
    )
    assert (g.num_attention_heads, g.num_key_value_heads, g.head_dim) == (8, 1, 256)
    assert (g.vocab_size, g.max_position_embeddings, g.tie_word_embeddings) == (256000, 8192, True)
    assert g.config["hidden_act"] == "gelu_pytorch_tanh"
    assert get_model("google/gemma-2b-it").config == get_model("google/gemma-2b").config
    p = get_model("phi-1.5").architecture
    assert (p.model_type, p.hidden_size, p.num_layers, p.num_attention_heads) == (
        "phi",
        2048,
        24,
        32,
    )
    assert (p.num_key_value_heads, p.head_dim, p.intermediate_size) == (32, 64, 8192)
    assert (p.vocab_size, p.max_position_embeddings, p.tie_word_embeddings) == (51200, 2048, False)
    assert p.config["partial_rotary_factor"] == 0.5
    assert p.decoder_layer_class == "PhiDecoderLayer"
    assert p.target_modules("recommended") == ["q_proj", "k_proj", "v_proj", "dense"]
    assert p.target_modules("minimal") == ["q_proj", "v_proj"]
    assert p.linear_module_names == ["q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"]


def test_instruct_inherits_base_config():
    base = get_model("meta-llama/Llama-3.1-8B")
    inst = get_model("meta-llama/Llama-3.1-8B-Instruct")
    assert inst.config == base.config
    assert inst.published_params == base.published_params == 8_030_261_248
    assert inst.aliases != base.aliases
    qwen = get_model("Qwen/Qwen2.5-7B-Instruct")
    assert qwen.config["max_position_embeddings"] == 32768
    assert get_model("Qwen/Qwen2.5-7B").config["max_position_embeddings"] == 131072


# ----------------------------------------------------------------------------- resolution


@pytest.mark.parametrize(
    "name,expected",
    [
        ("meta-llama/Llama-3.1-8B", "meta-llama/Llama-3.1-8B"),
        ("meta-llama/Meta-Llama-3.1-8B-Instruct", "meta-llama/Llama-3.1-8B-Instruct"),
        ("gpt2", "openai-community/gpt2"),
        ("GPT2-Medium", "openai-community/gpt2-medium"),
        ("qwen/qwen2.5-7b-instruct", "Qwen/Qwen2.5-7B-Instruct"),
        ("meta-llama/Llama-3.1-8b-instruct", "meta-llama/Llama-3.1-8B-Instruct"),
        ("  microsoft/Phi-4 ", "microsoft/phi-4"),
    ],
)
def test_resolve_catalog(name, expected):
    resolved = resolve_model(name)
    assert resolved.id == expected
    assert resolved.source == "catalog"
    assert resolved.config["model_type"] == resolved.architecture.model_type


def test_resolved_config_is_a_copy():
    resolved = resolve_model("openai-community/gpt2")
    resolved.config["n_layer"] = 99
    assert resolve_model("openai-community/gpt2").config["n_layer"] == 12


def _write_model_dir(folder: Path, **files) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(TINY_LLAMA_CONFIG))
    for name, content in files.items():
        name = name.replace("__", ".")
        text = content if isinstance(content, str) else json.dumps(content)
        (folder / name).write_text(text)
    return folder


def test_resolve_local_folder_without_template(tmp_path):
    folder = _write_model_dir(tmp_path / "tiny")
    resolved = resolve_model(str(folder))
    assert resolved.source == "local"
    assert resolved.id == str(folder)
    assert resolved.path == folder
    assert resolved.architecture.hidden_size == 64
    assert resolved.architecture.num_key_value_heads == 2
    assert not resolved.has_chat_template
    assert resolved.chat_template_family == "none"


def test_resolve_local_folder_with_tokenizer_template(tmp_path):
    template = (
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>{% endfor %}"
    )
    folder = _write_model_dir(tmp_path / "chat", tokenizer_config__json={"chat_template": template})
    resolved = resolve_model(str(folder))
    assert resolved.has_chat_template
    assert resolved.chat_template_family == "chatml"


def test_resolve_local_folder_with_jinja_file(tmp_path, monkeypatch):
    jinja = "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>' }}"
    _write_model_dir(
        tmp_path / "llama3",
        tokenizer_config__json={"model_max_length": 8192},
        chat_template__jinja=jinja,
    )
    monkeypatch.chdir(tmp_path)
    resolved = resolve_model("./llama3")
    assert resolved.source == "local" and resolved.id == "./llama3"
    assert resolved.has_chat_template and resolved.chat_template_family == "llama3"


def test_resolve_local_folder_multimodal_config(tmp_path):
    folder = tmp_path / "vlm"
    folder.mkdir()
    text = {k: v for k, v in TINY_LLAMA_CONFIG.items() if k != "tie_word_embeddings"}
    cfg = {"model_type": "llava", "text_config": text, "vision_config": {"hidden_size": 32}}
    (folder / "config.json").write_text(json.dumps(cfg))
    resolved = resolve_model(str(folder))
    assert resolved.architecture.hidden_size == 64
    assert resolved.config["model_type"] == "llava"


@pytest.mark.parametrize(
    "template,family",
    [
        ("<|im_start|>user", "chatml"),
        ("<|start_header_id|>user<|end_header_id|>", "llama3"),
        ("[INST] <<SYS>>\n", "llama2"),
        ("[INST] {{ content }} [/INST]", "mistral"),
        ("<start_of_turn>user", "gemma"),
        ("<|user|>\n{{ content }}<|end|>", "phi3"),
        ("<|user|>\n{{ content }}</s>", "zephyr"),
        ("User: {{ content }}", "custom"),
    ],
)
def test_chat_template_family_heuristics(template, family):
    assert chat_template_family_of(template) == family


def test_missing_local_path_is_a_spec_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SpecError, match="does not exist"):
        resolve_model("./no-such-model")
    with pytest.raises(SpecError, match="does not exist"):
        resolve_model(str(tmp_path / "absent"))
    with pytest.raises(SpecError, match="does not exist"):
        resolve_model("~/surely-not-a-model-folder-xyz")


def test_local_folder_without_config_is_a_spec_error(tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SpecError, match="config.json"):
        resolve_model(str(tmp_path / "empty"))
    # An existing relative folder that looks like a hub id is still a local path.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org" / "model").mkdir(parents=True)
    with pytest.raises(SpecError, match="no config.json"):
        resolve_model("org/model")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    with pytest.raises(SpecError, match="config.json:1:2: not valid JSON"):
        resolve_model("./broken")
    (tmp_path / "file.json").write_text("{}")
    with pytest.raises(SpecError, match="is a file"):
        resolve_model("./file.json")


@pytest.mark.parametrize("env", ["HF_HUB_OFFLINE", "FINETUNE_GEN_OFFLINE"])
@pytest.mark.parametrize(
    "typo,expected",
    [
        ("meta-llama/Llama-3.1-8B-Instruc", "meta-llama/Llama-3.1-8B-Instruct"),
        ("meta-llama/Llama-3.1-8-Instruct", "meta-llama/Llama-3.1-8B-Instruct"),
        ("meta-llama/Lama-3.1-8b-instruct", "meta-llama/Llama-3.1-8B-Instruct"),
        ("Qwen/Qwen2.5-7B-Instrut", "Qwen/Qwen2.5-7B-Instruct"),
        ("mistralai/Mistral-7B-Instruct-v0.4", "mistralai/Mistral-7B-Instruct-v0.3"),
    ],
)
def test_unknown_id_offline_names_close_ids(monkeypatch, env, typo, expected):
    monkeypatch.setenv(env, "1")
    with pytest.raises(SpecError) as info:
        resolve_model(typo)
    message = str(info.value)
    assert expected in message
    assert "config.json" in message and "offline" in message
    assert message.count(", ") >= 2  # three suggestions


def test_not_a_repo_id(monkeypatch):
    with pytest.raises(SpecError, match="not a Hugging Face id"):
        resolve_model("what is this model?")
    with pytest.raises(SpecError, match="empty"):
        resolve_model("   ")


def test_hub_lookup_is_cached_and_used_offline(monkeypatch, tmp_path):
    calls = []
    template = "{{ '<start_of_turn>' }}"
    files = {
        "config.json": json.dumps(TINY_LLAMA_CONFIG).encode(),
        "tokenizer_config.json": json.dumps({"chat_template": template}).encode(),
    }

    def fake_get(repo_id, filename):
        calls.append((repo_id, filename))
        return files.get(filename)

    monkeypatch.setattr(catalog, "_hub_get", fake_get)
    resolved = resolve_model("some-org/some-model")
    assert resolved.source == "hub" and resolved.id == "some-org/some-model"
    assert resolved.architecture.vocab_size == 512
    assert resolved.has_chat_template and resolved.chat_template_family == "gemma"
    cached = tmp_path / "cache" / "finetune-gen" / "configs" / "some-org--some-model.json"
    assert json.loads(cached.read_text())["config"]["hidden_size"] == 64
    n = len(calls)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    again = resolve_model("some-org/some-model")
    assert len(calls) == n and again.architecture == resolved.architecture


def test_hub_errors_become_spec_errors(monkeypatch):
    def not_found(repo_id, filename):
        raise urllib.error.HTTPError("url", 404, "Not Found", {}, None)

    monkeypatch.setattr(catalog, "_hub_get", not_found)
    with pytest.raises(SpecError, match="not found on the hub.*Llama-3.1-8B"):
        resolve_model("meta-llama/Llama-3.1-8B-Instrukt")

    def unreachable(repo_id, filename):
        raise urllib.error.URLError("timed out")

    monkeypatch.setattr(catalog, "_hub_get", unreachable)
    with pytest.raises(SpecError, match="unreachable"):
        resolve_model("some-org/other-model")


# ----------------------------------------------------------------------------- GPUs

REQUIRED_GPUS = [
    "h200",
    "h100_80gb",
    "h100_pcie",
    "a100_80gb",
    "a100_40gb",
    "a10g_24gb",
    "l4",
    "l40s",
    "rtx_4090",
    "rtx_3090",
    "a6000",
    "t4",
    "v100_16gb",
    "v100_32gb",
]


def test_gpu_catalog_complete_and_sane():
    gpus = list_gpus()
    names = [g.name for g in gpus]
    assert names == sorted(names)
    assert not [n for n in REQUIRED_GPUS if n not in names]
    for g in gpus:
        assert g.display and g.memory_gb > 0 and g.bandwidth_gbs > 0, g.name
        assert g.tflops_fp16 > 0 and g.tflops_fp32 > 0 and g.price_usd_hour > 0, g.name
        assert g.price_source.strip() and g.price_date.strip(), g.name
        assert g.supports_bf16 == (g.tflops_bf16 is not None), g.name
        assert g.supports_bf16 == (float(g.compute_capability) >= 8.0), g.name
        if g.supports_bf16:
            assert g.tflops_bf16 > 0 and g.peak_tflops("bf16") == g.tflops_bf16
        else:
            with pytest.raises(SpecError, match="bf16"):
                g.peak_tflops("bf16")
        assert g.tflops_fp32 < g.tflops_fp16


def test_gpu_facts():
    assert get_gpu("h100_80gb").tflops_bf16 == 989  # dense, not the 2:4 sparse 1979
    assert get_gpu("a100_80gb").tflops_bf16 == 312
    assert get_gpu("h200").memory_gb == 141
    # The seed's cost table.
    assert get_gpu("a100_80gb").price_usd_hour == 4.00
    assert get_gpu("a10g_24gb").price_usd_hour == 1.50
    assert get_gpu("rtx_4090").price_usd_hour == 0.50


@pytest.mark.parametrize(
    "alias,name",
    [
        ("a100", "a100_80gb"),
        ("A100-80GB", "a100_80gb"),
        ("A100_40GB", "a100_40gb"),
        ("h100", "h100_80gb"),
        ("H100 PCIe", "h100_pcie"),
        ("RTX 4090", "rtx_4090"),
        ("4090", "rtx_4090"),
        ("rtx-a6000", "a6000"),
        ("A10G", "a10g_24gb"),
        ("Tesla-T4", "t4"),
        ("L40S", "l40s"),
        ("v100", "v100_16gb"),
    ],
)
def test_gpu_aliases(alias, name):
    assert get_gpu(alias).name == name


def test_unknown_gpu():
    with pytest.raises(SpecError, match="unknown GPU type 'a1000'.*a100_80gb") as info:
        get_gpu("a1000")
    assert "Known GPU types" in str(info.value)
    with pytest.raises(SpecError):
        get_gpu("tpu-v5")


def test_guess_gpu():
    assert guess_gpu(24).name == "a10g_24gb"
    assert guess_gpu(24 * 1.073741824).name == "a10g_24gb"  # "24 GiB" in GB
    assert guess_gpu(80).name == "a100_80gb"
    assert guess_gpu(40).name == "a100_40gb"
    assert guess_gpu(16).name == "t4"
    assert guess_gpu(48).name == "l40s"
    assert guess_gpu(141).name == "h200"
    assert guess_gpu(12) is None
    assert guess_gpu(1000) is None
    assert guess_gpu(0) is None


# ----------------------------------------------------------------------------- import cost


def test_import_does_not_load_torch():
    code = (
        "import sys, finetune_gen.knowledge.catalog as c, finetune_gen.knowledge.params as p;"
        "r = c.resolve_model('meta-llama/Llama-3.1-8B'); c.list_gpus();"
        "p.count_params(r.architecture); p.trainable_params(r.architecture, 'lora');"
        "heavy = [m for m in ('torch', 'transformers', 'peft') if m in sys.modules];"
        "print(','.join(heavy) or 'light')"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "light"
