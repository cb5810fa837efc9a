"""check-data finds each planted problem, and nothing in a clean file; --write-clean output passes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from finetune_gen.cli import main

# Twelve rows with nothing in common but a few function words.
DISTINCT = [
    (
        "Explain photosynthesis in simple terms for a young child who is curious about plants",
        "Plants use sunlight, water and air to make their own food and give off oxygen.",
    ),
    (
        "How do I reset my password on the company portal if I forgot my old one",
        "Open the login page, click forgot password, and follow the emailed link.",
    ),
    (
        "Write a haiku about the sea at night",
        "Dark waves hum softly, moonlight spills on restless foam.",
    ),
    (
        "What is the capital of Australia",
        "Canberra is the capital, not Sydney as many people think.",
    ),
    (
        "Give three tips for staying healthy during winter",
        "Eat vegetables, sleep seven hours, and keep moving even when it is cold.",
    ),
    ("Translate good morning into Spanish", "Buenos días."),
    (
        "Summarise the plot of Romeo and Juliet in one sentence",
        "Two young lovers from feuding families in Verona die tragically.",
    ),
    (
        "Why is the sky blue",
        "Air molecules scatter short blue wavelengths of sunlight more than red ones.",
    ),
    (
        "Suggest a name for a bakery that sells sourdough",
        "Crust and Crumb would suit a sourdough bakery.",
    ),
    ("Convert 100 degrees Fahrenheit to Celsius", "That is about 37.8 degrees Celsius."),
    (
        "List two benefits of learning a second language",
        "It improves memory and opens doors to jobs abroad.",
    ),
    (
        "What does a compiler do",
        "It translates source code into machine instructions a processor runs.",
    ),
]


def alpaca(prompt, response, **extra):
    return {"instruction": prompt, "input": "", "output": response, **extra}


def write_jsonl(path: Path, rows) -> Path:
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(
                (row if isinstance(row, str) else json.dumps(row, ensure_ascii=False)) + "\n"
            )
    return path


def check(*args: str) -> tuple[int, dict, str]:
    result = CliRunner().invoke(main, ["check-data", *map(str, args), "--json"])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, json.loads(result.stdout), result.stderr


def kinds_by_row(report) -> dict[int, set[str]]:
    found: dict[int, set[str]] = {}
    for item in report["problems"]["items"]:
        found.setdefault(item["row"], set()).add(item["kind"])
    return found


@pytest.fixture
def clean_alpaca(tmp_path):
    return write_jsonl(tmp_path / "clean.jsonl", [alpaca(p, r) for p, r in DISTINCT])


@pytest.fixture
def planted_alpaca(tmp_path):
    rows = [alpaca(p, r) for p, r in DISTINCT]  # rows 1-12
    rows.append(alpaca(*DISTINCT[3]))  # 13: exact copy of row 4
    rows.append(
        alpaca("WHAT is the  capital of\tAustralia", DISTINCT[3][1])
    )  # 14: copy after normalising
    rows.append(
        alpaca("Ｗｈｙ is the sky blue", DISTINCT[7][1])
    )  # 15: fullwidth letters (NFKC) = row 8
    rows.append(  # 16: paraphrase of row 1, a few words changed
        alpaca(
            "Explain photosynthesis in easy words for a young kid who is curious about plants",
            "Plants use sunlight, water and air to make their own food and release oxygen.",
        )
    )
    rows.append(alpaca("Describe the water cycle", ""))  # 17: empty output
    rows.append({"instruction": "Name a planet", "input": ""})  # 18: missing field
    rows.append('{"instruction": "Broken", "output": ')  # 19: broken JSON line
    rows.append(
        alpaca("Tell me a secret", "As an AI language model, I cannot share secrets.")
    )  # 20: refusal
    return write_jsonl(tmp_path / "planted.jsonl", rows)


def test_planted_problems_are_each_found(planted_alpaca):
    code, report, stderr = check(planted_alpaca, "--format", "alpaca")
    assert code == 2
    assert kinds_by_row(report) == {
        17: {"empty_field"},
        18: {"missing_field"},
        19: {"invalid_json"},
    }
    assert "row 17: field 'output' (response) is empty or whitespace-only" in stderr
    assert "row 19: not valid JSON" in stderr
    assert report["duplicates"]["exact"]["listed"] == [[4, 13, 14], [8, 15]]
    assert report["duplicates"]["near"]["listed"] == [[1, 16]]
    assert report["quality"]["refusal"]["rows"] == [20]
    assert report["rows"] == 20


def test_clean_file_has_nothing_to_report(clean_alpaca):
    code, report, stderr = check(clean_alpaca, "--format", "alpaca")
    assert code == 0 and stderr == ""
    assert report["problems"]["count"] == 0
    assert report["duplicates"]["exact"]["clusters"] == 0
    assert report["duplicates"]["near"]["clusters"] == 0
    assert all(flag["count"] == 0 for flag in report["quality"].values()), report["quality"]
    assert report["warnings"] == []


def test_nan_label_and_label_balance(tmp_path):
    rows = [
        {"text": f"{p} {r}", "label": "pos" if i % 2 else "neg"}
        for i, (p, r) in enumerate(DISTINCT)
    ]
    rows.append('{"text": "unsure about this one", "label": NaN}')  # row 13
    path = write_jsonl(tmp_path / "labels.jsonl", rows)
    code, report, _ = check(
        path, "--format", "custom", "--columns", "text=text", "--columns", "label=label"
    )
    assert code == 2
    assert kinds_by_row(report) == {13: {"nan_or_inf"}}
    assert report["labels"]["counts"] == {"neg": 6, "pos": 6}
    assert report["labels"]["below_minimum"] == ["neg", "pos"]  # under the default 10 per class
    assert any("fewer than 10 rows" in w for w in report["warnings"])
    code, report, _ = check(
        path, "--format", "custom", "--columns", "text=text,label=label", "--min-per-class", "5"
    )
    assert report["labels"]["below_minimum"] == []


@pytest.mark.parametrize("data_format", ["chatml", "sharegpt"])
def test_chat_roles_out_of_order_and_no_assistant(tmp_path, data_format):
    def conversation(*turns):
        if data_format == "chatml":
            return {"messages": [{"role": r, "content": c} for r, c in turns]}
        names = {"user": "human", "assistant": "gpt", "system": "system"}
        return {"conversations": [{"from": names[r], "value": c} for r, c in turns]}

    rows = [
        conversation(("system", "Be brief."), ("user", p), ("assistant", r))
        for p, r in DISTINCT[:4]
    ]
    rows.append(conversation(("user", "Hello"), ("user", "Anyone?"), ("assistant", "Yes.")))  # 5
    rows.append(conversation(("assistant", "I start."), ("user", "Odd.")))  # 6
    rows.append(conversation(("system", "Be brief."), ("user", "Only a question?")))  # 7
    path = write_jsonl(tmp_path / "chat.jsonl", rows)
    code, report, _ = check(path, "--format", data_format)
    assert code == 2
    assert kinds_by_row(report) == {
        5: {"roles_out_of_order"},
        6: {"roles_out_of_order"},
        7: {"no_assistant_turn"},
    }
    # The system prompt shared by every row does not make the rows near duplicates.
    assert report["duplicates"]["near"]["clusters"] == 0
    assert 0 < report["lengths"]["learned_token_share"] < 1


def test_write_clean_output_passes_and_input_is_untouched(planted_alpaca, tmp_path):
    before = hashlib.sha256(planted_alpaca.read_bytes()).hexdigest()
    out = tmp_path / "out" / "clean.jsonl"
    result = CliRunner().invoke(
        main, ["check-data", str(planted_alpaca), "--format", "alpaca", "--write-clean", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert hashlib.sha256(planted_alpaca.read_bytes()).hexdigest() == before
    dropped = json.loads((tmp_path / "out" / "clean.report.json").read_text())["dropped"]
    reasons = {item["row"]: item["reasons"] for item in dropped["rows"]}
    assert sorted(reasons) == [13, 14, 15, 16, 17, 18, 19, 20]
    assert reasons[16] == ["near_duplicate_of_row_1"] and reasons[13] == [
        "exact_duplicate_of_row_4"
    ]
    assert reasons[19] == ["problem:invalid_json"] and reasons[20] == ["flag:refusal"]
    code, report, stderr = check(out, "--format", "alpaca")
    assert code == 0 and stderr == ""
    assert report["rows"] == 12
    assert (
        report["duplicates"]["exact"]["clusters"] == report["duplicates"]["near"]["clusters"] == 0
    )
    assert all(flag["count"] == 0 for flag in report["quality"].values())


@pytest.mark.parametrize("suffix", [".csv", ".json", ".parquet"])
def test_write_clean_keeps_the_format(tmp_path, suffix):
    rows = [{"text": f"{p} {r}", "label": str(i % 2)} for i, (p, r) in enumerate(DISTINCT)]
    rows.append(dict(rows[0]))  # row 13: duplicate
    rows.append({"text": "nan label", "label": "NaN"})  # row 14
    path = tmp_path / f"data{suffix}"
    if suffix == ".csv":
        import csv

        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, ["text", "label"])
            writer.writeheader()
            writer.writerows(rows)
    elif suffix == ".json":
        path.write_text(json.dumps({"train": rows}))
    else:
        pq = pytest.importorskip("pyarrow.parquet")
        import pyarrow as pa

        pq.write_table(pa.Table.from_pylist(rows), path)
    columns = ["--format", "custom", "--columns", "text=text,label=label", "--min-per-class", "1"]
    code, report, _ = check(path, *columns)
    assert code == 2 and report["duplicates"]["exact"]["listed"] == [[1, 13]]
    out = tmp_path / "clean"
    code, report, _ = check(path, *columns, "--write-clean", out)
    assert code == 0 and report["clean"]["rows_out"] == 12
    code, report, _ = check(out / path.name, *columns)
    assert code == 0 and report["rows"] == 12 and report["duplicates"]["exact"]["clusters"] == 0


def test_write_clean_refuses_to_overwrite_the_input(clean_alpaca):
    result = CliRunner().invoke(
        main,
        ["check-data", str(clean_alpaca), "--format", "alpaca", "--write-clean", str(clean_alpaca)],
    )
    assert result.exit_code == 2 and "the input is never modified" in result.stderr


def test_near_duplicates_found_for_paraphrases_not_for_distinct_rows(tmp_path):
    from finetune_gen.data.check import DataChecker
    from finetune_gen.data.read import Record

    paraphrases = [
        (
            "How can I reset my password on the company website if I forgot my previous one",
            "Open the login page, click forgot password, and follow the link in the email.",
        ),
        (
            "Give three tips for staying well during the winter",
            "Eat vegetables, sleep eight hours, and keep moving even when it is cold.",
        ),
        (
            "List two benefits of learning another language",
            "It improves memory and opens doors to work abroad.",
        ),
    ]
    checker = DataChecker(
        "instruction", "alpaca", {"prompt": "instruction", "input": "input", "response": "output"}
    )
    rows = [alpaca(p, r) for p, r in DISTINCT + paraphrases]
    for number, row in enumerate(rows, 1):
        checker.add(Record(number, number, value=row))
    report = checker.finish()
    assert report["duplicates"]["near"]["listed"] == [[2, 13], [5, 14], [11, 15]]
    assert report["duplicates"]["exact"]["clusters"] == 0


def test_near_duplicate_threshold_is_configurable(planted_alpaca):
    _, strict, _ = check(planted_alpaca, "--format", "alpaca", "--near-dup-threshold", "0.95")
    assert (
        strict["duplicates"]["near"]["clusters"] == 0
        and strict["duplicates"]["near"]["threshold"] == 0.95
    )


@pytest.mark.parametrize(
    "flag, prompt, response",
    [
        ("short_response", "What is the answer to the question", "42"),
        (
            "repeats_prompt",
            "Please repeat after me the quick brown fox jumps over the lazy dog",
            "Please repeat after me the quick brown fox jumps over the lazy dog",
        ),
        ("repetitive", "Write a story", "The cat sat on the mat. " * 30),
        ("refusal", "How do I pick a lock", "I'm sorry, but I can't help with that request."),
        ("non_text", "Encode this", "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo" * 8),
    ],
)
def test_quality_flags(tmp_path, flag, prompt, response):
    rows = [alpaca(p, r) for p, r in DISTINCT] + [alpaca(prompt, response)]
    code, report, _ = check(write_jsonl(tmp_path / "d.jsonl", rows), "--format", "alpaca")
    assert code == 0
    flagged = {name: item["rows"] for name, item in report["quality"].items() if item["rows"]}
    assert flagged == {flag: [13]}
    assert report["thresholds"][flag] == report["quality"][flag]["rule"]


def test_lengths_estimate_says_so_and_counts_rows_over_max_seq_length(tmp_path):
    rows = [alpaca(p, r) for p, r in DISTINCT] + [alpaca("Write an essay", "word " * 400)]
    code, report, _ = check(
        write_jsonl(tmp_path / "d.jsonl", rows), "--format", "alpaca", "--max-seq-length", "100"
    )
    assert code == 0
    lengths = report["lengths"]
    assert lengths["estimated"] is True and "estimate" in lengths["tokenizer"]
    assert lengths["over_max_seq_length"] == 1 and lengths["max"] >= 500
    assert any("longer than max_seq_length 100" in w for w in report["warnings"])


def test_real_tokenizer_is_used_when_given(tmp_path):
    pytest.importorskip("transformers")
    import tiny

    folder = tiny.build_tokenizer(tmp_path / "tok")
    folder = folder if isinstance(folder, Path) else tmp_path / "tok"
    path = write_jsonl(tmp_path / "d.jsonl", [alpaca(p, r) for p, r in DISTINCT])
    code, report, _ = check(path, "--format", "alpaca", "--tokenizer", folder)
    assert code == 0
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    first = len(tokenizer(DISTINCT[0][0], add_special_tokens=False)["input_ids"]) + len(
        tokenizer(DISTINCT[0][1], add_special_tokens=False)["input_ids"]
    )
    assert report["lengths"]["estimated"] is False and report["lengths"]["tokenizer"] == str(folder)
    assert report["lengths"]["max"] >= first


def test_check_data_spec_form(tmp_path, clean_alpaca):
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "base_model: meta-llama/Llama-3.1-8B\ntask_type: instruction\n"
        "dataset: {path: clean.jsonl, format: alpaca, near_dup_threshold: 0.9}\n"
        "training_config: {max_seq_length: 64}\nhardware: {gpus: 1, vram_per_gpu: 24GB}\n"
    )
    code, report, _ = check(spec)
    assert code == 0 and report["rows"] == 12 and report["path"] == "clean.jsonl"
    assert report["duplicates"]["near"]["threshold"] == 0.9
    assert report["lengths"]["max_seq_length"] == 64


def test_summary_table_without_json(planted_alpaca):
    result = CliRunner().invoke(main, ["check-data", str(planted_alpaca), "--format", "alpaca"])
    assert result.exit_code == 2
    for words in (
        "exact duplicates",
        "near duplicates",
        "tokens per row",
        "flag refusal",
        "learned tokens",
    ):
        assert words in result.stdout
    assert (
        "error: " in result.stderr and "3 of 20 rows do not match format 'alpaca'" in result.stderr
    )
