"""Labels on real chat-template families (tests/chat_templates.py), through the generated train.py.

For each family, multi-turn conversations with and without a system message: the token ids
train.py trains on equal `apply_chat_template(conversation, tokenize=True)` (the inference
tokenization), and exactly each assistant message's text plus the end-of-turn token that
closes it is learned. The label checks import the generated script (fast); a few families
also run `--check-data --json` and two training steps in a subprocess (slow).
"""

from __future__ import annotations

import json
import os
import random

import pytest

import tiny
from chat_templates import FAMILIES, TEMPLATED, system_merged
from smoke import generate, run_script, write_spec
from test_masking import load_recipe

pytest.importorskip("transformers")

WORDS = tiny.WORDS


def conversations(rows: int = 10, seed: int = 5) -> list[list[dict]]:
    """Alternating conversations of 1-3 exchanges, half with a system message; some text is
    outside the tokenizers' training (accents, CJK: byte fallback) or starts with a space."""
    rng = random.Random(seed)
    items = []
    for i in range(rows):
        messages = [{"role": "system", "content": "You repeat words."}] if i % 2 == 0 else []
        for turn in range(1 + i % 3):
            a, b = rng.choice(WORDS), rng.choice(WORDS)
            reply = f"{a} {b}" + (" café 日本" if (i + turn) % 4 == 0 else "")
            messages += [
                {"role": "user", "content": f"say {a} {b}" + ("?" if turn else "")},
                {"role": "assistant", "content": reply},
            ]
        items.append(messages)
    return items


def write_conversations(path, items):
    path.write_text("".join(json.dumps({"messages": m}, ensure_ascii=False) + "\n" for m in items))
    return path


def as_given_to_template(family, messages):
    return system_merged(messages) if family.system == "refused" else messages


def check_family_labels(recipe, family, items):
    """ids == inference tokenization; learned == each assistant text + its end-of-turn token."""
    tokenizer = recipe.setup_tokenizer()
    records = recipe.check_data_records(tokenizer, recipe.load_file_rows())
    assert [r["row"] for r in records] == list(range(1, len(items) + 1))
    for record, messages in zip(records, items):
        assert "error" not in record, record
        conversation = as_given_to_template(family, messages)
        expected = tokenizer.apply_chat_template(conversation, tokenize=True)["input_ids"]
        assert record["input_ids"] == expected, f"row {record['row']}: ids differ from inference"
        learned = [t.rstrip() for t in record["learned"]]
        replies = [m["content"] for m in messages if m["role"] == "assistant"]
        assert len(learned) == len(replies), (record["row"], record["learned"])
        for text, reply in zip(learned, replies):
            assert text.endswith(family.closing), (family.closing, text)
            assert text[: -len(family.closing)].strip() == reply.strip(), (text, reply)
        # Nothing else is learned: the labels are the ids at learned positions, -100 elsewhere.
        assert all(
            label in (-100, token) for label, token in zip(record["labels"], record["input_ids"])
        )
    return tokenizer, records


@pytest.mark.parametrize("name", TEMPLATED)
def test_each_family_learns_assistant_text_and_its_end_of_turn(tmp_path, tiny_models, name):
    family = FAMILIES[name]
    items = conversations()
    data = write_conversations(tmp_path / "chat.jsonl", items)
    recipe = load_recipe(
        tmp_path, tiny_models("llama", family=name), data, task_type="chat", format="chatml"
    )
    assert recipe.PROMPT_FORMAT == "chat_template"
    tokenizer, _ = check_family_labels(recipe, family, items)
    assert recipe.template_facts(tokenizer)["system"] == family.system
    train, evaluation = recipe.build_datasets(
        tokenizer, *recipe.load_rows()
    )  # the stop guard passes
    assert len(train) + len(evaluation) == len(items)
    stop = recipe.end_of_turn_ids(tokenizer)
    assert tokenizer.convert_tokens_to_ids(family.closing) in stop
    assert tokenizer.eos_token_id in stop


@pytest.mark.parametrize("name", ["gpt2", "llama2-base"])
def test_instruction_tuning_tokenizes_the_whole_text_once_and_learns_eos(
    tmp_path, tiny_models, name
):
    """Alpaca prompts on base models: GPT-2 style (BOS == EOS; EOS used to be discarded with
    BOS: "expected one of [] among its tokens") and SentencePiece style (segments tokenized
    apart each got a "▁"): ids are the tokenization of the whole text, response + EOS learned."""
    family = FAMILIES[name]
    data = tiny.write_alpaca(tmp_path / "a.jsonl", rows=8)
    recipe = load_recipe(tmp_path, tiny_models("llama", family=name), data)
    assert recipe.PROMPT_FORMAT == "alpaca"
    tokenizer = recipe.setup_tokenizer()
    train, _ = recipe.build_datasets(tokenizer, *recipe.load_rows())
    assert len(train) == 6  # 0.8 of 8 rows, rounded
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    for record, row in zip(recipe.check_data_records(tokenizer, recipe.load_file_rows()), rows):
        (learned,) = record["learned"]
        assert learned.endswith(family.eos)
        assert learned[: -len(family.eos)].strip() == row["output"]
        user = row["instruction"] + (f"\n\n{row['input']}" if row["input"] else "")
        text = recipe.ALPACA_PROMPT.format(instruction=user) + row["output"] + family.eos
        assert record["input_ids"] == tokenizer(text)["input_ids"]


def test_base_model_gets_chatml_and_stops_at_im_end(tmp_path, tiny_models):
    """No template, BOS == EOS: ChatML is added and <|im_end|> becomes the EOS announced."""
    model = tiny_models("llama", family="gpt2")
    data = write_conversations(tmp_path / "chat.jsonl", conversations(6))
    recipe = load_recipe(tmp_path, model, data, task_type="chat", format="chatml")
    assert recipe.PROMPT_FORMAT == "chatml_default"
    tokenizer = recipe.setup_tokenizer()
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert tokenizer.eos_token_id == im_end
    assert recipe.end_of_turn_ids(tokenizer) == {im_end}
    records = recipe.check_data_records(tokenizer, recipe.load_file_rows())
    assert all(t.endswith("<|im_end|>") for r in records for t in r["learned"])


def test_qwen3_reasoning_content_is_passed_and_learned_on_the_last_turn(tmp_path, tiny_models):
    family = FAMILIES["qwen3"]
    items = conversations(6)
    for messages in items:
        messages[-1]["reasoning_content"] = "think about red"
    data = write_conversations(tmp_path / "chat.jsonl", items)
    recipe = load_recipe(
        tmp_path, tiny_models("llama", family="qwen3"), data, task_type="chat", format="chatml"
    )
    tokenizer = recipe.setup_tokenizer()
    records = recipe.check_data_records(tokenizer, recipe.load_file_rows())
    for record, messages in zip(records, items):
        expected = tokenizer.apply_chat_template(messages, tokenize=True)["input_ids"]
        assert record["input_ids"] == expected
        *earlier, last = record["learned"]
        assert last.startswith("<think>\nthink about red\n</think>\n\n"), last
        assert last.endswith(messages[-1]["content"] + family.closing)
        assert all("<think>" not in turn for turn in earlier)


def test_template_that_refuses_system_can_drop_it_or_stop(tmp_path, tiny_models):
    items = conversations(6)
    data = write_conversations(tmp_path / "chat.jsonl", items)
    model = tiny_models("llama", family="gemma2")
    (tmp_path / "drop").mkdir()
    (tmp_path / "error").mkdir()
    dropped = load_recipe(
        tmp_path / "drop",
        model,
        data,
        task_type="chat",
        format="chatml",
        dataset={"system_message": "drop"},
    )
    tokenizer = dropped.setup_tokenizer()
    for record, messages in zip(
        dropped.check_data_records(tokenizer, dropped.load_file_rows()), items
    ):
        plain = [m for m in messages if m["role"] != "system"]
        assert record["input_ids"] == tokenizer.apply_chat_template(plain)["input_ids"]
    refused = load_recipe(
        tmp_path / "error",
        model,
        data,
        task_type="chat",
        format="chatml",
        dataset={"system_message": "error"},
    )
    tokenizer = refused.setup_tokenizer()
    with pytest.raises(SystemExit, match=r"row 1: has a system message.*no system role"):
        refused.build_datasets(tokenizer, *refused.load_rows())


def test_ignored_message_keys_are_reported_once(tmp_path, tiny_models, capsys):
    items = conversations(4)
    for messages in items:
        messages[-1]["weight"] = 1.0
    data = write_conversations(tmp_path / "chat.jsonl", items)
    recipe = load_recipe(
        tmp_path, tiny_models("llama", family="llama3"), data, task_type="chat", format="chatml"
    )
    tokenizer = recipe.setup_tokenizer()
    recipe.build_datasets(tokenizer, *recipe.load_rows())
    out = capsys.readouterr().out
    assert out.count("Message keys the chat template does not read (ignored): ['weight']") == 1


def with_template(model, folder, template):
    """A copy of a tiny model folder whose tokenizer has another chat template."""
    folder.mkdir()
    for path in model.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    config = json.loads((model / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    (folder / "chat_template.jinja").write_text(template)
    return folder


def test_generation_marks_of_the_template_are_used(tmp_path, tiny_models):
    template = (
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' }}"
        "{% if m['role'] == 'assistant' %}{% generation %}{{ m['content'] + '<|im_end|>' }}"
        "{% endgeneration %}{% else %}{{ m['content'] + '<|im_end|>' }}{% endif %}{{ '\\n' }}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    )
    model = with_template(tiny_models("llama", family="chatml"), tmp_path / "marked", template)
    items = conversations(6)
    data = write_conversations(tmp_path / "chat.jsonl", items)
    recipe = load_recipe(tmp_path, model, data, task_type="chat", format="chatml")
    tokenizer = recipe.setup_tokenizer()
    assert recipe.template_facts(tokenizer)["generation_marks"]
    records = recipe.check_data_records(tokenizer, recipe.load_file_rows())
    for record, messages in zip(records, items):
        assert record["input_ids"] == tokenizer.apply_chat_template(messages)["input_ids"]
        replies = [m["content"] + "<|im_end|>" for m in messages if m["role"] == "assistant"]
        assert record["learned"] == replies


def test_a_template_that_does_not_close_assistant_turns_is_refused(tmp_path, tiny_models):
    """A ChatML-like template without <|im_end|> after assistant turns: special tokens inside
    the span (<|im_start|>) must not pass for an end-of-turn."""
    template = (
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] }}"
        "{% if m['role'] != 'assistant' %}{{ '<|im_end|>' }}{% endif %}{{ '\\n' }}{% endfor %}"
    )
    broken = with_template(tiny_models("llama", family="chatml"), tmp_path / "broken", template)
    data = write_conversations(tmp_path / "chat.jsonl", conversations(4))
    recipe = load_recipe(tmp_path, broken, data, task_type="chat", format="chatml")
    tokenizer = recipe.setup_tokenizer()
    with pytest.raises(SystemExit, match="never learn to stop"):
        recipe.build_datasets(tokenizer, *recipe.load_rows())


@pytest.mark.slow
@pytest.mark.parametrize("name", ["llama2", "qwen3", "phi3", "gemma2", "deepseek-r1"])
def test_check_data_json_and_two_training_steps(tmp_path, tiny_models, name):
    family = FAMILIES[name]
    items = conversations(8)
    data = write_conversations(tmp_path / "chat.jsonl", items)
    spec = write_spec(
        tmp_path,
        tiny_models("llama", family=name),
        data,
        task_type="chat",
        format="chatml",
        method="lora",
    )
    run = generate(spec, tmp_path / "run")
    result = run_script(run, "train.py", "--check-data", "--json", "--check-data-rows", "3")
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["row"] for r in records] == [1, 2, 3]
    for record, messages in zip(records, items):
        replies = [m["content"] for m in messages if m["role"] == "assistant"]
        assert [t.rstrip()[: -len(family.closing)].strip() for t in record["learned"]] == replies
        assert len(record["labels"]) == len(record["input_ids"])
    result = run_script(run, "train.py", "--max-steps", "2", "--output-dir", str(tmp_path / "out"))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    saved = json.loads((tmp_path / "out" / "generation_config.json").read_text())
    stop = saved["eos_token_id"]
    stop = stop if isinstance(stop, list) else [stop]
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "out")
    assert tokenizer.convert_tokens_to_ids(family.closing) in stop


@pytest.mark.parametrize("name", TEMPLATED)
def test_plan_time_reading_of_the_system_role_matches_the_script(name):
    """finetune_gen reads the template's system role without transformers, like train.py does."""
    from finetune_gen.knowledge.prompts import template_system_role

    assert template_system_role(FAMILIES[name].template) == FAMILIES[name].system


@pytest.mark.parametrize("policy", ["merge", "drop", "error"])
def test_plan_says_when_a_local_template_has_no_system_role(tmp_path, tiny_models, policy):
    from conftest import run_cli

    data = write_conversations(tmp_path / "chat.jsonl", conversations(6))
    spec = write_spec(
        tmp_path,
        tiny_models("llama", family="gemma2"),
        data,
        task_type="chat",
        format="chatml",
        dataset={"system_message": policy},
    )
    result = run_cli("plan", spec, "--json")
    assert result.returncode == 0, result.stderr
    warnings = json.loads(result.stdout)["plan"]["warnings"]
    (warning,) = [w for w in warnings if w.startswith("the chat template has no system role")]
    assert f"dataset.system_message: {policy}" in warning
    config = (generate(spec, tmp_path / "run") / "config.yaml").read_text()
    assert f'system_message: "{policy}"' in config
    plain = write_spec(
        tmp_path, tiny_models("llama", family="llama3"), data, task_type="chat", format="chatml"
    )
    warnings = json.loads(run_cli("plan", plain, "--json").stdout)["plan"]["warnings"]
    assert not any("system role" in w for w in warnings)


# ---------------------------------------------------------------- property: random conversations

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

# Text as users write it: words, digits, punctuation, accents, CJK, emoji, inner spaces and
# newlines (no "<", so no text can spell a special token).
_TEXT = st.text(
    alphabet=st.sampled_from(list("abcxyz ABC019.,!?'\"-_\n") + ["é", "ß", "日", "本", "🙂", "\t"]),
    min_size=1,
    max_size=24,
).filter(lambda text: text.strip())


@st.composite
def _conversation(draw):
    messages = [{"role": "system", "content": draw(_TEXT)}] if draw(st.booleans()) else []
    for _ in range(draw(st.integers(1, 3))):
        messages += [
            {"role": "user", "content": draw(_TEXT)},
            {"role": "assistant", "content": draw(_TEXT)},
        ]
    return messages


@pytest.mark.parametrize("name", ["chatml", "llama2", "gemma3", "qwen3", "phi3"])
def test_property_learned_text_is_the_assistant_contents_plus_end_of_turn(
    tmp_path, tiny_models, name
):
    family = FAMILIES[name]
    data = write_conversations(tmp_path / "chat.jsonl", conversations(4))
    recipe = load_recipe(
        tmp_path, tiny_models("llama", family=name), data, task_type="chat", format="chatml"
    )
    tokenizer = recipe.setup_tokenizer()
    closing = tokenizer.convert_tokens_to_ids(family.closing)

    @settings(
        max_examples=int(os.environ.get("FINETUNE_GEN_PROPERTY_EXAMPLES", "40")),
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    @given(_conversation())
    # Found by this test on Llama 2's template: a reply "\n0" matched the user's "0" that the
    # template puts after "\n\n", while its own turn shows it trimmed (" 0 </s>").
    @example(
        [
            {"role": "system", "content": "0"},
            {"role": "user", "content": "0"},
            {"role": "assistant", "content": "\n0"},
        ]
    )
    def check(messages):
        batch = {"messages": [messages], recipe.ROW: [1]}
        encoded = recipe.encode_batch(batch, tokenizer)
        assert encoded["problem"] == [""]
        ids, labels = encoded["input_ids"][0], encoded["labels"][0]
        expected = tokenizer.apply_chat_template(
            as_given_to_template(family, messages), tokenize=True
        )["input_ids"][: recipe.MAX_SEQ_LENGTH]
        assert ids == expected
        runs = recipe.learned_runs({"labels": labels})
        replies = [m["content"] for m in messages if m["role"] == "assistant"]
        assert len(runs) == len(replies)
        for (start, end), reply in zip(runs, replies):
            assert ids[end - 1] == closing
            text = tokenizer.decode(ids[start : end - 1])
            assert " ".join(text.split()) == " ".join(reply.split())

    check()


def tool_conversations() -> list[list[dict]]:
    """Agent traces: a turn that only calls a tool (content None or ""), the tool's result, the
    answer. Two tools with different argument names: read by Arrow, each call's arguments get
    the other's keys as nulls, which train.py must drop to render what inference renders."""
    calls = [
        ("get_weather", {"city": "Paris"}, "18 C and sunny"),
        ("search", {"query": "cats"}, "3 hits"),
    ]
    items = []
    for i in range(6):
        name, arguments, result = calls[i % 2]
        messages = [{"role": "system", "content": "You call tools."}] if i % 2 else []
        messages += [
            {"role": "user", "content": f"question {i} about {next(iter(arguments.values()))}"},
            {
                "role": "assistant",
                "content": None if i % 3 else "",
                "tool_calls": [
                    {"type": "function", "function": {"name": name, "arguments": arguments}}
                ],
            },
            {"role": "tool", "content": result},
            {"role": "assistant", "content": f"answer {i} is ready"},
        ]
        items.append(messages)
    return items


def for_template(messages):
    """The messages as train.py gives them to the template (None content of a call is "")."""
    return [{**m, "content": m["content"] or ""} for m in messages]


@pytest.mark.parametrize("name", ["qwen2.5", "llama3.1"])
def test_a_turn_that_only_calls_a_tool_is_learned(tmp_path, tiny_models, name):
    """The learned text of a tool-call turn is what the model must write after the assistant
    header: the rendered call and the end-of-turn token; the tool's result is context."""
    family = FAMILIES[name]
    items = tool_conversations()
    data = write_conversations(tmp_path / "tools.jsonl", items)
    recipe = load_recipe(
        tmp_path, tiny_models("llama", family=name), data, task_type="chat", format="chatml"
    )
    tokenizer = recipe.setup_tokenizer()
    records = recipe.check_data_records(tokenizer, recipe.load_file_rows())
    for record, messages in zip(records, items):
        assert "error" not in record, record
        conversation = for_template(messages)
        expected = tokenizer.apply_chat_template(conversation, tokenize=True)["input_ids"]
        assert record["input_ids"] == expected, f"row {record['row']}: ids differ from inference"
        call = len(conversation) - 3  # the tool-calling turn
        prompt = tokenizer.apply_chat_template(
            conversation[:call], tokenize=False, add_generation_prompt=True
        )
        with_call = tokenizer.apply_chat_template(conversation[: call + 1], tokenize=False)
        assert with_call.startswith(prompt)
        rendered_call = with_call[len(prompt) :]
        rendered_call = rendered_call[: rendered_call.index(family.closing) + len(family.closing)]
        assert messages[call]["tool_calls"][0]["function"]["name"] in rendered_call
        first, second = record["learned"]
        assert first.strip() == rendered_call.strip()
        assert second.rstrip().endswith(family.closing)
        assert second.rstrip()[: -len(family.closing)].strip() == conversation[-1]["content"]
        result = conversation[-2]["content"]
        assert all(result not in text for text in record["learned"])  # the tool's words are context
    train, evaluation = recipe.build_datasets(tokenizer, *recipe.load_rows())
    assert len(train) + len(evaluation) == len(items)


def test_a_template_without_tool_calls_learns_only_the_answers(tmp_path, tiny_models):
    """ChatML does not render tool calls: the empty calling turn teaches nothing (it would
    teach the model to end a turn without a word), the answers are still learned."""
    items = tool_conversations()
    data = write_conversations(tmp_path / "tools.jsonl", items)
    recipe = load_recipe(
        tmp_path, tiny_models("llama", family="chatml"), data, task_type="chat", format="chatml"
    )
    tokenizer = recipe.setup_tokenizer()
    for record, messages in zip(
        recipe.check_data_records(tokenizer, recipe.load_file_rows()), items
    ):
        (learned,) = record["learned"]
        assert learned.rstrip() == messages[-1]["content"] + "<|im_end|>"
