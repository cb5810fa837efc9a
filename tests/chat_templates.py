"""Chat templates built like the real families', with their tokenizers' shapes.

Each family reproduces what matters for training data: where BOS comes from, which token ends
an assistant turn, what happens to a system message (kept, folded into the first or the last
user turn, left out, refused), earlier turns rewritten (Qwen3's think block on the last turn
only), EOS after the conversation (Phi-3), a generation prompt the rendered turn lacks
(DeepSeek-R1 distills), and the tokenizer kind: byte-level BPE or SentencePiece-style
Metaspace BPE with byte fallback. The texts follow the published templates of each family
(simplified where they handle tools; Qwen 2.5 and Llama 3.1 keep their tool-call
structure), so the structures are the real ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field

LLAMA3 = r"""{{- bos_token }}
{%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content']|trim %}{%- set messages = messages[1:] %}{%- else %}{%- set system_message = "" %}{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}{{- "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n" }}{{- system_message }}{{- "<|eot_id|>" }}
{%- for message in messages %}{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}{%- endfor %}
{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{%- endif %}"""

LLAMA2 = r"""{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\n' + system_message + '\n<</SYS>>\n\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"""

MISTRAL_V01 = r"""{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token + ' ' }}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"""

# v0.3: the system message goes into the user turn that is the conversation's last message,
# i.e. only into prompts; a training conversation (ending with the assistant) has none.
MISTRAL_V03 = r"""{%- if messages[0]["role"] == "system" %}{%- set system_message = messages[0]["content"] %}{%- set loop_messages = messages[1:] %}{%- else %}{%- set loop_messages = messages %}{%- endif %}
{{- bos_token }}
{%- for message in loop_messages %}
    {%- if (message["role"] == "user") != (loop.index0 % 2 == 0) %}{{- raise_exception("After the optional system message, conversation roles must alternate user/assistant/user/assistant...") }}{%- endif %}
    {%- if message["role"] == "user" %}
        {%- if loop.last and system_message is defined %}{{- "[INST] " + system_message + "\n\n" + message["content"] + "[/INST]" }}{%- else %}{{- "[INST] " + message["content"] + "[/INST]" }}{%- endif %}
    {%- elif message["role"] == "assistant" %}{{- " " + message["content"]|trim + eos_token}}
    {%- else %}{{- raise_exception("Only user and assistant roles are supported, with the exception of an initial optional system message!") }}{%- endif %}
{%- endfor %}"""

# Mixtral's updated template: the system message is folded into the LAST user turn.
MIXTRAL = r"""{%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content'] %}{%- set loop_messages = messages[1:] %}{%- else %}{%- set loop_messages = messages %}{%- endif %}
{%- set user_messages = loop_messages | selectattr('role', 'equalto', 'user') | list %}
{{- bos_token }}
{%- for message in loop_messages %}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{- raise_exception('After the optional system message, conversation roles must alternate user/assistant/user/assistant/...') }}{%- endif %}
    {%- if message['role'] == 'user' %}
        {%- if message == user_messages[-1] and system_message is defined %}{{- ' [INST] ' + system_message + '\n\n' + message['content'] + ' [/INST]' }}{%- else %}{{- ' [INST] ' + message['content'] + ' [/INST]' }}{%- endif %}
    {%- elif message['role'] == 'assistant' %}{{- ' ' + message['content'] + eos_token}}
    {%- else %}{{- raise_exception('Only user and assistant roles are supported, with the exception of an initial optional system message!') }}{%- endif %}
{%- endfor %}"""

GEMMA2 = r"""{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"""

GEMMA3 = r"""{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}{%- set loop_messages = messages[1:] -%}{%- else -%}{%- set first_user_prefix = "" -%}{%- set loop_messages = messages -%}{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}{{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}{%- endif -%}
    {%- if (message['role'] == 'assistant') -%}{%- set role = "model" -%}{%- else -%}{%- set role = message['role'] -%}{%- endif -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else "") }}{{ message['content'] | trim }}{{ '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}{{'<start_of_turn>model\n'}}{%- endif -%}"""

QWEN25 = r"""{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}{%- else %}{{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}{{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}{{- '<|im_start|>' + message.role }}{%- if message.content %}{{- '\n' + message.content }}{%- endif %}{%- for tool_call in message.tool_calls %}{%- if tool_call.function is defined %}{%- set tool_call = tool_call.function %}{%- endif %}{{- '\n<tool_call>\n{"name": "' }}{{- tool_call.name }}{{- '", "arguments": ' }}{{- tool_call.arguments | tojson }}{{- '}\n</tool_call>' }}{%- endfor %}{{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}{{- '<|im_start|>user' }}{%- endif %}
        {{- '\n<tool_response>\n' }}{{- message.content }}{{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}{{- '<|im_end|>\n' }}{%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}"""

# Llama 3.1 with its tool calling: a turn that calls a tool shows the call as JSON and not the
# message's text; tool results come back under the ipython role, JSON-encoded.
LLAMA31 = r"""{{- bos_token }}
{%- if not tools is defined %}{%- set tools = none %}{%- endif %}
{%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content']|trim %}{%- set messages = messages[1:] %}{%- else %}{%- set system_message = "" %}{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{%- if tools is not none %}{{- "Environment: ipython\n" }}{%- endif %}
{{- "Cutting Knowledge Date: December 2023\n" }}{{- "Today Date: 26 Jul 2024\n\n" }}
{{- system_message }}{{- "<|eot_id|>" }}
{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- if not message.tool_calls|length == 1 %}{{- raise_exception("This model only supports single tool-calls at once!") }}{%- endif %}
        {%- set tool_call = message.tool_calls[0].function %}
        {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
        {{- '{"name": "' + tool_call.name + '", ' }}{{- '"parameters": ' }}{{- tool_call.arguments | tojson }}{{- "}" }}
        {{- "<|eot_id|>" }}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\n\n" }}
        {%- if message.content is mapping or message.content is iterable %}{{- message.content | tojson }}{%- else %}{{- message.content }}{%- endif %}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{%- endif %}"""

# Qwen3: every assistant turn after the last user message gets a think block (empty unless
# the message has reasoning_content); earlier turns lose theirs.
QWEN3 = r"""{%- if messages[0].role == 'system' %}{{- '<|im_start|>system\n' + messages[0].content + '<|im_end|>\n' }}{%- endif %}
{%- set ns = namespace(last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}{%- set index = (messages|length - 1) - loop.index0 %}{%- if message.role == "user" and ns.last_query_index == messages|length - 1 and index != messages|length - 1 %}{%- set ns.last_query_index = index %}{%- endif %}{%- endfor %}
{%- for message in messages %}
    {%- set content = message.content if message.content is string else '' %}
    {%- if message.role == "user" or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\n' + content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {%- set reasoning_content = '' %}
        {%- if message.reasoning_content is string %}
            {%- set reasoning_content = message.reasoning_content %}
        {%- else %}
            {%- if '</think>' in content %}
                {%- set reasoning_content = content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') %}
                {%- set content = content.split('</think>')[-1].lstrip('\n') %}
            {%- endif %}
        {%- endif %}
        {%- if loop.index0 > ns.last_query_index %}
            {{- '<|im_start|>' + message.role + '\n<think>\n' + reasoning_content.strip('\n') + '\n</think>\n\n' + content.lstrip('\n') }}
        {%- else %}
            {{- '<|im_start|>' + message.role + '\n' + content }}
        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\n\n</think>\n\n' }}{%- endif %}
{%- endif %}"""

PHI3 = r"""{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'assistant' %}{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"""

PHI35 = r"""{% for message in messages %}{% if message['role'] == 'system' and message['content'] %}{{'<|system|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'assistant' %}{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"""

PHI4 = r"""{% for message in messages %}{% if (message['role'] == 'system') %}{{'<|im_start|>system<|im_sep|>' + message['content'] + '<|im_end|>'}}{% elif (message['role'] == 'user') %}{{'<|im_start|>user<|im_sep|>' + message['content'] + '<|im_end|>'}}{% elif (message['role'] == 'assistant') %}{{'<|im_start|>assistant<|im_sep|>' + message['content'] + '<|im_end|>'}}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant<|im_sep|>' }}{% endif %}"""

# DeepSeek-R1 distills: the system text first, no role; the generation prompt opens <think>.
DEEPSEEK_R1 = r"""{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}{% set ns = namespace(system_prompt='') %}{%- for message in messages %}{%- if message['role'] == 'system' %}{% set ns.system_prompt = message['content'] %}{%- endif %}{%- endfor %}{{ bos_token }}{{ ns.system_prompt }}{%- for message in messages %}{%- if message['role'] == 'user' %}{{ '<｜User｜>' + message['content'] }}{%- endif %}{%- if message['role'] == 'assistant' and message['content'] is not none %}{% set content = message['content'] %}{% if '</think>' in content %}{% set content = content.split('</think>')[-1] %}{% endif %}{{ '<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>' }}{%- endif %}{%- endfor %}{% if add_generation_prompt %}{{ '<｜Assistant｜><think>\n' }}{% endif %}"""

SMOLLM2 = r"""{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system
You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>
' }}{% endif %}{{'<|im_start|>' + message['role'] + '
' + message['content'] + '<|im_end|>' + '
'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant
' }}{% endif %}"""

CHATML = r"""{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"""

ZEPHYR = r"""{% for message in messages %}
{% if message['role'] == 'user' %}
{{ '<|user|>
' + message['content'] + eos_token }}
{% elif message['role'] == 'system' %}
{{ '<|system|>
' + message['content'] + eos_token }}
{% elif message['role'] == 'assistant' %}
{{ '<|assistant|>
'  + message['content'] + eos_token }}
{% endif %}
{% if loop.last and add_generation_prompt %}
{{ '<|assistant|>' }}
{% endif %}
{% endfor %}"""


@dataclass(frozen=True)
class Family:
    """A chat template and the tokenizer it ships with."""

    template: str | None
    kind: str  # "bpe" (byte-level) or "spm" (Metaspace BPE with byte fallback)
    eos: str
    closing: str  # the token that ends an assistant turn
    bos: str | None = None
    add_bos: bool = False  # the tokenizer itself starts sequences with BOS
    pad: str | None = None  # None: no pad token (train.py reuses EOS)
    specials: tuple[str, ...] = ()  # added special tokens (besides bos/eos/pad/unk)
    added: tuple[str, ...] = ()  # added tokens that are not special (Qwen3's <think>)
    system: str = "kept"  # kept | ignored | refused
    extra_keys: tuple[str, ...] = field(default=())  # message keys the template reads


SPM = {"bos": "<s>", "eos": "</s>", "add_bos": True}
FAMILIES: dict[str, Family] = {
    "llama3": Family(
        LLAMA3,
        "bpe",
        eos="<|end_of_text|>",
        closing="<|eot_id|>",
        bos="<|begin_of_text|>",
        add_bos=True,
        specials=("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
    ),
    "llama3.1": Family(
        LLAMA31,
        "bpe",
        eos="<|eot_id|>",
        closing="<|eot_id|>",
        bos="<|begin_of_text|>",
        add_bos=True,
        specials=("<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|end_of_text|>"),
        extra_keys=("tool_calls",),
    ),
    "llama2": Family(LLAMA2, "spm", closing="</s>", **SPM),
    "mistral-v0.1": Family(MISTRAL_V01, "spm", closing="</s>", system="refused", **SPM),
    "mistral-v0.3": Family(MISTRAL_V03, "spm", closing="</s>", system="ignored", **SPM),
    "mixtral": Family(MIXTRAL, "spm", closing="</s>", **SPM),
    "gemma2": Family(
        GEMMA2,
        "spm",
        eos="<eos>",
        closing="<end_of_turn>",
        bos="<bos>",
        add_bos=True,
        pad="<pad>",
        specials=("<start_of_turn>", "<end_of_turn>"),
        system="refused",
    ),
    "gemma3": Family(
        GEMMA3,
        "spm",
        eos="<eos>",
        closing="<end_of_turn>",
        bos="<bos>",
        add_bos=True,
        pad="<pad>",
        specials=("<start_of_turn>", "<end_of_turn>"),
    ),
    "qwen2.5": Family(
        QWEN25,
        "bpe",
        eos="<|im_end|>",
        closing="<|im_end|>",
        pad="<|endoftext|>",
        specials=("<|im_start|>", "<|endoftext|>"),
        added=("<tool_call>", "</tool_call>"),
        extra_keys=("tool_calls",),
    ),
    "qwen3": Family(
        QWEN3,
        "bpe",
        eos="<|im_end|>",
        closing="<|im_end|>",
        pad="<|endoftext|>",
        specials=("<|im_start|>", "<|endoftext|>"),
        added=("<think>", "</think>"),
        extra_keys=("reasoning_content",),
    ),
    "phi3": Family(
        PHI3,
        "spm",
        eos="<|endoftext|>",
        closing="<|end|>",
        bos="<s>",
        add_bos=False,
        pad="<|endoftext|>",
        specials=("<|system|>", "<|user|>", "<|assistant|>", "<|end|>"),
    ),
    "phi3.5": Family(
        PHI35,
        "spm",
        eos="<|endoftext|>",
        closing="<|end|>",
        bos="<s>",
        pad="<|endoftext|>",
        specials=("<|system|>", "<|user|>", "<|assistant|>", "<|end|>"),
    ),
    "phi4": Family(
        PHI4,
        "bpe",
        eos="<|endoftext|>",
        closing="<|im_end|>",
        pad="<|dummy_85|>",
        specials=("<|im_start|>", "<|im_sep|>", "<|im_end|>"),
    ),
    "deepseek-r1": Family(
        DEEPSEEK_R1,
        "bpe",
        eos="<｜end▁of▁sentence｜>",
        closing="<｜end▁of▁sentence｜>",
        bos="<｜begin▁of▁sentence｜>",
        add_bos=True,
        pad="<｜end▁of▁sentence｜>",  # pad == eos
        specials=("<｜User｜>", "<｜Assistant｜>"),
        added=("<think>", "</think>"),
    ),
    "smollm2": Family(
        SMOLLM2,
        "bpe",
        eos="<|im_end|>",
        closing="<|im_end|>",
        bos="<|im_start|>",
        pad="<|im_end|>",
        specials=("<|endoftext|>",),
    ),
    # GPT-2 style: one token is both BOS and EOS; the template is plain ChatML.
    "chatml": Family(
        CHATML,
        "bpe",
        eos="<|endoftext|>",
        closing="<|im_end|>",
        bos="<|endoftext|>",
        specials=("<|im_start|>", "<|im_end|>"),
    ),
    "zephyr": Family(ZEPHYR, "spm", closing="</s>", **SPM),
    # A GPT-2 style base model: no chat template, BOS == EOS.
    "gpt2": Family(None, "bpe", eos="<|endoftext|>", closing="<|endoftext|>", bos="<|endoftext|>"),
    # A Llama-2-style base model: SentencePiece-style tokenizer that adds BOS, no template.
    "llama2-base": Family(None, "spm", closing="</s>", **SPM),
}
TEMPLATED = sorted(name for name, family in FAMILIES.items() if family.template)


def system_merged(messages: list[dict]) -> list[dict]:
    """What train.py gives a template without a system role (dataset.system_message: merge)."""
    system = [m["content"] for m in messages if m["role"] == "system"]
    rest = [dict(m) for m in messages if m["role"] != "system"]
    if system:
        first = next(m for m in rest if m["role"] == "user")
        first["content"] = "\n\n".join(system + [first["content"]])
    return rest
