"""`finetune_gen.knowledge.params` against transformers and peft, to the last parameter.

Every catalog model is built from its config on the meta device (no memory, ~0.05 s each);
peft adapters are applied to fresh meta models for a representative subset.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from transformers import (  # noqa: E402
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
)
from transformers.pytorch_utils import Conv1D  # noqa: E402

from finetune_gen.knowledge.architecture import Architecture  # noqa: E402
from finetune_gen.knowledge.catalog import get_model, list_models  # noqa: E402
from finetune_gen.errors import SpecError  # noqa: E402
from finetune_gen.knowledge.params import (  # noqa: E402
    adapts_fused_experts,
    count_params,
    is_exact,
    linear_shapes,
    lokr_factorization,
    resolve_target_modules,
    trainable_params,
)

pytestmark = pytest.mark.filterwarnings(
    "ignore::FutureWarning", "ignore:.*did not match any targeted module:RuntimeWarning"
)

ALL_IDS = [m.id for m in list_models()]

# One model per family (and size class), plus every method on Llama-3.1-8B.
PEFT_SUBSET = [
    "meta-llama/Llama-3.1-8B",
    "meta-llama/Llama-3.2-1B",
    "mistralai/Mistral-7B-v0.3",
    "mistralai/Mixtral-8x7B-v0.1",
    "Qwen/Qwen2.5-0.5B",
    "Qwen/Qwen3-0.6B",
    "google/gemma-2-2b",
    "google/gemma-3-1b-pt",
    "microsoft/Phi-3-mini-4k-instruct",
    "microsoft/phi-1_5",
    "google/gemma-2b",
    "HuggingFaceTB/SmolLM2-135M",
    "openai-community/gpt2",
]


def _config(model_id: str, **extra):
    entry = get_model(model_id)
    return AutoConfig.for_model(**{**entry.config, **extra})


def _meta_model(model_id: str, task: str = "causal_lm", num_labels: int = 2):
    with torch.device("meta"):
        if task == "sequence_classification":
            cfg = _config(model_id, num_labels=num_labels)
            return AutoModelForSequenceClassification.from_config(cfg)
        return AutoModelForCausalLM.from_config(_config(model_id))


def _arch(model_id: str) -> Architecture:
    return get_model(model_id).architecture


def _trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _layers_and_final_norm(model):
    base = model.base_model
    layers = base.h if hasattr(base, "h") else base.layers
    if hasattr(base, "ln_f"):
        norm = base.ln_f
    elif hasattr(base, "final_layernorm"):  # phi
        norm = base.final_layernorm
    else:
        norm = base.norm
    return layers, norm


# ----------------------------------------------------------------------------- totals


@pytest.mark.parametrize("model_id", ALL_IDS)
def test_total_matches_transformers(model_id):
    entry = get_model(model_id)
    model = _meta_model(model_id)
    counts = count_params(entry.architecture)
    n = model.num_parameters()
    assert counts.total == n
    if entry.published_params is not None:
        assert entry.published_params == n

    # The breakdown, module by module.
    emb = sum(p.numel() for p in model.get_input_embeddings().parameters())
    if model.config.model_type == "gpt2":
        emb += model.transformer.wpe.weight.numel()
    assert counts.embedding == emb
    head = model.get_output_embeddings()
    tied = head.weight is model.get_input_embeddings().weight
    assert counts.lm_head == (0 if tied else head.weight.numel())
    linear = sum(
        m.weight.numel()
        for m in model.modules()
        if isinstance(m, (torch.nn.Linear, Conv1D)) and m is not head
    )
    assert counts.quantizable_linear == linear
    layers, _ = _layers_and_final_norm(model)
    assert counts.per_layer == sum(p.numel() for p in layers[0].parameters())
    assert counts.num_layers == len(layers)
    assert (
        counts.total == counts.quantizable_linear + counts.embedding + counts.lm_head + counts.other
    )
    assert counts.largest_layer == max(counts.per_layer, counts.embedding, counts.lm_head)


SYNTHETIC = [
    {"model_type": "llama", "attention_bias": True, "mlp_bias": True, "head_dim": 32},
    {"model_type": "llama", "tie_word_embeddings": True},
    {"model_type": "gemma", "head_dim": 48},
    {"model_type": "qwen3", "attention_bias": True, "tie_word_embeddings": False},
    {"model_type": "qwen2", "tie_word_embeddings": False},
    {"model_type": "mistral", "head_dim": 40},
    {"model_type": "phi3", "num_key_value_heads": 2, "pad_token_id": 0},
    {"model_type": "qwen3", "head_dim": None},
    {"model_type": "gemma", "head_dim": None},
    {"model_type": "gemma2", "head_dim": 24, "tie_word_embeddings": False},
    {"model_type": "gemma3_text", "head_dim": 24},
    {"model_type": "mixtral", "num_local_experts": 4, "num_experts_per_tok": 2},
    {"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 4, "n_inner": 96},
    {"model_type": "phi", "num_key_value_heads": None},
    {"model_type": "phi", "qk_layernorm": True, "tie_word_embeddings": True},
    {"model_type": "phi", "head_dim": 8},
]


@pytest.mark.parametrize("overrides", SYNTHETIC, ids=lambda o: "-".join(map(str, o.values())))
def test_shape_keys_on_small_configs(overrides):
    """Keys that change shapes (biases, head_dim, ties, experts), beyond the catalog's values."""
    base = {
        "hidden_size": 64,
        "intermediate_size": 96,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 128,
        "max_position_embeddings": 64,
    }
    cfg = {**base, **overrides} if overrides["model_type"] != "gpt2" else dict(overrides)
    cfg = {k: v for k, v in cfg.items() if v is not None}  # None: the config class's default
    cfg.setdefault("vocab_size", 128)
    arch = Architecture.from_config(cfg)
    assert is_exact(arch)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**cfg))
    assert count_params(arch).total == model.num_parameters()
    targets = "all-linear"
    with torch.device("meta"):
        pm = peft.get_peft_model(model, peft.LoraConfig(r=4, target_modules=targets))
    assert trainable_params(arch, "lora", target_modules=targets, r=4) == _trainable(pm)


def test_linear_shapes_match_modules():
    for model_id in PEFT_SUBSET:
        model = _meta_model(model_id)
        layers, _ = _layers_and_final_norm(model)
        modules = dict(layers[0].named_modules())
        params = dict(layers[0].named_parameters())
        for s in linear_shapes(_arch(model_id)):
            if s.kind == "experts":
                assert params[s.path].numel() == s.weight_params, (model_id, s)
                continue
            if s.kind == "router":
                assert type(modules[s.path]).__name__ == "MixtralTopKRouter"
                assert params[s.path + ".weight"].numel() == s.weight_params
                continue
            mod = modules[s.path]
            assert type(mod).__name__ == ("Conv1D" if s.kind == "conv1d" else "Linear")
            assert mod.weight.numel() == s.d_in * s.d_out
            assert (mod.bias is not None) == s.bias, (model_id, s.path)
            if s.kind == "linear":
                assert (mod.in_features, mod.out_features) == (s.d_in, s.d_out)


def test_mixtral_experts_are_fused_parameters():
    """transformers 5: experts are 3-D parameters, not nn.Linear: bnb leaves them in 16 bit."""
    arch = _arch("mistralai/Mixtral-8x7B-v0.1")
    counts = count_params(arch)
    model = _meta_model("mistralai/Mixtral-8x7B-v0.1")
    fused = sum(p.numel() for n, p in model.named_parameters() if ".experts." in n)
    assert counts.experts == fused > 0.9 * counts.total
    assert counts.quantizable_linear == 32 * 4096 * (4096 + 1024 + 1024 + 4096)
    assert not any(isinstance(m, torch.nn.Linear) for n, m in model.named_modules() if "mlp" in n)
    # peft 0.21 turns all-linear into q/k/v/o + target_parameters on router and experts
    # (checked against peft in test_trainable_matches_peft); DoRA cannot wrap those.
    assert adapts_fused_experts(arch, "lora", "all-linear")
    assert not adapts_fused_experts(arch, "lora", ["q_proj", "v_proj"])
    with pytest.raises(SpecError, match="DoRA"):
        trainable_params(arch, "dora", target_modules="all-linear")
    model = _meta_model("mistralai/Mixtral-8x7B-v0.1")
    with torch.device("meta"), pytest.raises(ValueError, match="use_dora"):
        peft.get_peft_model(model, peft.LoraConfig(target_modules="all-linear", use_dora=True))
    model = _meta_model("mistralai/Mixtral-8x7B-v0.1")
    with torch.device("meta"), pytest.raises(ValueError, match="lora_dropout"):
        cfg = peft.LoraConfig(target_modules="all-linear", lora_dropout=0.05)
        peft.get_peft_model(model, cfg)


@pytest.mark.parametrize("model_id", PEFT_SUBSET)
def test_quantizable_linear_is_what_bitsandbytes_replaces(model_id):
    bnb = pytest.importorskip("bitsandbytes")
    from transformers import BitsAndBytesConfig
    from transformers.integrations.bitsandbytes import replace_with_bnb_linear
    from transformers.quantizers.base import get_keys_to_not_convert

    model = _meta_model(model_id)
    skip = get_keys_to_not_convert(model)
    qc = BitsAndBytesConfig(load_in_4bit=True)
    model = replace_with_bnb_linear(model, modules_to_not_convert=skip, quantization_config=qc)
    replaced = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    weights = sum(m.in_features * m.out_features for m in replaced)
    assert count_params(_arch(model_id)).quantizable_linear == weights


SEQ_CLS = [
    "Qwen/Qwen2.5-0.5B",
    "meta-llama/Llama-3.2-1B",
    "meta-llama/Llama-3.1-8B",
    "google/gemma-2-2b",
    "microsoft/Phi-3-mini-4k-instruct",
    "microsoft/phi-1_5",
    "openai-community/gpt2",
]


@pytest.mark.parametrize("model_id", SEQ_CLS)
def test_sequence_classification_total(model_id):
    model = _meta_model(model_id, "sequence_classification", num_labels=3)
    counts = count_params(_arch(model_id), task="sequence_classification", num_labels=3)
    assert counts.total == model.num_parameters()
    assert counts.lm_head == model.score.weight.numel()


def test_known_numbers():
    arch = _arch("meta-llama/Llama-3.1-8B")
    assert count_params(arch).total == 8_030_261_248
    qkvo = ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert trainable_params(arch, "lora", target_modules=qkvo, r=16) == 13_631_488
    # ESTIMATION.md 1.1: Llama-2-7B, r=8 on q,v.
    llama2 = _arch("meta-llama/Llama-2-7b-hf")
    assert trainable_params(llama2, "lora", target_modules=["q_proj", "v_proj"], r=8) == 4_194_304
    assert trainable_params(llama2, "qlora", target_modules=["q_proj", "v_proj"], r=8) == 4_194_304
    # Published totals; phi's lm_head bias (51,200) is in `other`, not in `lm_head`.
    gemma = count_params(_arch("google/gemma-2b"))
    assert gemma.total == 2_506_172_416 and gemma.lm_head == 0
    assert count_params(_arch("google/gemma-7b")).total == 8_537_680_896
    phi = _arch("microsoft/phi-1_5")
    counts = count_params(phi)
    assert counts.total == 1_418_270_720
    assert counts.lm_head == 51200 * 2048 and counts.embedding == 51200 * 2048
    # biases of q, k, v, dense, fc2 (h) and fc1 (i), the LayerNorms, the lm_head bias
    assert counts.other == 24 * (5 * 2048 + 8192 + 2 * 2048) + 2 * 2048 + 51200
    assert count_params(_arch("microsoft/phi-2")).total == 2_779_683_840
    # litgpt's phi-1.5 LoRA (r=8 on q and v): 24 * 2 * 8 * (2048 + 2048)
    assert trainable_params(phi, "lora", target_modules=["q_proj", "v_proj"], r=8) == 1_572_864


# ----------------------------------------------------------------------------- peft


def _peft_config(method: str, task: str, targets, r: int = 16):
    task_type = "SEQ_CLS" if task == "sequence_classification" else "CAUSAL_LM"
    if method == "lora":
        return peft.LoraConfig(r=r, target_modules=targets, task_type=task_type)
    if method == "dora":
        return peft.LoraConfig(r=r, target_modules=targets, use_dora=True, task_type=task_type)
    if method == "ia3":
        return peft.IA3Config(task_type=task_type)
    if method == "loha":
        return peft.LoHaConfig(r=r, target_modules=targets, task_type=task_type)
    if method == "lokr":
        return peft.LoKrConfig(r=r, target_modules=targets, task_type=task_type)
    if method == "prefix_tuning":
        return peft.PrefixTuningConfig(num_virtual_tokens=20, task_type=task_type)
    if method == "prompt_tuning":
        return peft.PromptTuningConfig(num_virtual_tokens=20, task_type=task_type)
    raise AssertionError(method)


def _peft_count(model_id, method, targets, task="causal_lm", r=16):
    model = _meta_model(model_id, task)
    with torch.device("meta"):
        pm = peft.get_peft_model(model, _peft_config(method, task, targets, r))
    return _trainable(pm)


def _ours(model_id, method, targets, task="causal_lm", r=16):
    arch = _arch(model_id)
    if method == "ia3":
        targets = None  # IA3Config(): peft's defaults for the model type
    elif targets is not None and targets != "all-linear":
        targets = resolve_target_modules(arch, targets)
    return trainable_params(arch, method, target_modules=targets, r=r, task=task)


CASES = []
for _mid in PEFT_SUBSET:
    for _method, _targets in (
        ("lora", "recommended"),
        ("lora", "all-linear"),
        ("dora", "all-linear"),
        ("ia3", None),
        ("prefix_tuning", None),
        ("prompt_tuning", None),
    ):
        if _method == "ia3" and _mid.startswith("microsoft/Phi-3"):
            continue  # peft has no IA3 defaults for phi3 (see test_ia3_phi3_needs_targets)
        if _method == "dora" and _mid.startswith("mistralai/Mixtral"):
            _targets = "recommended"  # all-linear: see test_mixtral_experts_are_fused_parameters
        CASES.append((_mid, _method, _targets))
# Every method and preset on Llama-3.1-8B; LoHa/LoKr on a few more shapes.
for _method, _targets in (
    ("lora", "minimal"),
    ("lora", None),
    ("dora", "recommended"),
    ("loha", "recommended"),
    ("loha", "all-linear"),
    ("lokr", "recommended"),
    ("lokr", "all-linear"),
):
    CASES.append(("meta-llama/Llama-3.1-8B", _method, _targets))
for _mid in ("Qwen/Qwen2.5-0.5B", "microsoft/Phi-3-mini-4k-instruct", "google/gemma-3-1b-pt"):
    CASES.append((_mid, "lokr", "all-linear"))
    CASES.append((_mid, "loha", "all-linear"))


@pytest.mark.parametrize("model_id,method,targets", CASES)
def test_trainable_matches_peft(model_id, method, targets):
    peft_targets = targets
    if targets is not None and targets != "all-linear":
        peft_targets = resolve_target_modules(_arch(model_id), targets)
    if method in ("ia3", "prefix_tuning", "prompt_tuning"):
        peft_targets = None
    assert _ours(model_id, method, targets) == _peft_count(model_id, method, peft_targets)


@pytest.mark.parametrize(
    "model_id", ["Qwen/Qwen2.5-0.5B", "meta-llama/Llama-3.2-1B", "openai-community/gpt2"]
)
@pytest.mark.parametrize(
    "method,targets",
    [
        ("lora", "recommended"),
        ("lora", "all-linear"),
        ("dora", "all-linear"),
        ("ia3", None),
        ("prompt_tuning", None),
        ("prefix_tuning", None),
    ],
)
def test_sequence_classification_trainable_matches_peft(model_id, method, targets):
    task = "sequence_classification"
    peft_targets = targets
    if targets == "recommended":
        peft_targets = resolve_target_modules(_arch(model_id), targets)
    if method in ("ia3", "prefix_tuning", "prompt_tuning"):
        peft_targets = None
    ours = _ours(model_id, method, targets, task=task)
    assert ours == _peft_count(model_id, method, peft_targets, task=task)


@pytest.mark.parametrize(
    "model_id,task",
    [(m, "causal_lm") for m in PEFT_SUBSET]
    + [(m, "sequence_classification") for m in PEFT_SUBSET if m in SEQ_CLS],
)
def test_freeze_and_full(model_id, task):
    model = _meta_model(model_id, task)
    assert trainable_params(_arch(model_id), "full", task=task) == _trainable(model)
    # The simple implementation: requires_grad only on the top N layers and the final norm
    # (and the new classification head).
    for p in model.parameters():
        p.requires_grad_(False)
    layers, norm = _layers_and_final_norm(model)
    for layer in list(layers)[-2:]:
        layer.requires_grad_(True)
    norm.requires_grad_(True)
    if task == "sequence_classification":
        model.score.requires_grad_(True)
    ours = trainable_params(_arch(model_id), "freeze", freeze_trainable_layers=2, task=task)
    assert ours == _trainable(model)


def test_lora_on_explicit_gpt2_paths_and_regex():
    arch = _arch("openai-community/gpt2")
    for targets in (["mlp.c_proj"], ["c_proj"], r".*\.attn\.c_attn", ["c_attn", "c_fc"]):
        model = _meta_model("openai-community/gpt2")
        with torch.device("meta"):
            pm = peft.get_peft_model(model, peft.LoraConfig(r=8, target_modules=targets))
        assert trainable_params(arch, "lora", target_modules=targets, r=8) == _trainable(pm)


def test_ia3_with_explicit_targets():
    arch = _arch("meta-llama/Llama-3.2-1B")
    targets = ["q_proj", "v_proj", "up_proj", "down_proj"]
    model = _meta_model("meta-llama/Llama-3.2-1B")
    with torch.device("meta"):
        pm = peft.get_peft_model(model, peft.IA3Config(target_modules=targets))
    assert trainable_params(arch, "ia3", target_modules=targets) == _trainable(pm)


def test_ia3_phi3_needs_targets():
    arch = _arch("microsoft/Phi-3-mini-4k-instruct")
    with pytest.raises(SpecError, match="IA3"):
        trainable_params(arch, "ia3", target_modules=None)
    targets, ff = ["qkv_proj", "down_proj"], ["down_proj"]
    model = _meta_model("microsoft/Phi-3-mini-4k-instruct")
    with torch.device("meta"):
        cfg = peft.IA3Config(target_modules=targets, feedforward_modules=ff)
        pm = peft.get_peft_model(model, cfg)
    ours = trainable_params(arch, "ia3", target_modules=targets, feedforward_modules=ff)
    assert ours == _trainable(pm)


# ----------------------------------------------------------------------------- pure helpers


def test_lokr_factorization_matches_peft():
    from peft.tuners.lokr.layer import factorization

    for dim in (1, 2, 7, 64, 127, 128, 256, 896, 1024, 1152, 4864, 14336, 32064, 151936):
        assert lokr_factorization(dim) == factorization(dim)
    assert lokr_factorization(128, 4) == factorization(128, 4)


def test_resolve_target_modules_presets_and_validation():
    llama = _arch("meta-llama/Llama-3.1-8B")
    assert resolve_target_modules(llama, "minimal") == ["q_proj", "v_proj"]
    assert resolve_target_modules(llama, None) == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert resolve_target_modules(llama, "all") == "all-linear"
    assert resolve_target_modules(llama, "all-linear") == "all-linear"
    assert resolve_target_modules(llama, ["q_proj", "q_proj", "down_proj"]) == [
        "q_proj",
        "down_proj",
    ]
    assert resolve_target_modules(llama, "q_proj,v_proj") == ["q_proj", "v_proj"]
    with pytest.raises(SpecError, match="valid module names: q_proj"):
        resolve_target_modules(llama, ["c_attn"])
    gpt2 = _arch("openai-community/gpt2")
    assert resolve_target_modules(gpt2, "recommended") == ["c_attn", "c_proj"]
    assert resolve_target_modules(gpt2, ["mlp.c_proj"]) == ["mlp.c_proj"]
    with pytest.raises(SpecError, match="c_attn"):
        resolve_target_modules(gpt2, ["q_proj"])
    phi3 = _arch("microsoft/Phi-3-mini-4k-instruct")
    with pytest.raises(SpecError):
        resolve_target_modules(phi3, ["q_proj"])


def test_errors():
    llama = _arch("meta-llama/Llama-3.1-8B")
    with pytest.raises(SpecError, match="unknown method"):
        trainable_params(llama, "adapter")
    with pytest.raises(SpecError, match="unknown task"):
        count_params(llama, task="token_classification")
    with pytest.raises(SpecError, match="match no module"):
        trainable_params(llama, "lora", target_modules=["c_attn"])
    with pytest.raises(SpecError, match="Conv1D"):
        trainable_params(_arch("openai-community/gpt2"), "lokr")
    with pytest.raises(SpecError, match="default"):
        trainable_params(_arch("microsoft/Phi-3-mini-4k-instruct"), "lora", target_modules=None)
