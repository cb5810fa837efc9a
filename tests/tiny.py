"""Tiny offline models, tokenizers and datasets for smoke tests (built in about a second).

No hub access: a byte-level BPE is trained on local text and a model with random weights is
built from a small config, both saved with save_pretrained. Variants cover what real models
differ in: a tokenizer with or without BOS, pad == eos, with or without a chat template, and
Llama- or GPT-2-style architectures. Dimensions are multiples of 32 so 4-bit layers work on
the CPU (STACK-NOTES: bitsandbytes asserts that on some CPUs).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content']"
    " + '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# A Llama-3-like template: BOS inside the template, a distinct end-of-turn token.
HEADER_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
    "'<|end_header_id|>\\n\\n' + message['content'] + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)
# A template whose turns end with a plain newline, not a special token: a model trained on it
# would never learn to stop, and train.py must refuse it.
PLAIN_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] + ': ' + message['content'] + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}"
)

WORDS = (
    "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho "
    "sigma tau upsilon phi chi psi omega red green blue yellow one two three four five six seven "
    "eight nine ten cat dog bird fish tree river mountain city road house"
).split()


def corpus() -> list[str]:
    rng = random.Random(0)
    lines = []
    for _ in range(400):
        lines.append(" ".join(rng.choice(WORDS) for _ in range(12)))
    lines += [
        "Below is an instruction that describes a task. Write a response",
        "### Instruction:",
        "### Response:",
    ]
    return lines


def build_tokenizer(
    folder: Path, *, bos: bool = True, pad_is_eos: bool = False, template: str | None = None
):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<s>", "<pad>", "<unk>"]
    if template == "header":
        specials += ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    if template == "chatml":
        specials += ["<|im_start|>", "<|im_end|>"]
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=480,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(corpus(), trainer)
    if bos:
        bos_id = tokenizer.token_to_id("<s>")
        tokenizer.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos_id)]
        )
    kwargs = {"eos_token": "<|endoftext|>", "unk_token": "<unk>"}
    if bos:
        kwargs["bos_token"] = "<s>"
    if not pad_is_eos:
        kwargs["pad_token"] = "<pad>"
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, **kwargs)
    if template == "header":
        fast.chat_template = HEADER_TEMPLATE
        fast.add_special_tokens(
            {
                "additional_special_tokens": [
                    "<|start_header_id|>",
                    "<|end_header_id|>",
                    "<|eot_id|>",
                ]
            }
        )
    elif template == "chatml":
        fast.chat_template = CHATML_TEMPLATE
        fast.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    elif template == "plain":
        fast.chat_template = PLAIN_TEMPLATE
    fast.save_pretrained(folder)
    return fast


def _byte_fallback_bpe(tokenizer, specials: list[str]):
    """The trained Metaspace BPE with <0x00>..<0xFF> in its vocabulary and byte_fallback on, as
    SentencePiece-converted tokenizers (Llama 2, Mistral, Gemma, Phi-3) have."""
    from tokenizers import Tokenizer

    data = json.loads(tokenizer.to_str())
    vocab = data["model"]["vocab"]
    for byte in range(256):
        vocab.setdefault(f"<0x{byte:02X}>", len(vocab))
    data["model"]["byte_fallback"] = True
    data["model"]["unk_token"] = "<unk>"
    return Tokenizer.from_str(json.dumps(data))


def build_family_tokenizer(folder: Path, name: str):
    """A tokenizer shaped like a real family's (tests/chat_templates.py), saved in ``folder``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from chat_templates import FAMILIES

    family = FAMILIES[name]
    own = [family.eos, family.bos, family.pad, "<unk>", *family.specials]
    specials = list(dict.fromkeys(t for t in own if t))
    lines = corpus() + [family.template or ""]
    if family.kind == "spm":
        tokenizer = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first", split=False)
        tokenizer.decoder = decoders.Sequence(
            [
                decoders.Replace("\u2581", " "),
                decoders.ByteFallback(),
                decoders.Fuse(),
                decoders.Strip(" ", 1, 0),
            ]
        )
        trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=specials)
        tokenizer.train_from_iterator(lines, trainer)
        decoder, pre = tokenizer.decoder, tokenizer.pre_tokenizer
        tokenizer = _byte_fallback_bpe(tokenizer, specials)
        tokenizer.decoder, tokenizer.pre_tokenizer = decoder, pre
    else:
        tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=600, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        )
        tokenizer.train_from_iterator(lines, trainer)
    if family.add_bos:
        bos_id = tokenizer.token_to_id(family.bos)
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{family.bos} $A", pair=f"{family.bos} $A {family.bos} $B", special_tokens=[(family.bos, bos_id)]
        )
    kwargs = {"eos_token": family.eos, "unk_token": "<unk>"}
    if family.bos:
        kwargs["bos_token"] = family.bos
    if family.pad:
        kwargs["pad_token"] = family.pad
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, **kwargs)
    extra = [t for t in family.specials if t not in (family.eos, family.bos, family.pad)]
    if extra:
        fast.add_special_tokens({"additional_special_tokens": extra})
    if family.added:
        fast.add_tokens(list(family.added))
    fast.chat_template = family.template
    fast.save_pretrained(folder)
    return fast


def build_model(
    folder: Path,
    *,
    arch: str = "llama",
    bos: bool = True,
    pad_is_eos: bool = False,
    template: str | None = None,
    family: str | None = None,
) -> Path:
    """Save a tiny random model and its tokenizer in ``folder``; return the folder.

    ``family`` (a name in tests/chat_templates.py) gives the tokenizer and chat template of a
    real model family instead of the bos / pad_is_eos / template variants.
    """
    import torch
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, Qwen2Config

    folder.mkdir(parents=True, exist_ok=True)
    if family is not None:
        tokenizer = build_family_tokenizer(folder, family)
        bos = tokenizer.bos_token_id is not None
    else:
        tokenizer = build_tokenizer(folder, bos=bos, pad_is_eos=pad_is_eos, template=template)
    vocab = ((len(tokenizer) + 31) // 32) * 32
    common = {"vocab_size": vocab, "eos_token_id": tokenizer.eos_token_id}
    if bos:
        common["bos_token_id"] = tokenizer.bos_token_id
    if arch == "gpt2":
        config = GPT2Config(n_embd=64, n_layer=2, n_head=2, n_positions=512, **common)
    else:
        cls = {"llama": LlamaConfig, "qwen2": Qwen2Config}[arch]
        config = cls(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=512,
            tie_word_embeddings=False,
            **common,
        )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(folder)
    return folder


def write_alpaca(path: Path, rows: int = 48) -> Path:
    """A learnable toy task: name the colour of a numbered thing (the same answer each time)."""
    rng = random.Random(1)
    colours = ["red", "green", "blue", "yellow"]
    items = []
    for i in range(rows):
        thing = rng.choice(["cat", "dog", "bird", "fish", "tree", "house"])
        colour = colours[i % 4]
        items.append(
            {
                "instruction": f"What colour is the {thing} number {WORDS[i % 10]}?",
                "input": "" if i % 3 else f"The {thing} is {colour}.",
                "output": f"The {thing} is {colour}.",
            }
        )
    path.write_text("".join(json.dumps(item) + "\n" for item in items))
    return path


def write_chat(path: Path, fmt: str = "chatml", rows: int = 48) -> Path:
    rng = random.Random(2)
    items = []
    for i in range(rows):
        a, b = rng.choice(WORDS), rng.choice(WORDS)
        turns = [
            ("system", "You repeat words."),
            ("user", f"say {a}"),
            ("assistant", f"{a} {a}"),
            ("user", f"say {b}"),
            ("assistant", f"{b} {b}"),
        ]
        if i % 2:
            turns = turns[1:]
        if fmt == "sharegpt":
            names = {"system": "system", "user": "human", "assistant": "gpt"}
            items.append({"conversations": [{"from": names[r], "value": c} for r, c in turns]})
        else:
            items.append({"messages": [{"role": r, "content": c} for r, c in turns]})
    path.write_text("".join(json.dumps(item) + "\n" for item in items))
    return path


def write_rows(path: Path, items: list[dict]) -> Path:
    """Rows as .jsonl, .json (a list), .csv or .parquet, by the file's suffix."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(item) + "\n" for item in items))
    elif suffix == ".json":
        path.write_text(json.dumps(items, indent=1))
    elif suffix == ".csv":
        import csv

        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(items[0]))
            writer.writeheader()
            writer.writerows(items)
    elif suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(items), path)
    else:
        raise ValueError(f"no writer for {suffix}")
    return path


def write_classification(path: Path, rows: int = 48) -> Path:
    """Three learnable classes: the words of a review give its sentiment away (text, label)."""
    rng = random.Random(3)
    vocab = {
        "positive": ["good", "great", "nice", "love", "one"],
        "negative": ["bad", "awful", "sad", "hate", "two"],
        "neutral": ["table", "chair", "road", "city", "tree"],
    }
    names = sorted(vocab)
    items = []
    for i in range(rows):
        label = names[i % 3]
        items.append(
            {"review": " ".join(rng.choice(vocab[label]) for _ in range(6)), "sentiment": label}
        )
    return write_rows(path, items)


def write_text(path: Path, rows: int = 48) -> Path:
    """Raw documents for continued pre-training: repetitive, so the loss falls quickly."""
    rng = random.Random(4)
    items = []
    for i in range(rows):
        start = rng.randrange(10)
        counting = " ".join(WORDS[24 + (start + k) % 10] for k in range(8))
        items.append(
            {"body": f"{counting}. the {WORDS[i % 6]} river runs past the {WORDS[i % 4]} city."}
        )
    return write_rows(path, items)
