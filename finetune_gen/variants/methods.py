"""The fine-tuning methods: one entry each, holding the facts every layer reads.

The spec's `training_config.method` values are this table's keys; the estimator reads an
entry's traits (does it train adapters, low-rank ones, virtual tokens; how many bits the base
is stored in), the renderer its title, peft config class and template partial. Adding a method
that reuses an adapter kind is one entry here plus its peft keywords in render.py.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Refusal:
    """A request the installed stack cannot run with this method, refused at plan time."""

    message: str  # "path: what is refused"
    problem: str  # "path: why, and what to do instead"
    task: str = ""  # only for this task type ("" : any)
    setting: str = ""  # only when this training_config setting is on ("" : always)

    def applies(self, task: str, settings: dict[str, object]) -> bool:
        return (not self.task or self.task == task) and (
            not self.setting or bool(settings.get(self.setting))
        )


@dataclass(frozen=True)
class MethodEntry:
    name: str
    title: str
    # full: every weight; freeze: the top layers; low_rank: LoRA-style A/B adapters with r,
    # alpha and targets; scaling: IA3 vectors; prompt: virtual tokens.
    kind: str
    peft_config_class: str = ""
    base_bits: int = 16  # how the frozen base is stored during training
    partial: str = "peft"  # templates/train/method_<partial>.py.jinja
    # The model is fed input embeddings (virtual tokens prepended), not token ids, so a
    # classification head cannot find the padding by its id: texts are padded on the left.
    feeds_embeddings: bool = False
    refusals: tuple[Refusal, ...] = ()
    # The peft adapter family whose parameter count, memory terms and config keywords the
    # method shares ("lora": LoraConfig's A/B matrices; "" for full and freeze): a new LoRA
    # variant is an entry with adapter "lora" and its extra LoraConfig keywords.
    adapter: str = ""
    peft_options: tuple[tuple[str, object], ...] = ()  # extra keywords of its peft config
    # vLLM serves its adapter as is (--enable-lora); others are served merged.
    served_as_adapter: bool = False

    @property
    def mergeable(self) -> bool:
        """peft's merge_and_unload folds the adapter into the base weights (virtual tokens
        change no weight: nothing to merge)."""
        return self.kind in ("low_rank", "scaling")

    @property
    def is_peft(self) -> bool:
        return self.kind not in ("full", "freeze")

    @property
    def is_low_rank(self) -> bool:
        return self.kind == "low_rank"

    @property
    def trains_virtual_tokens(self) -> bool:
        return self.kind == "prompt"


METHODS: dict[str, MethodEntry] = {
    m.name: m
    for m in (
        MethodEntry("full", "full fine-tuning", "full", partial="full"),
        MethodEntry(
            "lora", "LoRA", "low_rank", "LoraConfig", adapter="lora", served_as_adapter=True
        ),
        MethodEntry(
            "qlora",
            "QLoRA (4-bit NF4 base + LoRA)",
            "low_rank",
            "LoraConfig",
            base_bits=4,
            adapter="lora",
            served_as_adapter=True,
        ),
        MethodEntry(
            "dora", "DoRA (weight-decomposed LoRA)", "low_rank", "LoraConfig", adapter="lora"
        ),
        MethodEntry(
            "prefix_tuning",
            "prefix tuning",
            "prompt",
            "PrefixTuningConfig",
            adapter="prefix_tuning",
            refusals=(
                Refusal(
                    "training_config.method: prefix_tuning cannot train a classification head here",
                    "training_config.method: peft's prefix tuning needs past key values, which "
                    "transformers 5 sequence-classification models do not accept; use prompt_tuning or lora",
                    task="classification",
                ),
                Refusal(
                    "training_config.gradient_checkpointing: not with prefix_tuning",
                    "training_config.gradient_checkpointing: peft refuses prefix tuning with "
                    "checkpointing; set it to false (or use prompt_tuning / lora)",
                    setting="gradient_checkpointing",
                ),
            ),
        ),
        MethodEntry(
            "prompt_tuning",
            "prompt tuning",
            "prompt",
            "PromptTuningConfig",
            feeds_embeddings=True,
            adapter="prompt_tuning",
        ),
        MethodEntry("ia3", "IA3", "scaling", "IA3Config", adapter="ia3"),
        MethodEntry("loha", "LoHa", "low_rank", "LoHaConfig", adapter="loha"),
        MethodEntry("lokr", "LoKr", "low_rank", "LoKrConfig", adapter="lokr"),
        MethodEntry("freeze", "partial fine-tuning (top layers only)", "freeze", partial="full"),
    )
}
METHOD_NAMES: tuple[str, ...] = tuple(METHODS)
PEFT_METHODS: tuple[str, ...] = tuple(n for n, m in METHODS.items() if m.is_peft)
LOW_RANK_METHODS: tuple[str, ...] = tuple(n for n, m in METHODS.items() if m.is_low_rank)
PROMPT_METHODS: tuple[str, ...] = tuple(n for n, m in METHODS.items() if m.trains_virtual_tokens)
# The LoRA family (LoraConfig's A/B matrices): counted, estimated and configured alike.
LORA_FAMILY: tuple[str, ...] = tuple(n for n, m in METHODS.items() if m.adapter == "lora")
MERGEABLE_METHODS: tuple[str, ...] = tuple(n for n, m in METHODS.items() if m.mergeable)


def method(name: str) -> MethodEntry:
    return METHODS[name]
