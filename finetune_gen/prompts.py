"""Prompt formats shared by the planner (length estimates) and the templates (the text itself)."""

from __future__ import annotations

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
