"""Contamination: n-gram overlap on content, boilerplate ignored, the same core in eval.py."""

from __future__ import annotations

import csv
import json
import random

import pytest

from conftest import run_cli
from finetune_gen.data.contamination import content_texts, core_source, ngram_overlap

SYSTEM = (
    "You are a careful and helpful assistant. Answer the question truthfully, concisely and "
    "politely, citing the relevant facts, and say so plainly when you do not know the answer."
)
VOCAB = (
    "apple river stone cloud engine paper violet marble canyon harbor lantern orbit quartz "
    "saddle timber velvet walnut yonder zephyr basket cobalt dune ember falcon glacier hollow "
    "island jasmine kettle meadow nickel oyster pepper quiver raven summit thistle umber"
).split()


def unique_text(rng: random.Random, words: int = 20) -> str:
    return " ".join(rng.choice(VOCAB) for _ in range(words))


def chatml_rows(seed: int, count: int) -> list[dict]:
    rng = random.Random(seed)
    return [
        {
            "messages": [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": unique_text(rng)},
                {"role": "assistant", "content": unique_text(rng)},
            ]
        }
        for _ in range(count)
    ]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def texts(rows):
    return [list(content_texts(row)) for row in rows]


def test_disjoint_rows_sharing_a_system_prompt_are_not_flagged():
    """The issue: json.dumps(row) 13-grams flagged 10 of 10 rows whose content was unique."""
    train, evaluation = chatml_rows(1, 40), chatml_rows(2, 10)
    report = ngram_overlap(texts(train), texts(evaluation))
    assert report["flagged"] == []
    assert report["ignored_common_ngrams"] > 0  # the system prompt's n-grams were seen and ignored


def test_planted_overlaps_are_found_and_named():
    train, evaluation = chatml_rows(1, 40), chatml_rows(2, 40)
    planted = {3: 7, 11: 20, 19: 1, 28: 33, 40: 40}  # eval row -> train row (1-based)
    for eval_row, train_row in planted.items():
        evaluation[eval_row - 1]["messages"][1] = train[train_row - 1]["messages"][1]
    report = ngram_overlap(texts(train), texts(evaluation))
    assert {item["row"]: item["train_rows"] for item in report["flagged"]} == {
        row: [source] for row, source in planted.items()
    }
    assert all(0.3 < item["overlap"] < 0.7 for item in report["flagged"])  # the question, not the answer
    assert report["contaminated_rows"] == 5 and report["eval_rows"] == 40


def test_keys_do_not_count_and_ngrams_stay_inside_one_field():
    row = {"a_very_long_key_name": "short", "another": ["x y", {"k": "z"}]}
    assert list(content_texts(row)) == ["short", "x y", "z"]
    # Two fields whose words would form a 13-gram only when joined do not match.
    left = {"p": " ".join(VOCAB[:7]), "r": " ".join(VOCAB[7:14])}
    right = {"text": " ".join(VOCAB[:14])}
    assert ngram_overlap(texts([left]), texts([right]), n=13)["flagged"] == []


def test_ngram_length_is_configurable():
    train = [{"text": "the cat sat on the mat today"}]
    evaluation = [{"text": "a cat sat on the rug"}]
    assert ngram_overlap(texts(train), texts(evaluation), n=3)["contaminated_rows"] == 1
    assert ngram_overlap(texts(train), texts(evaluation), n=5)["contaminated_rows"] == 0


def test_core_source_is_standalone():
    """The core rendered into eval.py runs with nothing but `re` imported."""
    namespace: dict = {}
    exec("import re\n" + core_source(), namespace)
    report = namespace["ngram_overlap"](texts(chatml_rows(1, 5)), texts(chatml_rows(1, 2)))
    assert report["contaminated_rows"] == 2


def test_cli_across_formats(tmp_path):
    train_rows = chatml_rows(1, 40)
    train = write_jsonl(tmp_path / "train.jsonl", train_rows)
    # The same content in another format and file type: alpaca CSV with planted copies.
    rng = random.Random(5)
    alpaca = [
        {"instruction": SYSTEM + " " + unique_text(rng), "input": "", "output": unique_text(rng)}
        for _ in range(40)
    ]
    for i in (0, 9, 18, 27, 36):
        alpaca[i]["output"] = train_rows[i]["messages"][2]["content"]
    against = tmp_path / "bench.csv"
    with against.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["instruction", "input", "output"])
        writer.writeheader()
        writer.writerows(alpaca)
    result = run_cli("check-contamination", train, "--against", against, "--json", check=True)
    report = json.loads(result.stdout)["against"][str(against)]
    assert [item["row"] for item in report["flagged"]] == [1, 10, 19, 28, 37]
    text = run_cli("check-contamination", train, "--against", against, "--n", "8", check=True)
    assert "5 of 40 rows" in text.stdout and "row 10:" in text.stdout
    assert run_cli("check-contamination", train, "--against", against, "--fail").returncode == 1


def test_cli_reads_parquet(tmp_path):
    pytest.importorskip("pyarrow")
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = chatml_rows(1, 12)
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    table = pa.Table.from_pylist([{"question": r["messages"][1]["content"]} for r in rows[:3]])
    pq.write_table(table, tmp_path / "bench.parquet")
    result = run_cli(
        "check-contamination", train, "--against", tmp_path / "bench.parquet", "--json", check=True
    )
    assert json.loads(result.stdout)["against"][str(tmp_path / "bench.parquet")]["contaminated_rows"] == 3


def test_cli_bad_input_is_one_line_exit_2(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", chatml_rows(1, 3))
    missing = run_cli("check-contamination", train, "--against", tmp_path / "nope.jsonl")
    assert missing.returncode == 2 and "nope.jsonl: no such file" in missing.stderr
    assert "Traceback" not in missing.stderr
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"a": 1}\n{oops\n')
    result = run_cli("check-contamination", train, "--against", broken)
    assert result.returncode == 2 and "broken.jsonl:2: not valid JSON" in result.stderr
