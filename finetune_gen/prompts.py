"""Prompt formats shared by the planner (length estimates) and the templates (the text itself)."""

from __future__ import annotations

import json

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
FORMAT_OVERHEAD_TOKENS = {"alpaca": 48, "chat_template": 48, "chatml_default": 32, "none": 4}


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
