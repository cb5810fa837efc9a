"""Splits are deterministic by seed (optionally stratified); mixing matches its weights."""

from __future__ import annotations

import importlib.util
from collections import Counter

import pytest

from finetune_gen.data.split import (
    mix_counts,
    near_duplicates_of,
    sample_mix,
    split_rows,
    stratified_split,
)
from finetune_gen.errors import SpecError


def test_same_seed_same_split_and_splits_are_disjoint():
    first = split_rows(1000, train_split=0.8, eval_split=0.1, test_split=0.1, seed=7)
    again = split_rows(1000, train_split=0.8, eval_split=0.1, test_split=0.1, seed=7)
    other = split_rows(1000, train_split=0.8, eval_split=0.1, test_split=0.1, seed=8)
    assert first == again and first != other
    assert (len(first.train), len(first.eval), len(first.test)) == (800, 100, 100)
    assert not set(first.train) & set(first.test)
    assert not set(first.eval) & set(first.test) and not set(first.train) & set(first.eval)


def test_a_test_split_that_does_not_fit_is_refused():
    with pytest.raises(SpecError, match="too few"):
        split_rows(3, train_split=0.9, eval_split=0.1, test_split=0.1)


def test_stratified_split_keeps_class_shares():
    labels = ["a"] * 600 + ["b"] * 300 + ["c"] * 100
    splits = stratified_split(labels, train_split=0.8, eval_split=0.1, test_split=0.1, seed=3)
    assert splits == stratified_split(
        labels, train_split=0.8, eval_split=0.1, test_split=0.1, seed=3
    )
    for part, share in ((splits.train, 0.8), (splits.eval, 0.1), (splits.test, 0.1)):
        counts = Counter(labels[i] for i in part)
        assert counts == {"a": round(600 * share), "b": round(300 * share), "c": round(100 * share)}
    assert len(set(splits.train) | set(splits.eval) | set(splits.test)) == 1000


def test_mixing_weights_are_met_within_tolerance():
    counts = mix_counts(9000, [(0.2, None), (0.05, None), (None, 500)])
    total = 9000 + sum(counts)
    assert counts[2] == 500
    assert abs(counts[0] / total - 0.2) < 0.005 and abs(counts[1] / total - 0.05) < 0.005
    # Sampling draws exactly that many rows, deterministic by seed, without repeats while possible.
    rows = sample_mix(50_000, counts[0], seed=1)
    assert rows == sample_mix(50_000, counts[0], seed=1) != sample_mix(50_000, counts[0], seed=2)
    assert len(rows) == len(set(rows)) == counts[0]
    oversampled = sample_mix(100, 250, seed=1)
    assert len(oversampled) == 250 and set(oversampled) == set(range(100))
    with pytest.raises(SpecError):
        mix_counts(10, [(0.6, None), (0.5, None)])


def test_mixed_rows_in_a_sampled_batch_follow_the_weights():
    """Draw the mixture, shuffle, and look at the sources of the first 2000 rows."""
    import random

    counts = mix_counts(8000, [(0.3, None)])
    pool = ["main"] * 8000 + ["general"] * len(sample_mix(20_000, counts[0], seed=0))
    random.Random(0).shuffle(pool)
    share = pool[:2000].count("general") / 2000
    assert abs(share - 0.3) < 0.04


def test_train_rows_near_duplicate_to_test_rows_are_found():
    test = ["How do I reset my password on the company portal if I forgot my old one"]
    train = [
        "How can I reset my password on the company website if I forgot my old one",
        "What is the capital of Australia and why is it not Sydney",
    ]
    assert near_duplicates_of(test, train, threshold=0.4) == [0]


@pytest.mark.slow
def test_generated_train_script_never_trains_on_the_test_rows(tmp_path, tiny_models):
    """split_rows reproduces the generated train.py's split: its test rows are in neither split it uses."""
    pytest.importorskip("transformers")
    import tiny
    from smoke import generate, write_spec

    data = tiny.write_alpaca(tmp_path / "data.jsonl", rows=60)
    spec = write_spec(
        tmp_path,
        tiny_models("llama"),
        data,
        dataset={"train_split": 0.7, "eval_split": 0.2, "test_split": 0.1},
    )
    run = generate(spec, tmp_path / "run")
    module_spec = importlib.util.spec_from_file_location("generated_train_split", run / "train.py")
    recipe = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(recipe)
    train_rows, eval_rows = recipe.load_rows()
    lines = data.read_text().splitlines()
    import json

    rows = [json.loads(line) for line in lines if line.strip()]
    splits = split_rows(len(rows), train_split=0.7, eval_split=0.2, test_split=0.1, seed=42)
    # train.py keeps each row's 1-based file row number (recipe.ROW) through the shuffle.
    assert sorted(r[recipe.ROW] - 1 for r in train_rows) == sorted(splits.train)
    assert sorted(r[recipe.ROW] - 1 for r in eval_rows) == sorted(splits.eval)
    key = lambda row: json.dumps({k: v for k, v in row.items() if k != recipe.ROW}, sort_keys=True)
    assert Counter(key(r) for r in train_rows) == Counter(key(rows[i]) for i in splits.train)
    assert len(splits.test) == 6
    assert not set(splits.test) & (set(splits.train) | set(splits.eval))


def test_preparation_fields_are_planned_not_warned_about(tmp_path):
    """train.py applies dataset.mix / test_split now: the plan counts the mixed rows instead of
    warning that they are not applied."""
    from finetune_gen.api import plan_file

    (tmp_path / "train.jsonl").write_text(
        '{"instruction": "Name a colour", "input": "", "output": "Blue is one."}\n' * 20
    )
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "base_model: meta-llama/Llama-3.1-8B\ntask_type: instruction\n"
        "dataset: {path: train.jsonl, format: alpaca, train_split: 0.8, test_split: 0.1,\n"
        "  mix: [{path: org/general, format: alpaca, weight: 0.2}]}\n"
        "training_config: {method: qlora, epochs: 1}\nhardware: {gpus: 1, vram_per_gpu: 24GB}\n"
    )
    plan = plan_file(spec).plan
    assert not any("not applied by train.py" in w for w in plan.warnings)
    assert plan.dataset.mix[0].planned_rows == mix_counts(16, [(0.2, None)])[0] == 4
    assert plan.dataset.train_rows == 20


def test_check_data_spec_reports_the_split_and_the_test_rows(tmp_path):
    import json

    from click.testing import CliRunner

    from finetune_gen.cli import main

    with (tmp_path / "train.jsonl").open("w") as handle:
        for i in range(50):
            handle.write(
                json.dumps(
                    {
                        "instruction": f"Question number {i} about topic {i * i}",
                        "input": "",
                        "output": f"Answer {i} says {i * 7} and {i * 13} exactly",
                    }
                )
                + "\n"
            )
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "base_model: meta-llama/Llama-3.1-8B\ntask_type: instruction\n"
        "dataset: {path: train.jsonl, format: alpaca, train_split: 0.7, eval_split: 0.2, test_split: 0.1}\n"
        "training_config: {seed: 5}\nhardware: {gpus: 1, vram_per_gpu: 24GB}\n"
    )
    result = CliRunner().invoke(main, ["check-data", str(spec), "--json"])
    splits = json.loads(result.stdout)["splits"]
    expected = split_rows(50, train_split=0.7, eval_split=0.2, test_split=0.1, seed=5)
    assert splits["test_rows"] == [i + 1 for i in expected.test] and len(splits["test_rows"]) == 5
    assert (splits["train"], splits["eval"], splits["test"]) == (35, 10, 5)
