"""Loss masking on real tokenized examples, through the generated train.py used as a module.

Each test generates a run folder for a tiny offline model, imports its train.py, and builds
the datasets with the script's own functions (setup_tokenizer, load_rows, build_datasets,
Collator), so what is checked is exactly what training would see.
"""

from __future__ import annotations

import importlib.util
import itertools
import json

import pytest

import tiny
from smoke import generate, write_spec

pytest.importorskip("transformers")

_modules = itertools.count()


def load_recipe(tmp_path, model, data, **overrides):
    """Generate a run folder and import its train.py (a fresh module for each folder)."""
    run = generate(write_spec(tmp_path, model, data, **overrides), tmp_path / "run")
    spec = importlib.util.spec_from_file_location(
        f"generated_train_{next(_modules)}", run / "train.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build(recipe):
    tokenizer = recipe.setup_tokenizer()
    train_rows, eval_rows = recipe.load_rows()
    train, evaluation = recipe.build_datasets(tokenizer, train_rows, eval_rows)
    return tokenizer, train, evaluation


def spans(example):
    """(learned, token ids) runs of one example, in order."""
    runs = []
    for token, label in zip(example["input_ids"], example["labels"]):
        learned = label != -100
        if runs and runs[-1][0] == learned:
            runs[-1][1].append(token)
        else:
            runs.append((learned, [token]))
    return runs


def learned_texts(tokenizer, example):
    return [tokenizer.decode(ids) for learned, ids in spans(example) if learned]


def masked_text(tokenizer, example):
    return "".join(tokenizer.decode(ids) for learned, ids in spans(example) if not learned)


# ---------------------------------------------------------------- instruction (alpaca)


def test_instruction_learns_the_response_and_eos_only(tmp_path, tiny_models):
    recipe = load_recipe(
        tmp_path, tiny_models("llama"), tiny.write_alpaca(tmp_path / "a.jsonl", rows=12)
    )
    tokenizer, train, _ = build(recipe)
    for example in train:
        assert example["input_ids"].count(tokenizer.bos_token_id) == 1
        assert example["input_ids"][0] == tokenizer.bos_token_id
        assert example["labels"][0] == -100
        (response,) = learned_texts(tokenizer, example)  # one learned run: the response
        assert response.startswith("The ") and response.endswith("<|endoftext|>")
        prompt = masked_text(tokenizer, example)
        assert "### Instruction:" in prompt and prompt.rstrip().endswith("### Response:")
        assert example["labels"][-1] == tokenizer.eos_token_id  # EOS is learned: it stops


def test_pad_equal_to_eos_is_masked_but_the_real_eos_is_learned(tmp_path, tiny_models):
    model = tiny_models("gpt2", bos=False, pad_is_eos=True)
    recipe = load_recipe(tmp_path, model, tiny.write_alpaca(tmp_path / "a.jsonl", rows=12))
    tokenizer, train, _ = build(recipe)
    assert tokenizer.pad_token_id == tokenizer.eos_token_id and tokenizer.bos_token_id is None
    batch = sorted(train, key=lambda e: len(e["input_ids"]))[:: max(1, len(train) // 4)][:4]
    assert len({len(e["input_ids"]) for e in batch}) > 1, "need examples of different lengths"
    collated = recipe.Collator(tokenizer.pad_token_id)(batch)
    for row, example in enumerate(batch):
        length = len(example["input_ids"])
        labels, mask = collated["labels"][row].tolist(), collated["attention_mask"][row].tolist()
        ids = collated["input_ids"][row].tolist()
        assert ids[length - 1] == tokenizer.eos_token_id
        assert labels[length - 1] == tokenizer.eos_token_id, "the response's EOS must be learned"
        assert all(label == -100 for label in labels[length:]), "padding must not be learned"
        assert all(token == tokenizer.pad_token_id for token in ids[length:])
        assert mask == [1] * length + [0] * (len(ids) - length)


# ---------------------------------------------------------------- chat


def test_chat_learns_assistant_turns_with_their_end_of_turn(tmp_path, tiny_models):
    model = tiny_models("qwen2", template="chatml")
    data = tiny.write_chat(tmp_path / "c.jsonl", "sharegpt", rows=12)
    recipe = load_recipe(tmp_path, model, data, task_type="chat", format="sharegpt")
    assert recipe.PROMPT_FORMAT == "chat_template"
    tokenizer, train, _ = build(recipe)
    with_system = [e for e in train if "You repeat words." in tokenizer.decode(e["input_ids"])]
    assert with_system, "the toy data has conversations with a system turn"
    for example in train:
        turns = learned_texts(tokenizer, example)
        assert len(turns) == 2  # two assistant turns, each learned up to its end-of-turn
        for turn in turns:
            word = turn.split()[0]
            assert turn == f"{word} {word}<|im_end|>"  # the newline after it is never generated
        context = masked_text(tokenizer, example)
        assert context.count("<|im_start|>user\nsay ") == 2
        assert context.count("<|im_start|>assistant\n") == 2
    for example in with_system:
        assert "<|im_start|>system\nYou repeat words.<|im_end|>" in masked_text(tokenizer, example)


def test_chat_without_a_template_gets_chatml_with_new_special_tokens(tmp_path, tiny_models):
    model = tiny_models("llama")
    data = tiny.write_chat(tmp_path / "c.jsonl", "chatml", rows=12)
    recipe = load_recipe(tmp_path, model, data, task_type="chat", format="chatml")
    assert recipe.PROMPT_FORMAT == "chatml_default"
    tokenizer, train, _ = build(recipe)
    new_ids = recipe.new_token_ids(tokenizer)
    assert tokenizer.convert_ids_to_tokens(new_ids) == ["<|im_start|>", "<|im_end|>"]
    assert all(t in tokenizer.all_special_tokens for t in ["<|im_start|>", "<|im_end|>"])
    # BOS comes from the template (this tokenizer starts sequences with it), exactly once.
    assert tokenizer.chat_template.startswith("{{ bos_token }}")
    for example in train:
        assert example["input_ids"][0] == tokenizer.bos_token_id
        assert example["input_ids"].count(tokenizer.bos_token_id) == 1
        for turn in learned_texts(tokenizer, example):
            assert turn.endswith("<|im_end|>")
        assert new_ids[1] in [
            t for t, l in zip(example["input_ids"], example["labels"]) if l != -100
        ]


def test_bos_inside_the_template_is_not_doubled(tmp_path, tiny_models):
    model = tiny_models("llama", template="header")
    data = tiny.write_chat(tmp_path / "c.jsonl", "chatml", rows=12)
    recipe = load_recipe(tmp_path, model, data, task_type="chat", format="chatml")
    tokenizer, train, _ = build(recipe)
    assert recipe.ADD_BOS, "this tokenizer adds BOS on its own, the template writes it too"
    for example in train:
        assert example["input_ids"][0] == tokenizer.bos_token_id
        assert example["input_ids"].count(tokenizer.bos_token_id) == 1
        assert example["labels"][0] == -100
        for turn in learned_texts(tokenizer, example):
            assert turn.endswith("<|eot_id|>")
            assert "<|start_header_id|>" not in turn  # the header is context


def test_a_template_without_an_end_of_turn_token_is_refused(tmp_path, tiny_models):
    model = tiny_models("llama", template="plain")
    data = tiny.write_chat(tmp_path / "c.jsonl", "chatml", rows=12)
    recipe = load_recipe(tmp_path, model, data, task_type="chat", format="chatml")
    with pytest.raises(SystemExit, match="never learn to stop"):
        build(recipe)


def test_a_saved_tokenizer_with_another_template_is_refused(tmp_path, tiny_models):
    model = tiny_models("llama")
    data = tiny.write_chat(tmp_path / "c.jsonl", "chatml", rows=12)
    recipe = load_recipe(tmp_path, model, data, task_type="chat", format="chatml")
    tokenizer = recipe.setup_tokenizer()
    tokenizer.save_pretrained(tmp_path / "saved")
    recipe.check_saved_tokenizer(tokenizer, tmp_path / "saved")  # the same: no complaint
    tokenizer.chat_template = tokenizer.chat_template.replace("<|im_end|>", "<|im_end|>\n")
    with pytest.raises(SystemExit, match="chat template differs"):
        recipe.check_saved_tokenizer(tokenizer, tmp_path / "saved")


# ---------------------------------------------------------------- classification


def test_classification_labels_come_sorted_from_the_data(tmp_path, tiny_models):
    model = tiny_models("llama")
    data = tiny.write_classification(tmp_path / "c.csv", rows=12)
    recipe = load_recipe(
        tmp_path,
        model,
        data,
        task_type="classification",
        format="custom",
        dataset={"columns": {"text": "review", "label": "sentiment"}},
    )
    tokenizer, train, evaluation = build(recipe)
    assert recipe.LABELS == ["negative", "neutral", "positive"]
    arguments = recipe.task_model_arguments(tokenizer)
    assert arguments["id2label"] == {0: "negative", 1: "neutral", 2: "positive"}
    assert arguments["pad_token_id"] == tokenizer.pad_token_id is not None
    for example in train + evaluation:
        text = tokenizer.decode(example["input_ids"], skip_special_tokens=True)
        words = {"bad": 0, "table": 1, "good": 2, "awful": 0, "chair": 1, "great": 2}
        hints = {words[w] for w in text.split() if w in words}
        assert hints <= {example["labels"]}
    batch = recipe.Collator(tokenizer.pad_token_id)(train[:4])
    assert batch["labels"].tolist() == [e["labels"] for e in train[:4]]
    assert batch["input_ids"].shape == batch["attention_mask"].shape
    scores = recipe.classification_scores([0, 1, 2, 2], [0, 1, 1, 2])
    assert scores["accuracy"] == 0.75
    assert scores["macro_f1"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)


# ---------------------------------------------------------------- generation


@pytest.mark.parametrize(
    "variant", [{"arch": "llama"}, {"arch": "gpt2", "bos": False, "pad_is_eos": True}]
)
def test_generation_packs_documents_and_learns_every_token(tmp_path, tiny_models, variant):
    model = tiny_models(**variant)
    data = tiny.write_text(tmp_path / "t.jsonl", rows=20)
    recipe = load_recipe(
        tmp_path,
        model,
        data,
        task_type="generation",
        format="custom",
        dataset={"columns": {"text": "body"}},
        max_seq_length=64,
    )
    tokenizer, train, _ = build(recipe)
    blocks = [train[i] for i in range(len(train))]
    assert (
        all(len(b["input_ids"]) == 64 for b in blocks[:-1]) and len(blocks[-1]["input_ids"]) <= 64
    )
    assert all(b["labels"] == b["input_ids"] for b in blocks)  # loss on every token
    stream = [t for b in blocks for t in b["input_ids"]]
    documents = len(recipe.load_rows()[0])
    assert stream.count(tokenizer.eos_token_id) == documents  # EOS after each document
    if recipe.ADD_BOS:
        assert (
            stream.count(tokenizer.bos_token_id) == documents
            and stream[0] == tokenizer.bos_token_id
        )
    collated = recipe.Collator(tokenizer.pad_token_id)([blocks[0], blocks[-1]])
    short = len(blocks[-1]["input_ids"])
    assert collated["labels"][1, short:].eq(-100).all()
    assert (
        collated["labels"][1, short - 1].item() == tokenizer.eos_token_id
    )  # the last EOS is learned


# ---------------------------------------------------------------- data format errors


def test_a_malformed_conversation_is_named_by_row_and_turn(tmp_path, tiny_models):
    data = tiny.write_chat(tmp_path / "c.jsonl", "sharegpt", rows=12)
    recipe = load_recipe(
        tmp_path, tiny_models("qwen2", template="chatml"), data, task_type="chat", format="sharegpt"
    )
    rows = data.read_text().splitlines()
    broken = json.loads(rows[4])
    broken["conversations"][1] = {"from": "gpt"}  # no value
    rows[4] = json.dumps(broken)
    data.write_text("\n".join(rows) + "\n")
    with pytest.raises(SystemExit, match=r"row 5, turn 1: expected keys 'from' and 'value'"):
        recipe.load_rows()


def test_a_classification_row_without_label_is_named(tmp_path, tiny_models):
    data = tiny.write_classification(tmp_path / "c.jsonl", rows=12)
    recipe = load_recipe(
        tmp_path,
        tiny_models("llama"),
        data,
        task_type="classification",
        format="custom",
        dataset={"columns": {"text": "review", "label": "sentiment"}},
    )
    rows = data.read_text().splitlines()
    rows[2] = json.dumps({"review": "good good"})
    data.write_text("\n".join(rows) + "\n")
    with pytest.raises(SystemExit, match=r"row 3: field 'sentiment' is missing or empty"):
        recipe.load_rows()
