"""The facts about a model that planning and estimation need, read from its ``config.json``.

An :class:`Architecture` is built from a Hugging Face config dictionary (from the catalog, a
local folder or the hub) so that every number downstream comes from the same place. Nothing
here imports torch or transformers: the generator's start-up stays light.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

# Hugging Face `model_type` -> the decoder-layer class name (FSDP wrap policy, DeepSpeed
# leaf modules) and the names of the Linear modules inside one decoder layer.
_LLAMA_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

FAMILIES: dict[str, dict[str, Any]] = {
    "llama": {"layer": "LlamaDecoderLayer", "linears": _LLAMA_LINEARS},
    "mistral": {"layer": "MistralDecoderLayer", "linears": _LLAMA_LINEARS},
    "qwen2": {"layer": "Qwen2DecoderLayer", "linears": _LLAMA_LINEARS},
    "qwen3": {"layer": "Qwen3DecoderLayer", "linears": _LLAMA_LINEARS},
    "gemma": {"layer": "GemmaDecoderLayer", "linears": _LLAMA_LINEARS},
    "gemma2": {"layer": "Gemma2DecoderLayer", "linears": _LLAMA_LINEARS},
    "gemma3_text": {"layer": "Gemma3DecoderLayer", "linears": _LLAMA_LINEARS},
    "mixtral": {
        "layer": "MixtralDecoderLayer",
        "linears": ("q_proj", "k_proj", "v_proj", "o_proj"),
    },
    "phi3": {
        "layer": "Phi3DecoderLayer",
        "linears": ("qkv_proj", "o_proj", "gate_up_proj", "down_proj"),
    },
    # phi-1, phi-1.5, phi-2: one LayerNorm feeding attention and MLP in parallel, biases everywhere.
    "phi": {
        "layer": "PhiDecoderLayer",
        "linears": ("q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"),
    },
    "gpt2": {"layer": "GPT2Block", "linears": ("c_attn", "c_proj", "c_fc")},
    "falcon": {
        "layer": "FalconDecoderLayer",
        "linears": ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"),
    },
}

# Model types whose transformers config class ties the input and output embeddings when
# config.json has no `tie_word_embeddings` key (PretrainedConfig subclasses' defaults).
TIED_BY_DEFAULT = frozenset({"gpt2", "gemma", "gemma2", "gemma3_text", "gemma3", "falcon"})
# Config classes whose head_dim default is a constant rather than hidden_size // heads, and
# GPT-2's n_positions default (it sizes the learned position embedding).
DEFAULT_HEAD_DIM = {"qwen3": 128, "gemma": 256, "gemma2": 256, "gemma3_text": 256}
DEFAULT_POSITIONS = {"gpt2": 1024}

# LoRA target presets per family (seed: "minimal / recommended / aggressive").
_LLAMA_TARGETS = {
    "minimal": ["q_proj", "v_proj"],
    "recommended": ["q_proj", "k_proj", "v_proj", "o_proj"],
}
TARGET_PRESETS: dict[str, dict[str, list[str]]] = {
    "llama": _LLAMA_TARGETS,
    "mistral": _LLAMA_TARGETS,
    "qwen2": _LLAMA_TARGETS,
    "qwen3": _LLAMA_TARGETS,
    "gemma": _LLAMA_TARGETS,
    "gemma2": _LLAMA_TARGETS,
    "gemma3_text": _LLAMA_TARGETS,
    "mixtral": _LLAMA_TARGETS,
    "phi3": {"minimal": ["qkv_proj"], "recommended": ["qkv_proj", "o_proj"]},
    "phi": {
        "minimal": ["q_proj", "v_proj"],
        "recommended": ["q_proj", "k_proj", "v_proj", "dense"],
    },
    "gpt2": {"minimal": ["c_attn"], "recommended": ["c_attn", "c_proj"]},
    "falcon": {"minimal": ["query_key_value"], "recommended": ["query_key_value", "dense"]},
}


def _first(cfg: Mapping[str, Any], *names: str, default: Any = None) -> Any:
    for name in names:
        if cfg.get(name) is not None:
            return cfg[name]
    return default


@dataclass(frozen=True)
class Architecture:
    """A decoder-only transformer as far as memory, time and LoRA targeting are concerned."""

    model_type: str
    hidden_size: int
    num_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool
    max_position_embeddings: int
    num_experts: int = 0
    num_experts_per_tok: int = 0
    torch_dtype: str = "bfloat16"
    has_chat_template: bool = False
    chat_template_family: str = "none"
    config: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_config(
        cls,
        cfg: Mapping[str, Any],
        *,
        has_chat_template: bool = False,
        chat_template_family: str = "none",
    ) -> "Architecture":
        """Build from a ``config.json`` dict; multimodal configs use their ``text_config``."""
        if "text_config" in cfg and "hidden_size" not in cfg:
            cfg = {
                **cfg["text_config"],
                "tie_word_embeddings": cfg.get("tie_word_embeddings", True),
            }
        model_type = str(cfg.get("model_type", "llama"))
        hidden = int(_first(cfg, "hidden_size", "n_embd", "d_model"))
        heads = int(_first(cfg, "num_attention_heads", "n_head"))
        kv_heads = int(_first(cfg, "num_key_value_heads", "num_kv_heads", default=heads))
        if (
            model_type == "falcon"
            and not cfg.get("new_decoder_architecture")
            and cfg.get("multi_query", True)
        ):
            kv_heads = 1
        inter = _first(cfg, "intermediate_size", "n_inner", "ffn_hidden_size")
        if inter is None:
            inter = 4 * hidden
        return cls(
            model_type=model_type,
            hidden_size=hidden,
            num_layers=int(_first(cfg, "num_hidden_layers", "n_layer", "num_layers")),
            num_attention_heads=heads,
            num_key_value_heads=kv_heads,
            head_dim=int(
                _first(cfg, "head_dim", default=DEFAULT_HEAD_DIM.get(model_type, hidden // heads))
            ),
            intermediate_size=int(inter),
            vocab_size=int(cfg["vocab_size"]),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", model_type in TIED_BY_DEFAULT)),
            max_position_embeddings=int(
                _first(
                    cfg,
                    "max_position_embeddings",
                    "n_positions",
                    "n_ctx",
                    default=DEFAULT_POSITIONS.get(model_type, 2048),
                )
            ),
            num_experts=int(_first(cfg, "num_local_experts", "num_experts", default=0) or 0),
            num_experts_per_tok=int(_first(cfg, "num_experts_per_tok", default=0) or 0),
            torch_dtype=str(_first(cfg, "torch_dtype", "dtype", default="bfloat16")),
            has_chat_template=has_chat_template,
            chat_template_family=chat_template_family,
            config=dict(cfg),
        )

    @property
    def family(self) -> str:
        """The model family used for module names; unknown types are treated as Llama-like."""
        return self.model_type if self.model_type in FAMILIES else "llama"

    @property
    def decoder_layer_class(self) -> str:
        return FAMILIES[self.family]["layer"]

    @property
    def linear_module_names(self) -> list[str]:
        return list(FAMILIES[self.family]["linears"])

    def target_modules(self, preset: str) -> list[str] | str:
        """LoRA targets for a preset: ``minimal``, ``recommended`` or ``all`` (peft's ``all-linear``)."""
        if preset == "all":
            return "all-linear"
        return list(TARGET_PRESETS[self.family][preset])
