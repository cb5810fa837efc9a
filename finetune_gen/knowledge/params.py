"""Exact parameter accounting from an :class:`~finetune_gen.knowledge.architecture.Architecture`.

Pure arithmetic: nothing here imports torch, transformers or peft, yet every number equals
what they report (``model.num_parameters()`` of the model built on the meta device, and the
``requires_grad`` parameters after ``peft.get_peft_model``); ``tests/test_params.py`` checks
this for every catalog model.

Module shapes follow the transformers 5 modelling code of each supported ``model_type``
(llama, mistral, mixtral, qwen2, qwen3, gemma, gemma2, gemma3_text, phi3, phi, gpt2). Unknown
types are counted as Llama-style decoders, which is exact only for models built like Llama.

Choices worth knowing:

* ``quantizable_linear`` counts the *weights* of the ``nn.Linear`` / ``Conv1D`` modules that
  bitsandbytes replaces when a model is loaded in 4 or 8 bit (every one inside the decoder
  layers; never ``lm_head`` / ``score``). Their biases stay in 16 bit and are counted in
  ``other``, like norms.
* Mixtral's experts are fused 3-D ``nn.Parameter`` tensors in transformers 5
  (``mlp.experts.gate_up_proj`` [E, 2i, h], ``mlp.experts.down_proj`` [E, h, i]) and its
  router (``mlp.gate``) is a custom module, not ``nn.Linear``: bitsandbytes leaves all of
  them in 16 bit, so they are counted in ``other`` (the experts also in ``experts``). peft
  0.21 maps LoRA ``all-linear`` on Mixtral to q/k/v/o *plus* ``target_parameters`` on the
  router and both expert tensors (rank 2r on the fused gate_up, r elsewhere), which
  :func:`trainable_params` reproduces; that wrapper refuses DoRA and ``lora_dropout != 0``
  (see :func:`adapts_fused_experts`). Named lists (q/k/v/o) adapt attention only.
* phi (phi-1, phi-1.5, phi-2) has biases on every Linear and on ``lm_head``. The lm_head bias
  is not part of ``lm_head`` (which counts the weight only, 0 when tied) but of ``other``.
* ``freeze`` trains the top ``freeze_trainable_layers`` decoder layers and the final norm
  (and the classification head for sequence classification); embeddings and an untied
  ``lm_head`` stay frozen.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from finetune_gen.errors import SpecError, short_repr
from finetune_gen.knowledge.architecture import Architecture
from finetune_gen.variants.methods import LORA_FAMILY
from finetune_gen.variants.methods import METHOD_NAMES as METHODS

TASKS = ("causal_lm", "sequence_classification")
# Model types whose counts are checked against transformers; others are counted as Llama.
EXACT_MODEL_TYPES = frozenset(
    {
        "llama",
        "mistral",
        "mixtral",
        "qwen2",
        "qwen3",
        "gemma",
        "gemma2",
        "gemma3_text",
        "phi3",
        "phi",
        "gpt2",
    }
)

# peft's default IA3 targets / feed-forward modules per model type (peft.utils.constants,
# TRANSFORMERS_MODELS_TO_IA3_*); names that do not exist in the transformers 5 model (Mixtral's
# "w2") simply match nothing, as in peft.
_IA3_TARGETS = {
    "gpt2": (["c_attn", "mlp.c_proj"], ["mlp.c_proj"]),
    "llama": (["k_proj", "v_proj", "down_proj"], ["down_proj"]),
    "mistral": (["k_proj", "v_proj", "down_proj"], ["down_proj"]),
    "mixtral": (["k_proj", "v_proj", "w2"], ["w2"]),
    "falcon": (["query_key_value", "dense_4h_to_h"], ["dense_4h_to_h"]),
    "gemma": (["q_proj", "v_proj", "down_proj"], ["down_proj"]),
    "gemma2": (["q_proj", "v_proj", "down_proj"], ["down_proj"]),
    "gemma3_text": (["q_proj", "v_proj", "down_proj"], ["down_proj"]),
    "phi": (["q_proj", "v_proj", "fc2"], ["fc2"]),
    "qwen2": (["q_proj", "v_proj", "down_proj"], ["down_proj"]),
    "qwen3": (["q_proj", "v_proj", "down_proj"], ["down_proj"]),
}


def ia3_modules(model_type: str) -> tuple[list[str], list[str]] | None:
    """peft's default IA3 (target_modules, feedforward_modules) for a model type, if it has them."""
    found = _IA3_TARGETS.get(model_type)
    return (list(found[0]), list(found[1])) if found else None


# peft's default LoRA / LoHa / LoKr targets (TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING).
_LORA_DEFAULT_TARGETS = {
    "gpt2": ["c_attn"],
    "llama": ["q_proj", "v_proj"],
    "mistral": ["q_proj", "v_proj"],
    "mixtral": ["q_proj", "v_proj"],
    "falcon": ["query_key_value"],
    "gemma": ["q_proj", "v_proj"],
    "gemma2": ["q_proj", "v_proj"],
    "gemma3_text": ["q_proj", "v_proj"],
    "phi": ["q_proj", "v_proj", "fc1", "fc2"],
    "qwen2": ["q_proj", "v_proj"],
    "qwen3": ["q_proj", "v_proj"],
}
_LLAMA_STYLE = ("llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text")


@dataclass(frozen=True)
class LinearShape:
    """One weight matrix of a decoder layer, as transformers builds it.

    ``name`` is the module's own name (what a LoRA target list names), ``path`` its dotted
    path inside the layer (``self_attn.q_proj``, ``mlp.c_proj``). ``kind`` is ``linear``
    (``nn.Linear``), ``conv1d`` (transformers' ``Conv1D``, GPT-2), ``experts`` (a fused
    3-D MoE parameter holding ``count`` expert matrices) or ``router`` (an MoE router's
    weight in a custom module). Only ``linear`` and ``conv1d`` are modules that peft target
    lists and bitsandbytes replace.
    """

    name: str
    path: str
    d_in: int
    d_out: int
    bias: bool = False
    count: int = 1
    kind: str = "linear"

    @property
    def weight_params(self) -> int:
        return self.count * self.d_in * self.d_out

    @property
    def bias_params(self) -> int:
        return self.count * self.d_out if self.bias else 0

    @property
    def params(self) -> int:
        return self.weight_params + self.bias_params

    @property
    def adaptable(self) -> bool:
        """Whether peft (LoRA, ``all-linear``) and bitsandbytes can replace the module."""
        return self.kind in ("linear", "conv1d")


@dataclass(frozen=True)
class ParamCounts:
    """Where a model's parameters are: ``total = quantizable_linear + embedding + lm_head + other``.

    ``lm_head`` is the output head: ``lm_head`` for causal LMs (0 when tied to the input
    embedding) or the ``score`` Linear for sequence classification. Linear biases, norms, an MoE
    router and fused MoE experts are in ``other``: bitsandbytes keeps all of them in 16 bit.
    """

    total: int  # == model.num_parameters() on the meta device (tied weights counted once)
    quantizable_linear: int  # weights of the decoder-layer Linear/Conv1D modules (no biases)
    embedding: int  # token (+ learned position) embeddings
    lm_head: int  # the output head: lm_head (0 when tied), or `score` for classification
    other: int  # norms, linear biases, MoE router and fused experts
    per_layer: int  # params of one decoder layer
    largest_layer: int  # max(per_layer, embedding, lm_head): ZeRO-3 live-parameter estimate
    experts: int = 0  # fused MoE expert parameters (part of `other`; stay 16-bit under bnb)
    num_layers: int = 0


def is_exact(arch: Architecture) -> bool:
    """Whether :func:`count_params` knows this model type's modules (else: Llama-style guess)."""
    return arch.model_type in EXACT_MODEL_TYPES


def _cfg(arch: Architecture, key: str, default):
    value = arch.config.get(key) if arch.config else None
    return default if value is None else value


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise SpecError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")


def linear_shapes(arch: Architecture) -> list[LinearShape]:
    """The weight matrices of one decoder layer (every layer of these models is the same)."""
    h, i = arch.hidden_size, arch.intermediate_size
    q_out = arch.num_attention_heads * arch.head_dim
    kv_out = arch.num_key_value_heads * arch.head_dim
    mt = arch.model_type

    if mt == "gpt2":
        return [
            LinearShape("c_attn", "attn.c_attn", h, 3 * h, True, kind="conv1d"),
            LinearShape("c_proj", "attn.c_proj", h, h, True, kind="conv1d"),
            LinearShape("c_fc", "mlp.c_fc", h, i, True, kind="conv1d"),
            LinearShape("c_proj", "mlp.c_proj", i, h, True, kind="conv1d"),
        ]
    if mt == "phi":
        return [
            LinearShape("q_proj", "self_attn.q_proj", h, q_out, True),
            LinearShape("k_proj", "self_attn.k_proj", h, kv_out, True),
            LinearShape("v_proj", "self_attn.v_proj", h, kv_out, True),
            LinearShape("dense", "self_attn.dense", q_out, h, True),
            LinearShape("fc1", "mlp.fc1", h, i, True),
            LinearShape("fc2", "mlp.fc2", i, h, True),
        ]
    if mt == "phi3":
        return [
            LinearShape("qkv_proj", "self_attn.qkv_proj", h, q_out + 2 * kv_out),
            LinearShape("o_proj", "self_attn.o_proj", q_out, h),
            LinearShape("gate_up_proj", "mlp.gate_up_proj", h, 2 * i),
            LinearShape("down_proj", "mlp.down_proj", i, h),
        ]

    if mt == "qwen2":
        qkv_bias, o_bias = True, False
    elif mt in ("mistral", "mixtral"):
        qkv_bias = o_bias = False
    else:  # llama, qwen3, gemma*, and unknown Llama-style types
        qkv_bias = o_bias = bool(_cfg(arch, "attention_bias", False))
    shapes = [
        LinearShape("q_proj", "self_attn.q_proj", h, q_out, qkv_bias),
        LinearShape("k_proj", "self_attn.k_proj", h, kv_out, qkv_bias),
        LinearShape("v_proj", "self_attn.v_proj", h, kv_out, qkv_bias),
        LinearShape("o_proj", "self_attn.o_proj", q_out, h, o_bias),
    ]
    if mt == "mixtral":
        e = arch.num_experts
        shapes += [
            LinearShape(
                "gate_up_proj", "mlp.experts.gate_up_proj", h, 2 * i, count=e, kind="experts"
            ),
            LinearShape("down_proj", "mlp.experts.down_proj", i, h, count=e, kind="experts"),
            LinearShape("gate", "mlp.gate", h, e, kind="router"),
        ]
        return shapes
    # Only LlamaMLP reads config.mlp_bias; the others hard-code bias=False.
    mlp_bias = (mt == "llama" or mt not in _LLAMA_STYLE) and bool(_cfg(arch, "mlp_bias", False))
    shapes += [
        LinearShape("gate_proj", "mlp.gate_proj", h, i, mlp_bias),
        LinearShape("up_proj", "mlp.up_proj", h, i, mlp_bias),
        LinearShape("down_proj", "mlp.down_proj", i, h, mlp_bias),
    ]
    return shapes


def _layer_norms(arch: Architecture) -> int:
    """Parameters of one decoder layer outside :func:`linear_shapes` (norms)."""
    h, d = arch.hidden_size, arch.head_dim
    mt = arch.model_type
    if mt == "gpt2":
        return 2 * 2 * h  # ln_1, ln_2 (LayerNorm: weight + bias)
    if mt == "phi":
        n = 2 * h  # input_layernorm (LayerNorm: weight + bias), shared by attention and MLP
        if _cfg(arch, "qk_layernorm", False):
            n += 2 * 2 * (h // arch.num_attention_heads)  # q_layernorm, k_layernorm
        return n
    n = 2 * h  # input_layernorm, post_attention_layernorm
    if mt in ("gemma2", "gemma3_text"):
        n += 2 * h  # pre_feedforward_layernorm, post_feedforward_layernorm
    if mt in ("qwen3", "gemma3_text"):
        n += 2 * d  # q_norm, k_norm over the head dimension
    return n


def _final_norm(arch: Architecture) -> int:
    """The final norm: LayerNorm (weight + bias) for gpt2 and phi, RMSNorm (weight) otherwise."""
    return 2 * arch.hidden_size if arch.model_type in ("gpt2", "phi") else arch.hidden_size


def _head_bias(arch: Architecture, task: str) -> int:
    """phi's lm_head has a bias (also when its weight is tied); counted in ``other``."""
    return arch.vocab_size if (arch.model_type == "phi" and task == "causal_lm") else 0


def _embedding(arch: Architecture) -> int:
    n = arch.vocab_size * arch.hidden_size
    if arch.model_type == "gpt2":
        n += arch.max_position_embeddings * arch.hidden_size  # wpe
    return n


def _head(arch: Architecture, task: str, num_labels: int) -> int:
    if task == "sequence_classification":
        return arch.hidden_size * num_labels  # score: Linear(h, num_labels, bias=False)
    return 0 if arch.tie_word_embeddings else arch.vocab_size * arch.hidden_size


def count_params(
    arch: Architecture, *, task: str = "causal_lm", num_labels: int = 2
) -> ParamCounts:
    """Parameter counts of ``AutoModelForCausalLM`` (or ``...ForSequenceClassification``)."""
    _check_task(task)
    shapes = linear_shapes(arch)
    per_layer = sum(s.params for s in shapes) + _layer_norms(arch)
    layers = arch.num_layers
    embedding = _embedding(arch)
    head = _head(arch, task, num_labels)
    total = layers * per_layer + embedding + head + _final_norm(arch) + _head_bias(arch, task)
    quantizable = layers * sum(s.weight_params for s in shapes if s.adaptable)
    experts = layers * sum(s.params for s in shapes if s.kind == "experts")
    return ParamCounts(
        total=total,
        quantizable_linear=quantizable,
        embedding=embedding,
        lm_head=head,
        other=total - quantizable - embedding - head,
        per_layer=per_layer,
        largest_layer=max(per_layer, embedding, head),
        experts=experts,
        num_layers=layers,
    )


# ----------------------------------------------------------------------------- targets


def _layer_prefix(arch: Architecture, index: int) -> str:
    return f"transformer.h.{index}." if arch.model_type == "gpt2" else f"model.layers.{index}."


def resolve_target_modules(
    arch: Architecture, target: list[str] | tuple[str, ...] | str | None
) -> list[str] | str:
    """Turn a preset or a list into peft ``target_modules``, validating the names.

    ``None`` and ``"recommended"`` give the family's recommended list, ``"minimal"`` the
    minimal one, ``"all"`` / ``"all-linear"`` give ``"all-linear"``. A list is checked against
    :attr:`Architecture.linear_module_names` (a dotted suffix such as ``mlp.c_proj`` is
    accepted when its last part is valid) and returned de-duplicated in the given order.
    """
    if target is None:
        target = "recommended"
    if isinstance(target, str):
        key = target.strip()
        if key.lower() in ("all", "all-linear", "all_linear"):
            return "all-linear"
        if key in ("minimal", "recommended"):
            return arch.target_modules(key)
        target = [t for t in re.split(r"[,\s]+", key) if t]
    valid = arch.linear_module_names
    bad = [t for t in target if not isinstance(t, str) or t.split(".")[-1] not in valid]
    if bad or not target:
        raise SpecError(
            f"training_config.lora.target_modules: {short_repr(list(bad) or list(target))} not"
            f" valid for {arch.model_type} models;"
            f" valid module names: {', '.join(valid)} (or presets minimal, recommended, all-linear)"
        )
    out: list[str] = []
    for t in target:
        if t not in out:
            out.append(t)
    return out


def _matches(arch: Architecture, target: list[str] | str, index: int, shape: LinearShape) -> bool:
    """peft's module-name matching (``check_target_module_exists``) for one layer's module."""
    key = _layer_prefix(arch, index) + shape.path
    if isinstance(target, str):
        return re.fullmatch(target, key) is not None
    return any(key == t or key.endswith("." + t) for t in target)


def _targeted(
    arch: Architecture, target: list[str] | str, *, method: str
) -> list[tuple[LinearShape, int]]:
    """(shape, number of layers where it is adapted) for the modules peft would wrap."""
    shapes = [s for s in linear_shapes(arch) if s.adaptable]
    if isinstance(target, str) and target.lower() == "all-linear":
        found = [(s, arch.num_layers) for s in shapes]
    else:
        if not isinstance(target, str):
            target = list(target)
        found = []
        for s in shapes:
            n = sum(1 for idx in range(arch.num_layers) if _matches(arch, target, idx, s))
            if n:
                found.append((s, n))
        if not found:
            raise SpecError(
                f"target_modules {target!r} match no module of this {arch.model_type} model;"
                f" valid module names: {', '.join(arch.linear_module_names)}"
            )
    if method in ("loha", "lokr") and any(s.kind == "conv1d" for s, _ in found):
        raise SpecError(
            f"{method} does not support GPT-2's Conv1D layers (peft adapts only nn.Linear for"
            " LoHa/LoKr); use lora, dora or ia3"
        )
    if adapts_fused_experts(arch, method, target):
        if method == "dora":
            raise SpecError(
                "DoRA cannot adapt Mixtral's fused experts (peft's lora.ParamWrapper refuses"
                " use_dora); with dora, name the attention modules: q_proj, k_proj, v_proj,"
                " o_proj"
            )
        found += [(s, arch.num_layers) for s in linear_shapes(arch) if not s.adaptable]
    return found


def adapts_fused_experts(arch: Architecture, method: str, target_modules: Any) -> bool:
    """Whether peft will put LoRA on fused MoE parameters (Mixtral's router and experts).

    peft 0.21 does so for LoRA-family methods with ``all-linear`` on Mixtral (transformers 5
    fused the experts that were ``nn.Linear`` before). Its ``ParamWrapper`` then requires
    ``lora_dropout=0`` and rejects ``use_dora``: the generated config must respect that.
    """
    return (
        arch.model_type == "mixtral"
        and method.lower() in LORA_FAMILY
        and isinstance(target_modules, str)
        and target_modules.lower() == "all-linear"
    )


def _peft_default_targets(arch: Architecture, method: str) -> list[str]:
    if arch.model_type not in _LORA_DEFAULT_TARGETS:
        raise SpecError(
            f"peft has no default {method} target_modules for model_type {arch.model_type!r};"
            f" name them (valid: {', '.join(arch.linear_module_names)}, or all-linear)"
        )
    return list(_LORA_DEFAULT_TARGETS[arch.model_type])


def lokr_factorization(dimension: int, factor: int = -1) -> tuple[int, int]:
    """peft's ``lokr.layer.factorization``: two factors of ``dimension``, smaller first."""
    if factor > 0 and dimension % factor == 0:
        return factor, dimension // factor
    if factor == -1:
        factor = dimension
    m, n = 1, dimension
    length = m + n
    while m < n:
        new_m = m + 1
        while dimension % new_m != 0:
            new_m += 1
        new_n = dimension // new_m
        if new_m + new_n > length or new_m > factor:
            break
        m, n = new_m, new_n
    if m > n:
        n, m = m, n
    return m, n


def _lokr_params(d_in: int, d_out: int, r: int) -> int:
    """LoKr parameters of one Linear with peft's defaults (decompose_both=False, factor -1)."""
    in_m, in_n = lokr_factorization(d_in)
    out_l, out_k = lokr_factorization(d_out)
    w1 = out_l * in_m  # lokr_w1 (use_w1 is always true without decompose_both)
    if r < max(out_k, in_n) / 2:
        w2 = r * (out_k + in_n)  # lokr_w2_a, lokr_w2_b
    else:
        w2 = out_k * in_n  # lokr_w2
    return w1 + w2


def trainable_params(
    arch: Architecture,
    method: str,
    *,
    target_modules: list[str] | str | None = "all-linear",
    r: int = 16,
    num_virtual_tokens: int = 20,
    freeze_trainable_layers: int = 2,
    task: str = "causal_lm",
    num_labels: int = 2,
    feedforward_modules: list[str] | str | None = None,
) -> int:
    """Trainable parameters after applying ``method`` as peft / a plain training loop would.

    ``target_modules`` follows peft: a list of module names (suffix match), a regex string,
    ``"all-linear"`` (every Linear/Conv1D but the output layer), or ``None`` for the method's
    peft default (``LoraConfig()``: q_proj/v_proj for Llama-style models; ``IA3Config()``:
    k/v/down-style modules). Presets (``minimal``, ``recommended``) go through
    :func:`resolve_target_modules` first. For IA3, ``feedforward_modules`` (scaled on their
    input side) default, as in peft, to peft's list for the model type.
    For ``sequence_classification`` the ``score`` head is trained in every method
    (``modules_to_save`` in peft).
    """
    _check_task(task)
    method = method.lower().replace("-", "_")
    if method not in METHODS:
        raise SpecError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    counts = count_params(arch, task=task, num_labels=num_labels)
    head = arch.hidden_size * num_labels if task == "sequence_classification" else 0
    if method == "full":
        return counts.total
    if method == "freeze":
        n = max(0, min(int(freeze_trainable_layers), arch.num_layers))
        return n * counts.per_layer + _final_norm(arch) + head
    if method == "prompt_tuning":
        return num_virtual_tokens * arch.hidden_size + head
    if method == "prefix_tuning":
        # peft sizes the prefix like the KV cache: an Embedding(num_virtual_tokens,
        # layers * 2 * head_dim * num_key_value_heads) (GQA-aware; hidden_size for GPT-2,
        # whose config has no num_key_value_heads, which is the same number there).
        token_dim = arch.head_dim * arch.num_key_value_heads
        return num_virtual_tokens * arch.num_layers * 2 * token_dim + head

    if isinstance(target_modules, str) and target_modules in ("minimal", "recommended", "all"):
        target_modules = resolve_target_modules(arch, target_modules)

    if method == "ia3":
        defaults = _IA3_TARGETS.get(arch.model_type)
        if defaults is None and (target_modules is None or feedforward_modules is None):
            raise SpecError(
                f"peft has no default IA3 target_modules/feedforward_modules for model_type"
                f" {arch.model_type!r}; name both (valid: {', '.join(arch.linear_module_names)})"
            )
        if target_modules is None:
            target_modules = defaults[0]
        ff = defaults[1] if feedforward_modules is None else feedforward_modules
        total = 0
        for shape, n_layers in _targeted(arch, target_modules, method=method):
            key = _layer_prefix(arch, 0) + shape.path
            if isinstance(ff, str):
                is_ff = re.fullmatch(ff, key) is not None
            else:
                is_ff = any(key.endswith(t) for t in ff)  # peft: plain endswith, no dot
            total += n_layers * (shape.d_in if is_ff else shape.d_out)
        return total + head

    if target_modules is None:
        target_modules = _peft_default_targets(arch, method)
    total = 0
    for shape, n_layers in _targeted(arch, target_modules, method=method):
        if not shape.adaptable:  # a fused MoE parameter under LoRA (lora.ParamWrapper)
            # lora_A (count*rank, d_in), lora_B (d_out, count*rank); peft doubles the rank of
            # the fused gate_up_proj (rank_pattern r * len(["w1", "w3"])).
            rank = 2 * r if shape.name == "gate_up_proj" else r
            per = shape.count * rank * (shape.d_in + shape.d_out)
        elif method == "dora":
            per = r * (shape.d_in + shape.d_out) + shape.d_out  # + lora_magnitude_vector
        elif method in LORA_FAMILY:
            per = r * (shape.d_in + shape.d_out)
        elif method == "loha":
            per = 2 * r * (shape.d_in + shape.d_out)  # hada_w1_a/b, hada_w2_a/b
        else:  # lokr
            per = _lokr_params(shape.d_in, shape.d_out, r)
        total += n_layers * per
    return total + head
