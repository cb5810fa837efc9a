"""The run folder's data preparation: train.py's split, test set, mixing and augmentation come
from finetune_gen/data/split.py's shared core; the planner counts mixed rows and reads a
check-data report."""

from __future__ import annotations

import ast
import importlib.util
import inspect
import json
import os
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from finetune_gen.data import split as data_split
from finetune_gen.data.split import mix_counts, split_rows, stratified_split
from finetune_gen.api import generate, plan_file

CORE = [
    "SplitError",
    "split_counts",
    "split_indices",
    "stratified_indices",
    "mix_row_counts",
    "sample_indices",
    "oversample_indices",
    "normalize",
    "shingles",
    "row_text",
    "near_duplicate_indices",
]


def alpaca_rows(n: int, start: int = 0) -> list[dict]:
    """Rows with distinct wording (random words), so none is a near duplicate of another."""
    import random

    rng = random.Random(start)
    vocab = [f"{a}{b}" for a in ("ka", "lo", "mi", "nu", "pe", "ro", "su", "ti") for b in ("dan", "fer", "gol", "hix", "jum", "kop", "lun", "mab")]

    def words(k: int) -> str:
        return " ".join(rng.sample(vocab, k))

    return [
        {"instruction": f"Question {i}: {words(8)}?", "input": "", "output": f"Answer {words(8)}."}
        for i in range(start, start + n)
    ]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_spec(folder: Path, dataset: dict, task: str = "instruction", model: str = "meta-llama/Llama-3.1-8B") -> Path:
    spec = {
        "base_model": model,
        "task_type": task,
        "dataset": dataset,
        "training_config": {"method": "lora", "epochs": 1, "seed": 11, "batch_size": 4, "gradient_accumulation_steps": 1},
        "hardware": {"gpus": 1, "vram_per_gpu": "24GB", "gpu_type": "rtx_4090"},
    }
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def all_features_specs(tmp_path: Path) -> list[Path]:
    """An instruction spec and a classification spec that between them use every preparation key."""
    write_jsonl(tmp_path / "data.jsonl", alpaca_rows(60))
    write_jsonl(tmp_path / "general.jsonl", alpaca_rows(30, start=500))
    sft = tmp_path / "sft"
    sft.mkdir()
    write_spec(
        sft,
        {
            "path": "../data.jsonl",
            "format": "alpaca",
            "train_split": 0.7,
            "eval_split": 0.1,
            "test_split": 0.2,
            "remove_test_near_duplicates": True,
            "mix": [{"path": "../general.jsonl", "format": "alpaca", "weight": 0.25}],
            "augment": {
                "system_prompts": ["Be brief.", "Answer politely."],
                "instruction_templates": ["Q: {prompt}"],
                "paraphrase": True,
            },
        },
    )
    labels = ["good", "bad", "meh"]
    write_jsonl(tmp_path / "cls.jsonl", [{"text": f"review {i} words {i * 3}", "label": labels[i % 3] if i % 5 else "good"} for i in range(60)])
    cls = tmp_path / "cls"
    cls.mkdir()
    write_spec(
        cls,
        {
            "path": "../cls.jsonl",
            "format": "custom",
            "columns": {"text": "text", "label": "label"},
            "train_split": 0.7,
            "eval_split": 0.15,
            "test_split": 0.15,
            "stratify": True,
            "augment": {"oversample": True},
        },
        task="classification",
    )
    return [sft / "spec.yaml", cls / "spec.yaml"]


def functions(source: str) -> dict[str, str]:
    return {
        node.name: ast.dump(node)
        for node in ast.parse(source).body
        if isinstance(node, (ast.FunctionDef, ast.ClassDef))
    }


def test_train_py_carries_the_shared_split_core_unchanged(tmp_path):
    """One implementation: every core function in a generated train.py is data_split's own
    (compared as syntax trees, so black's formatting does not matter); edit one, this fails."""
    module = functions(inspect.getsource(data_split))
    seen = set()
    for spec in all_features_specs(tmp_path):
        generated = generate(spec, out_dir=spec.parent / "run")
        rendered = functions(generated.files["train.py"])
        for name in CORE:
            if name in rendered:
                assert rendered[name] == module[name], f"train.py's {name} differs from data_split.{name}"
                seen.add(name)
    assert seen == set(CORE)


def test_all_features_run_folder_is_lint_clean(tmp_path):
    import subprocess
    import sys

    scripts = []
    for spec in all_features_specs(tmp_path):
        out = spec.parent / "run"
        for name, text in generate(spec, out_dir=out).files.items():
            if name.endswith(".py"):
                (out / name).parent.mkdir(parents=True, exist_ok=True)
                (out / name).write_text(text)
                scripts.append(str(out / name))
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--isolated", "--no-cache", *scripts],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout


def test_augment_py_only_when_asked(tmp_path):
    sft, cls = all_features_specs(tmp_path)
    files = generate(sft, out_dir=sft.parent / "run").files
    assert "augment.py" in files and "python augment.py" in files["README.md"]
    assert 'PARAPHRASE_MODEL = "meta-llama/Llama-3.1-8B"' in files["augment.py"]
    assert "augment.py" not in generate(cls, out_dir=cls.parent / "run").files


def test_datasketch_is_required_only_when_test_near_duplicates_are_removed(tmp_path):
    sft, _ = all_features_specs(tmp_path)
    assert "datasketch" in generate(sft, out_dir=sft.parent / "run").files["requirements.txt"]
    spec = yaml.safe_load(sft.read_text())
    spec["dataset"]["remove_test_near_duplicates"] = False
    sft.write_text(yaml.safe_dump(spec))
    assert "datasketch" not in generate(sft, out_dir=sft.parent / "run").files["requirements.txt"]


def test_planner_counts_mixed_rows_in_steps_and_time(tmp_path):
    write_jsonl(tmp_path / "data.jsonl", alpaca_rows(400))
    write_jsonl(tmp_path / "general.jsonl", alpaca_rows(1000, start=1000))
    dataset = {"path": "data.jsonl", "format": "alpaca", "train_split": 0.9, "eval_split": 0.1}
    plain = generate(write_spec(tmp_path, dataset), out_dir=tmp_path / "run")
    dataset["mix"] = [{"path": "general.jsonl", "format": "alpaca", "weight": 0.2}, {"path": "general.jsonl", "format": "alpaca", "rows": 50}]
    mixed = generate(write_spec(tmp_path, dataset), out_dir=tmp_path / "run")
    expected = mix_counts(360, [(0.2, None), (None, 50)])
    assert [m.planned_rows for m in mixed.plan.dataset.mix] == expected == [102, 50]
    assert mixed.plan.dataset.train_rows == 360 + 152
    assert mixed.plan.train_sequences == 512 and plain.plan.train_sequences == 360
    mean, mixed_mean = plain.plan.dataset.avg_tokens_per_example, mixed.plan.dataset.mix[0].avg_tokens_per_example
    assert plain.resources.time.tokens_per_epoch == 360 * mean
    assert mixed.resources.time.tokens_per_epoch == 360 * mean + 152 * mixed_mean
    assert mixed.resources.time.hours > plain.resources.time.hours
    readme = mixed.files["README.md"]
    assert "Mixed in: `../general.jsonl`, a 0.2 share of the training rows (~102 rows per epoch, of 1000 available)" in readme
    assert "Mixed in: `../general.jsonl`, 50 rows" in readme
    assert "mixed in: 102 rows of ../general.jsonl per epoch" in " ".join(mixed.resources.to_dict()["assumptions"])


def make_report(tmp_path: Path, data: Path, *, valid_rows: int, tokenizer: str | None, clean: dict | None = None) -> Path:
    report = {
        "path": data.name,
        "rows": valid_rows + 5,
        "valid_rows": valid_rows,
        "lengths": {
            "tokenizer": tokenizer or "estimate (~4 characters per token; no tokenizer given)",
            "estimated": tokenizer is None,
            "mean": 212.4,
            "p99": 900,
        },
    }
    if clean:
        report["clean"] = clean
    path = tmp_path / "data.check.json"
    path.write_text(json.dumps(report))
    return path


def test_planner_uses_the_reports_row_count_and_token_lengths(tmp_path):
    data = write_jsonl(tmp_path / "data.jsonl", alpaca_rows(80))
    report = make_report(tmp_path, data, valid_rows=50_000, tokenizer="tok-dir")
    plan = plan_file(write_spec(tmp_path, {"path": "data.jsonl", "format": "alpaca", "report": report.name})).plan
    assert plan.dataset.num_examples == 50_000 and plan.dataset.avg_tokens_per_example == 212
    assert plan.dataset.report is not None
    assert any(w.startswith("dataset counted by check-data") and "50000 valid rows" in w and "measured with tok-dir" in w for w in plan.warnings)
    decisions = {d.setting: d for d in plan.decisions}
    assert "900 tokens, tokenizer tok-dir" in decisions["max_seq_length"].why
    assert plan.train_sequences == 45_000  # steps and time from the report's row count


def test_a_real_check_data_report_is_read(tmp_path):
    from click.testing import CliRunner

    from finetune_gen.cli import main

    rows = alpaca_rows(30)
    data = write_jsonl(tmp_path / "data.jsonl", rows + [rows[0], {"instruction": "x"}])
    result = CliRunner().invoke(main, ["check-data", str(data), "--format", "alpaca", "--json", "--write-clean", str(tmp_path / "clean.jsonl")])
    (tmp_path / "report.json").write_text(result.stdout)
    assert json.loads(result.stdout)["data_file"] == str(data.resolve())
    raw = plan_file(write_spec(tmp_path, {"path": "data.jsonl", "format": "alpaca", "report": "report.json", "skip_bad_rows": True})).plan
    assert raw.dataset.num_examples == 31  # the valid rows (the duplicate is still a row of this file)
    clean = plan_file(write_spec(tmp_path, {"path": "clean.jsonl", "format": "alpaca", "report": "report.json"})).plan
    cleaned = json.loads(result.stdout)["clean"]
    assert cleaned["rows_in"] == 32 and cleaned["rows_out"] < 31
    assert clean.dataset.num_examples == cleaned["rows_out"]
    note = f"{cleaned['rows_out']} rows after cleaning (32 checked, {cleaned['dropped']} dropped)"
    assert any(note in w for w in clean.warnings)


def test_planner_takes_the_cleaned_row_count_for_the_cleaned_file(tmp_path):
    data = write_jsonl(tmp_path / "clean.jsonl", alpaca_rows(70))
    report = make_report(
        tmp_path,
        tmp_path / "raw.jsonl",
        valid_rows=90,
        tokenizer=None,
        clean={"output": str(data), "rows_in": 100, "rows_out": 70, "dropped": 30},
    )
    plan = plan_file(write_spec(tmp_path, {"path": "clean.jsonl", "format": "alpaca", "report": report.name})).plan
    assert plan.dataset.num_examples == 70
    assert any("70 rows after cleaning (100 checked, 30 dropped)" in w and "estimated by check-data" in w for w in plan.warnings)


def test_a_report_of_another_or_an_older_file_is_not_used(tmp_path):
    data = write_jsonl(tmp_path / "data.jsonl", alpaca_rows(80))
    other = make_report(tmp_path, tmp_path / "other.jsonl", valid_rows=5000, tokenizer=None)
    plan = plan_file(write_spec(tmp_path, {"path": "data.jsonl", "format": "alpaca", "report": other.name})).plan
    assert plan.dataset.num_examples == 80 and plan.dataset.report is None
    assert any(w.startswith("dataset.report not used") and "other.jsonl" in w for w in plan.warnings)
    stale = make_report(tmp_path, data, valid_rows=5000, tokenizer=None)
    later = time.time() + 10
    os.utime(data, (later, later))
    plan = plan_file(write_spec(tmp_path, {"path": "data.jsonl", "format": "alpaca", "report": stale.name})).plan
    assert plan.dataset.num_examples == 80
    assert any("changed after the report was written" in w for w in plan.warnings)


def test_a_file_that_is_not_a_report_is_a_path_error(tmp_path):
    from click.testing import CliRunner

    from finetune_gen.cli import main

    write_jsonl(tmp_path / "data.jsonl", alpaca_rows(20))
    (tmp_path / "notes.json").write_text('{"hello": 1}')
    spec = write_spec(tmp_path, {"path": "data.jsonl", "format": "alpaca", "report": "notes.json"})
    result = CliRunner().invoke(main, ["plan", str(spec)])
    assert result.exit_code == 2
    assert "dataset.report: " in result.output and "is not a check-data --json report" in result.output
    assert "Traceback" not in result.output


def test_stratified_split_keeps_shares_with_uneven_classes():
    labels = ["a"] * 500 + ["b"] * 120 + ["c"] * 30
    splits = stratified_split(labels, train_split=0.7, eval_split=0.15, test_split=0.15, seed=4)
    for part in (splits.train, splits.eval, splits.test):
        shares = Counter(labels[i] for i in part)
        for label, total in Counter(labels).items():
            assert abs(shares[label] / len(part) - total / len(labels)) < 0.02
    assert splits == stratified_split(labels, train_split=0.7, eval_split=0.15, test_split=0.15, seed=4)


def test_oversampling_balances_the_classes():
    labels = ["a"] * 50 + ["b"] * 20 + ["c"] * 5
    extra = data_split.oversample_indices(labels, seed=1)
    counts = Counter(labels + [labels[i] for i in extra])
    assert counts == {"a": 50, "b": 50, "c": 50}
    assert extra == data_split.oversample_indices(labels, seed=1)


# ---------------------------------------------------------------- the generated script, on tiny models


def load_train_module(run: Path, name: str):
    module_spec = importlib.util.spec_from_file_location(name, run / "train.py")
    recipe = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(recipe)
    return recipe


def content(row, recipe) -> str:
    return json.dumps({k: v for k, v in row.items() if k != recipe.ROW and not k.startswith("__")}, sort_keys=True)


@pytest.mark.slow
def test_tiny_run_never_trains_on_its_test_rows(tmp_path, tiny_models):
    """The generated script's split equals split_rows; near duplicates of test rows are dropped;
    no training example (as encoded for the batches) is a test row; test_rows.jsonl is written
    by a real run and eval.py evaluates on it."""
    pytest.importorskip("transformers")
    import tiny
    from smoke import generate as generate_run
    from smoke import run_script
    from smoke import write_spec as tiny_spec

    rows = alpaca_rows(40)
    splits = split_rows(40, train_split=0.7, eval_split=0.1, test_split=0.2, seed=42)
    # Plant a near duplicate of a test row among the rows that train (a few words changed).
    victim = rows[splits.test[0]]
    planted = splits.train[0]
    rows[planted] = {**victim, "instruction": victim["instruction"].replace("how many", "how much")}
    data = write_jsonl(tmp_path / "data.jsonl", rows)
    spec = tiny_spec(
        tmp_path,
        tiny_models("llama"),
        data,
        dataset={"train_split": 0.7, "eval_split": 0.1, "test_split": 0.2, "remove_test_near_duplicates": True},
    )
    run = generate_run(spec, tmp_path / "run")
    recipe = load_train_module(run, "generated_train_prep")
    train, evaluation, test = recipe.load_splits()
    assert sorted(r[recipe.ROW] - 1 for r in test) == splits.test
    assert sorted(r[recipe.ROW] - 1 for r in evaluation) == splits.eval
    assert sorted(r[recipe.ROW] - 1 for r in train) == sorted(set(splits.train) - {planted})
    assert not {content(r, recipe) for r in train} & {content(r, recipe) for r in test}
    tokenizer = recipe.setup_tokenizer()
    train_set, test_set = recipe.build_datasets(tokenizer, train, test)
    assert not {tuple(e["input_ids"]) for e in train_set} & {tuple(e["input_ids"]) for e in test_set}

    out = tmp_path / "out"
    result = run_script(run, "train.py", "--max-steps", "1", "--output-dir", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Removed 1 training rows that are near duplicates of test rows" in result.stdout
    written = json.loads((out / "test_split.json").read_text())
    assert written["rows"] == [i + 1 for i in splits.test]
    lines = (out / "test_rows.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [rows[i] for i in sorted(splits.test)]
    result = run_script(run, "eval.py", "--model-dir", str(out), "--max-samples", "2", "--samples", "1", "--no-base")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "eval_metrics.json").read_text())
    assert metrics["evaluated_split"] == "test" and metrics["eval_rows"] == 2
    # A test set that no longer matches the data is refused rather than evaluated.
    (out / "test_split.json").write_text(json.dumps({**written, "rows": written["rows"][1:]}))
    result = run_script(run, "eval.py", "--model-dir", str(out), "--contamination")
    assert result.returncode != 0 and "differ from this split" in result.stderr


@pytest.mark.slow
def test_tiny_classification_split_is_stratified_and_oversampled(tmp_path, tiny_models):
    pytest.importorskip("transformers")
    import tiny
    from smoke import generate as generate_run
    from smoke import write_spec as tiny_spec

    names = ["negative", "neutral", "positive"]
    items = [{"review": f"words {i} and {i * 7}", "sentiment": names[0] if i % 4 == 0 else names[1 + i % 2]} for i in range(80)]
    data = tiny.write_rows(tmp_path / "cls.jsonl", items)
    spec = tiny_spec(
        tmp_path,
        tiny_models("llama"),
        data,
        task_type="classification",
        format="custom",
        dataset={
            "columns": {"text": "review", "label": "sentiment"},
            "train_split": 0.6,
            "eval_split": 0.2,
            "test_split": 0.2,
            "stratify": True,
            "augment": {"oversample": True},
        },
    )
    run = generate_run(spec, tmp_path / "run")
    recipe = load_train_module(run, "generated_train_cls")
    train, evaluation, test = recipe.load_splits()
    labels = [item["sentiment"] for item in items]
    expected = stratified_split(labels, train_split=0.6, eval_split=0.2, test_split=0.2, seed=42)
    assert sorted(r[recipe.ROW] - 1 for r in test) == expected.test
    assert sorted(r[recipe.ROW] - 1 for r in evaluation) == expected.eval
    for part in (evaluation, test):
        assert Counter(r["sentiment"] for r in part) == {
            label: round(labels.count(label) * 0.2) for label in names
        }
    # Oversampled: every class as often as the largest in the training rows; no test row among them.
    counts = Counter(r["sentiment"] for r in train)
    assert len(set(counts.values())) == 1 and counts["negative"] == max(Counter(labels[i] for i in expected.train).values())
    assert not {r[recipe.ROW] for r in train} & {r[recipe.ROW] for r in test}


@pytest.mark.slow
def test_tiny_chat_run_mixes_and_varies_system_prompts(tmp_path, tiny_models):
    pytest.importorskip("transformers")
    import tiny
    from smoke import generate as generate_run
    from smoke import run_script
    from smoke import write_spec as tiny_spec

    data = tiny.write_chat(tmp_path / "chat.jsonl", rows=60)
    general = tiny.write_chat(tmp_path / "general.jsonl", rows=300)
    prompts = ["You are terse.", "You are kind."]
    spec = tiny_spec(
        tmp_path,
        tiny_models("llama", template="chatml"),
        data,
        task_type="chat",
        format="chatml",
        dataset={
            "train_split": 0.8,
            "eval_split": 0.2,
            "mix": [{"path": str(general), "format": "chatml", "weight": 0.4}],
            "augment": {"system_prompts": prompts},
        },
    )
    run = generate_run(spec, tmp_path / "run")
    recipe = load_train_module(run, "generated_train_mix")
    train, evaluation, test = recipe.load_splits()
    mixed = [r for r in train if r[recipe.ROW] < 0]
    assert abs(len(mixed) / len(train) - 0.4) < 0.02 and len(train) == 48 + len(mixed)
    assert len({r[recipe.ROW] for r in mixed}) == len(mixed)  # without repeats: 300 rows available
    systems = Counter(r["messages"][0]["content"] for r in train)
    assert all(r["messages"][0]["role"] == "system" for r in train) and set(systems) == set(prompts)
    assert all(r["messages"][1]["role"] != "system" for r in train)
    assert not any(m["content"] in prompts for r in evaluation for m in r["messages"])  # eval rows untouched
    result = run_script(run, "train.py", "--max-steps", "1", "--output-dir", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Mixed in 32 rows of" in result.stdout and "System prompts varied" in result.stdout


@pytest.mark.slow
def test_augment_py_paraphrases_training_prompts_into_a_checkable_file(tmp_path, tiny_models, monkeypatch):
    pytest.importorskip("transformers")
    import sys

    from click.testing import CliRunner
    from smoke import generate as generate_run
    from smoke import run_script
    from smoke import write_spec as tiny_spec

    from finetune_gen.cli import main as cli

    data = write_jsonl(tmp_path / "data.jsonl", alpaca_rows(30))
    spec = tiny_spec(
        tmp_path,
        tiny_models("llama"),
        data,
        dataset={"train_split": 0.6, "eval_split": 0.2, "test_split": 0.2, "augment": {"paraphrase": True}},
    )
    run = generate_run(spec, tmp_path / "run")
    # The real model end to end: every training prompt accounted for, exit 0.
    result = run_script(run, "augment.py", "--limit", "3", "--max-new-tokens", "4", "--out", str(tmp_path / "real.jsonl"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "of 3 training prompts" in result.stdout
    # With a stand-in paraphraser: the file holds the training rows (never test rows), prompts rewritten.
    monkeypatch.syspath_prepend(str(run))
    monkeypatch.chdir(run)
    sys.modules.pop("train", None)
    augment = load_train_module(run, "train")  # augment.py imports it as `train`
    sys.modules["train"] = augment
    module_spec = importlib.util.spec_from_file_location("generated_augment", run / "augment.py")
    paraphraser = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(paraphraser)
    monkeypatch.setattr(paraphraser, "paraphrase", lambda m, t, prompts, b, n: [f"In other words: {p}" for p in prompts])
    monkeypatch.setattr(sys, "argv", ["augment.py", "--out", str(tmp_path / "para.jsonl")])
    paraphraser.main()
    sys.modules.pop("train", None)
    written = [json.loads(line) for line in (tmp_path / "para.jsonl").read_text().splitlines()]
    splits = split_rows(30, train_split=0.6, eval_split=0.2, test_split=0.2, seed=42)
    rows = alpaca_rows(30)
    assert written == [
        {**rows[i], "instruction": f"In other words: {rows[i]['instruction']}"} for i in splits.train
    ]
    check = CliRunner().invoke(cli, ["check-data", str(tmp_path / "para.jsonl"), "--format", "alpaca", "--json"])
    assert check.exit_code == 0 and json.loads(check.stdout)["problems"]["count"] == 0


def test_check_data_spec_reports_the_stratified_split(tmp_path):
    from click.testing import CliRunner

    from finetune_gen.cli import main

    labels = ["a"] * 30 + ["b"] * 12 + ["c"] * 8
    rows = [{"text": f"item {i} " + " ".join(r["instruction"].split()[2:]), "label": label} for i, (r, label) in enumerate(zip(alpaca_rows(50), labels))]
    write_jsonl(tmp_path / "cls.jsonl", rows)
    spec = write_spec(
        tmp_path,
        {"path": "cls.jsonl", "format": "custom", "columns": {"text": "text", "label": "label"}, "train_split": 0.6, "eval_split": 0.2, "test_split": 0.2, "stratify": True},
        task="classification",
    )
    result = CliRunner().invoke(main, ["check-data", str(spec), "--json"])
    splits = json.loads(result.stdout)["splits"]
    expected = stratified_split(labels, train_split=0.6, eval_split=0.2, test_split=0.2, seed=11)
    assert splits["stratified"] and splits["test_rows"] == [i + 1 for i in expected.test]
    assert Counter(labels[i - 1] for i in splits["test_rows"]) == {"a": 6, "b": 2, "c": 2}
