"""The generated train.py on real-world data problems: bad rows, edge splits, truncation,
--check-data --json, and what the saved folder tells inference about stopping."""

from __future__ import annotations

import json

import pytest

import tiny
from smoke import generate, run_script, write_spec
from test_masking import build, load_recipe

pytest.importorskip("transformers")


def chat_rows(count=8):
    rows = []
    for i in range(count):
        word = tiny.WORDS[i]
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": f"say {word}"},
                    {"role": "assistant", "content": f"{word} {word}"},
                ]
            }
        )
    return rows


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def chat_recipe(tmp_path, tiny_models, rows, **overrides):
    """The recipe generated for clean rows, then run on ``rows``: `generate` refuses malformed
    data itself, and these tests are about what train.py does when the data changed since."""
    data = write_jsonl(tmp_path / "chat.jsonl", chat_rows(len(rows)))
    model = tiny_models("qwen2", template="chatml")
    recipe = load_recipe(tmp_path, model, data, task_type="chat", format="chatml", **overrides)
    write_jsonl(data, rows)
    return recipe


# ---------------------------------------------------------------- malformed rows


@pytest.mark.parametrize(
    "content, kind", [(5, "int"), ({"text": "x"}, "dict"), (["a", "b"], "list"), (True, "bool")]
)
def test_non_text_content_is_named_by_file_row_and_message(tmp_path, tiny_models, content, kind):
    rows = chat_rows()
    rows[3]["messages"][1]["content"] = content
    recipe = chat_recipe(tmp_path, tiny_models, rows)
    with pytest.raises(SystemExit) as stop:
        recipe.load_rows()
    message = str(stop.value)
    assert f"row 4, message 1: 'content' must be text, got {kind}" in message
    assert "1 of 8 row(s)" in message and "--skip-bad-rows" in message


def test_every_bad_row_is_listed_and_skip_bad_rows_skips_and_counts(tmp_path, tiny_models, capsys):
    rows = chat_rows(10)
    recipe = chat_recipe(tmp_path, tiny_models, rows)
    rows[1]["messages"][0]["content"] = 7
    rows[6]["messages"] = "not a list"
    rows[8]["messages"][1]["role"] = "robot"
    write_jsonl(tmp_path / "chat.jsonl", rows)  # broken after generation (check-data refuses it)
    with pytest.raises(SystemExit) as stop:
        recipe.load_rows()
    message = str(stop.value)
    assert "3 of 10 row(s) cannot be trained on" in message
    for row in ("row 2, message 0", "row 7:", "row 9, message 1: unknown role 'robot'"):
        assert row in message
    recipe.SKIP_BAD_ROWS = True
    train_rows, eval_rows = recipe.load_rows()
    assert "Skipping 3 of 10 bad row(s)" in capsys.readouterr().out
    assert len(train_rows) + len(eval_rows) == 7
    numbers = sorted(list(train_rows[recipe.ROW]) + list(eval_rows[recipe.ROW]))
    assert numbers == [1, 3, 4, 5, 6, 8, 10]  # file row numbers survive the shuffle


def test_skip_bad_rows_from_the_spec_and_the_flag(tmp_path, tiny_models):
    rows = chat_rows()
    rows[2]["messages"][1]["content"] = {"nested": 1}
    recipe = chat_recipe(tmp_path, tiny_models, rows, dataset={"skip_bad_rows": True})
    assert recipe.SKIP_BAD_ROWS is True
    train_rows, eval_rows = recipe.load_rows()
    assert len(train_rows) + len(eval_rows) == 7
    source = (tmp_path / "run" / "train.py").read_text()
    assert '"--skip-bad-rows"' in source


def test_template_refusals_name_the_file_row_not_the_shuffled_one(tmp_path, tiny_models):
    rows = chat_rows(12)
    rows[9]["messages"] = [{"role": "assistant", "content": "hi"}, *rows[9]["messages"]]
    recipe = chat_recipe(tmp_path, tiny_models, rows)
    tokenizer = recipe.setup_tokenizer()
    with pytest.raises(SystemExit, match=r"row 10: the conversation starts with an assistant turn"):
        recipe.build_datasets(tokenizer, *recipe.load_rows())


def test_alpaca_field_that_is_not_text_is_refused_but_numbers_are_text(tmp_path, tiny_models):
    rows = [
        {"instruction": f"what is {i} plus {i}?", "input": "", "output": 2 * i} for i in range(8)
    ]
    data = write_jsonl(tmp_path / "a.jsonl", rows)
    recipe = load_recipe(tmp_path, tiny_models("llama"), data)
    tokenizer, train, _ = build(recipe)  # numbers in a text column are read as their text
    assert all(any(label != -100 for label in e["labels"]) for e in train)
    rows[5]["output"] = ["a", "list"]
    write_jsonl(data, rows)
    with pytest.raises(SystemExit, match=r"row 6: field 'output' must be text, got list"):
        recipe.load_rows()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "nan"])
def test_nan_and_infinite_labels_are_refused(tmp_path, tiny_models, bad):
    path = tmp_path / "c.jsonl"
    rows = [{"review": f"good {i}", "sentiment": ["pos", "neg"][i % 2]} for i in range(8)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    recipe = load_recipe(
        tmp_path,
        tiny_models("llama"),
        path,
        task_type="classification",
        format="custom",
        dataset={"columns": {"text": "review", "label": "sentiment"}},
    )
    rows[4]["sentiment"] = bad  # after generation: `generate` itself refuses NaN labels
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))  # json writes NaN/Infinity
    # Arrow reads NaN and Infinity as null: refused as missing, still naming row and field.
    with pytest.raises(SystemExit, match=r"row 5: field 'sentiment' is (missing|.*not a class)"):
        recipe.load_rows()


# ---------------------------------------------------------------- splits and lengths


def test_train_split_one_and_eval_split_zero_give_no_eval_set(tmp_path, tiny_models):
    recipe = chat_recipe(
        tmp_path, tiny_models, chat_rows(12), dataset={"train_split": 1.0, "eval_split": 0.0}
    )
    tokenizer = recipe.setup_tokenizer()
    train_rows, eval_rows = recipe.load_rows()
    assert (len(train_rows), len(eval_rows)) == (12, 0)
    train, evaluation = recipe.build_datasets(tokenizer, train_rows, eval_rows)
    assert len(train) == 12 and len(evaluation) == 0


def test_truncated_responses_are_counted_out_loud(tmp_path, tiny_models, capsys):
    rows = chat_rows(8)
    long_reply = " ".join(tiny.WORDS[:40])
    for row in rows[:3]:
        row["messages"][1]["content"] = long_reply
    recipe = chat_recipe(tmp_path, tiny_models, rows, max_seq_length=24)
    tokenizer = recipe.setup_tokenizer()
    train_rows, eval_rows = recipe.load_rows()
    recipe.build_datasets(tokenizer, train_rows, eval_rows)
    out = capsys.readouterr().out
    cut = sum(1 for n in list(train_rows[recipe.ROW]) if n <= 3)
    assert f"train: {cut} of {len(train_rows)} examples have responses cut at MAX_SEQ_LENGTH=24" in out


def test_generation_without_packing_splits_long_documents(tmp_path, tiny_models):
    data = tiny.write_text(tmp_path / "t.jsonl", rows=10)
    recipe = load_recipe(
        tmp_path,
        tiny_models("llama"),
        data,
        task_type="generation",
        format="custom",
        dataset={"columns": {"text": "body"}},
        max_seq_length=8,
        packing=False,
    )
    assert recipe.PACKING is False
    tokenizer = recipe.setup_tokenizer()
    train_rows, _ = recipe.load_rows()
    train, _ = recipe.build_datasets(tokenizer, train_rows, [])
    documents = recipe.tokenize_documents(tokenizer, train_rows)
    total = sum(len(ids) for ids in documents["input_ids"])
    kept = sum(len(ids) for ids in train["input_ids"])
    assert all(len(ids) <= 8 for ids in train["input_ids"])
    assert kept >= total - len(documents)  # at most a 1-token tail per document is dropped


# ---------------------------------------------------------------- saved artefacts


def test_generation_config_lists_every_end_of_turn_token(tmp_path, tiny_models):
    recipe = chat_recipe(tmp_path, tiny_models, chat_rows())
    tokenizer = recipe.setup_tokenizer()
    from transformers import AutoModelForCausalLM, GenerationConfig

    model = AutoModelForCausalLM.from_pretrained(tiny_models("qwen2", template="chatml"))
    recipe.save_generation_config(model, tokenizer, tmp_path / "saved")
    saved = GenerationConfig.from_pretrained(tmp_path / "saved")
    expected = {tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.eos_token_id}
    stop = saved.eos_token_id if isinstance(saved.eos_token_id, list) else [saved.eos_token_id]
    assert expected <= set(stop)


@pytest.mark.slow
def test_check_data_json_contract_for_instruction_data(tmp_path, tiny_models):
    data = tiny.write_alpaca(tmp_path / "a.jsonl", rows=12)
    run = generate(write_spec(tmp_path, tiny_models("llama"), data), tmp_path / "run")
    result = run_script(run, "train.py", "--check-data", "--json", "--check-data-rows", "5")
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(line) for line in result.stdout.splitlines()]
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    assert [r["row"] for r in records] == [1, 2, 3, 4, 5]
    for record, row in zip(records, rows):
        assert set(record) >= {"row", "input_ids", "labels", "learned"}
        assert record["learned"] == [row["output"] + "<|endoftext|>"]
        learned = [t for t, label in zip(record["input_ids"], record["labels"]) if label != -100]
        assert all(label in (-100, t) for t, label in zip(record["input_ids"], record["labels"]))
        assert learned[-1] == record["input_ids"][-1]  # EOS, learned


@pytest.mark.slow
def test_base_model_trained_on_chatml_stops_at_im_end(tmp_path, tiny_models):
    """A base model without a template: after training, generating from the saved folder with
    its generation_config stops at <|im_end|>."""
    data = tiny.write_chat(tmp_path / "c.jsonl", "chatml", rows=48)
    spec = write_spec(
        tmp_path,
        tiny_models("llama"),
        data,
        task_type="chat",
        format="chatml",
        method="full",
        learning_rate=3e-3,
        epochs=6,
        batch_size=8,
    )
    run = generate(spec, tmp_path / "run")
    out = tmp_path / "out"
    result = run_script(run, "train.py", "--output-dir", str(out))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert tokenizer.eos_token_id == im_end
    stop = model.generation_config.eos_token_id
    assert im_end in (stop if isinstance(stop, list) else [stop])
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "say river"}], add_generation_prompt=True, return_tensors="pt"
    )
    ids = prompt["input_ids"] if hasattr(prompt, "keys") else prompt
    output = model.generate(ids, max_new_tokens=20, do_sample=False)
    new = output[0, ids.shape[1] :].tolist()
    assert im_end in new and len(new) < 20, tokenizer.decode(new)


def test_check_data_json_for_classification_and_generation(tmp_path, tiny_models, capsys):
    import argparse

    args = argparse.Namespace(json=True, check_data_rows=3)
    data = tiny.write_classification(tmp_path / "c.csv", rows=12)
    (tmp_path / "cls").mkdir()
    recipe = load_recipe(
        tmp_path / "cls",
        tiny_models("llama"),
        data,
        task_type="classification",
        format="custom",
        dataset={"columns": {"text": "review", "label": "sentiment"}},
    )
    capsys.readouterr()  # what importing the script printed
    recipe.check_data(args)
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["row"] for r in records] == [1, 2, 3]
    assert [r["learned"] for r in records] == [["negative"], ["neutral"], ["positive"]]  # the file's
    assert all(r["labels"] == recipe.LABELS.index(r["learned"][0]) for r in records)

    text = tiny.write_text(tmp_path / "t.jsonl", rows=10)
    (tmp_path / "gen").mkdir()
    recipe = load_recipe(
        tmp_path / "gen",
        tiny_models("llama"),
        text,
        task_type="generation",
        format="custom",
        dataset={"columns": {"text": "body"}},
    )
    capsys.readouterr()  # what importing the script printed
    recipe.check_data(args)
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    bodies = [json.loads(line)["body"] for line in text.read_text().splitlines()]
    assert [r["row"] for r in records] == [1, 2, 3]
    for record, body in zip(records, bodies):
        assert record["labels"] == record["input_ids"]
        assert body in record["learned"][0]
