"""Prompt formats shared by the planner (length estimates) and the templates (the text itself)."""

from __future__ import annotations

import json
from dataclasses import dataclass

ALPACA_PROMPT = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n"
)
# ChatML, used when a model has no chat template of its own (Qwen and many others use it).
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content']"
    " + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


# Tokens a prompt format adds around the data's own text, for sequence-length planning: the
# Alpaca preamble is ~190 characters (~48 tokens); chat templates add role headers and often a
# default system prompt (Llama 3.1's date lines, Qwen's "You are Qwen...") of similar size.
@dataclass(frozen=True)
class PromptFormat:
    """How a row's conversation becomes text: the planner picks one, the templates read its traits."""

    name: str
    why: str  # the planner's reason for it ({task}: the task type)
    overhead_tokens: int
    chat: bool = False  # rendered by a chat template (the tokenizer's own or the one added)
    adds_template: bool = False  # the script adds ChatML and its two special tokens
    uses_model_template: bool = False  # the tokenizer's own chat template
    plain_text: bool = False  # a plain-text prompt (Alpaca), no chat template, no new tokens


PROMPT_FORMATS: dict[str, PromptFormat] = {
    p.name: p
    for p in (
        PromptFormat(
            "chat_template",
            "the tokenizer ships a chat template: train in the format used at inference",
            48,
            chat=True,
            uses_model_template=True,
        ),
        PromptFormat(
            "chatml_default",
            "the model has no chat template: ChatML with new special tokens",
            32,
            chat=True,
            adds_template=True,
        ),
        PromptFormat(
            "alpaca",
            "a base model without a chat template: the Alpaca prompt, no new tokens",
            48,
            plain_text=True,
        ),
        PromptFormat("none", "{task} does not use prompts", 4),
    )
}
FORMAT_OVERHEAD_TOKENS = {name: p.overhead_tokens for name, p in PROMPT_FORMATS.items()}


def template_system_role(template: str) -> str:
    """How a chat template treats a system message, found by rendering a probe conversation
    in a sandbox as transformers does (without importing it): "kept", "ignored" (rendered
    without it), "refused" (the template raises, as Gemma 2 and Mistral v0.1 do) or
    "unknown" (the template cannot be rendered here, e.g. it needs transformers' extensions)."""
    from jinja2.exceptions import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    env.filters["tojson"] = lambda value, **_: json.dumps(value)
    turns = [
        {"role": "user", "content": "Probe question."},
        {"role": "assistant", "content": "Probe answer."},
    ]
    tokens = {"bos_token": "<s>", "eos_token": "</s>", "add_generation_prompt": False}
    try:
        compiled = env.from_string(template)
        compiled.render(messages=turns, **tokens)
    except Exception:  # noqa: BLE001 - any failure here just means "cannot tell"
        return "unknown"
    try:
        text = compiled.render(
            messages=[{"role": "system", "content": "Probe system 7f3a."}] + turns, **tokens
        )
    except TemplateError:
        return "refused"
    except Exception:  # noqa: BLE001
        return "unknown"
    return "kept" if "Probe system 7f3a." in text else "ignored"
