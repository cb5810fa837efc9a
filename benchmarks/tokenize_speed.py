"""Tokenization speed of the generated train.py against the script it replaced, side by side:
interleaved repetitions, medians, examples/s and ratios (absolute times on a shared machine
are noise; the ratio is the figure).

    python benchmarks/tokenize_speed.py                 # 100,000 conversations, 3 repetitions
    python benchmarks/tokenize_speed.py --quick         # 2,000 conversations, CI size
    python benchmarks/tokenize_speed.py --json          # figures as one JSON object

Data: seeded synthetic multi-turn conversations (a system message in half, 2-5 exchanges,
replies of 5-60 words) on a tiny offline Qwen2.5-style tokenizer and chat template
(tests/tiny.py, tests/chat_templates.py). Cases:

- baseline: the label builder of train.py before labels came from one rendering (commit
  e3d13ef, templates/train/task_sft.py.jinja: render_chat + tokenize_segments), copied below
  as it was: per assistant turn the template renders the conversation twice, and every
  segment is tokenized on its own, row by row in one process.
- builder: the generated script's encode_batch (one rendering, one batched tokenizer call
  with offsets per 256 rows), in one process: the label code alone.
- datasets.map: the generated script's encode_rows on the same rows, as training runs it
  (batched, num_proc from the CPU count), with an empty cache.
- cached: encode_rows again on the same rows: what a second run, or the other ranks of a
  distributed launch, pay (they read rank 0's cache).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

WORDS = [
    "the",
    "a",
    "model",
    "learns",
    "data",
    "train",
    "token",
    "loss",
    "batch",
    "layer",
    "weight",
    "answer",
    "question",
    "about",
    "python",
    "code",
    "function",
    "value",
    "list",
    "table",
    "file",
    "row",
    "column",
    "result",
    "test",
    "error",
    "fix",
    "run",
    "because",
    "when",
    "then",
    "with",
    "from",
    "into",
    "over",
    "under",
    "again",
    "more",
    "less",
    "first",
    "last",
    "every",
    "some",
]


def conversations(count: int, seed: int = 0) -> list[list[dict]]:
    rng = random.Random(seed)
    items = []
    for i in range(count):
        messages = [{"role": "system", "content": "You are a careful assistant."}] if i % 2 else []
        for _ in range(rng.randint(2, 5)):
            messages.append(
                {
                    "role": "user",
                    "content": " ".join(rng.choices(WORDS, k=rng.randint(4, 30))) + "?",
                }
            )
            messages.append(
                {
                    "role": "assistant",
                    "content": " ".join(rng.choices(WORDS, k=rng.randint(5, 60))) + ".",
                }
            )
        items.append(messages)
    return items


# ---- the baseline: train.py's label builder at commit e3d13ef, as it was (ChatML data path)


def baseline_render_chat(tokenizer, messages, index):
    segments, done = [], ""
    for turn, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = tokenizer.apply_chat_template(
            messages[:turn], tokenize=False, add_generation_prompt=True
        )
        full = tokenizer.apply_chat_template(messages[: turn + 1], tokenize=False)
        if not prompt.startswith(done) or not full.startswith(prompt):
            raise ValueError(f"row {index}: the chat template renders earlier turns differently")
        segments += [(prompt[len(done) :], False), (full[len(prompt) :], True)]
        done = full
    rest = tokenizer.apply_chat_template(messages, tokenize=False)[len(done) :]
    segments.append((rest, False))
    return [segment for segment in segments if segment[0]]


def baseline_tokenize_segments(tokenizer, segments, max_length):
    input_ids, labels = [], []
    for text, learned in segments:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        input_ids += ids
        labels += ids if learned else [-100] * len(ids)
    return {"input_ids": input_ids[:max_length], "labels": labels[:max_length]}


def baseline(recipe, tokenizer, rows):
    examples = []
    for index, row in enumerate(rows, 1):
        messages = recipe.to_messages(row, index)
        segments = baseline_render_chat(tokenizer, messages, index)
        examples.append(baseline_tokenize_segments(tokenizer, segments, recipe.MAX_SEQ_LENGTH))
    return examples


# ---- the generated script


def generated_recipe(folder: Path, count: int):
    """A run folder for a chat spec on the tiny model; its train.py imported as a module."""
    import tiny
    import yaml

    from finetune_gen.cli import main as cli

    model = tiny.build_model(folder / "model", arch="llama", family="qwen2.5")
    data = folder / "chat.jsonl"
    data.write_text("".join(json.dumps({"messages": m}) + "\n" for m in conversations(count)))
    spec = {
        "base_model": str(model),
        "task_type": "chat",
        "dataset": {"path": str(data), "format": "chatml", "train_split": 1.0, "eval_split": 0.0},
        "training_config": {"method": "lora", "epochs": 1, "batch_size": 4, "max_seq_length": 512},
        "hardware": {"gpus": 1, "vram_per_gpu": "24GB", "gpu_type": "rtx_4090"},
    }
    (folder / "spec.yaml").write_text(yaml.safe_dump(spec))
    with contextlib.redirect_stdout(sys.stderr):  # stdout is for the figures
        cli(
            ["generate", str(folder / "spec.yaml"), "-o", str(folder / "run")],
            standalone_mode=False,
        )
    spec = importlib.util.spec_from_file_location("generated_train", folder / "run" / "train.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    return recipe, data


def builder(recipe, tokenizer, batch):
    out = {"input_ids": [], "labels": []}
    for start in range(0, len(batch[recipe.ROW]), 256):
        part = {key: values[start : start + 256] for key, values in batch.items()}
        encoded = recipe.encode_batch(part, tokenizer)
        out["input_ids"] += encoded["input_ids"]
        out["labels"] += encoded["labels"]
    return out


def timed(function, *args):
    start = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--conversations", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="2,000 conversations, 2 repetitions")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.conversations, args.repeats = 2_000, 2
    import datasets
    from datasets import Dataset

    datasets.disable_progress_bars()
    scratch = Path(tempfile.mkdtemp(prefix="tokenize-speed-"))
    with contextlib.redirect_stdout(sys.stderr):
        recipe, data = generated_recipe(scratch, args.conversations)
        tokenizer = recipe.setup_tokenizer()
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    batch = {
        "messages": [row["messages"] for row in rows],
        recipe.ROW: list(range(1, len(rows) + 1)),
    }
    table = Dataset.from_dict(batch)
    recipe.template_facts(tokenizer)  # probed once per process in both scripts' lifetime

    # The same token ids; the new builder learns a subset of the old one's tokens (the old one
    # also learned the newline the template writes after <|im_end|>).
    sample = 200
    old = baseline(recipe, tokenizer, rows[:sample])
    new = builder(recipe, tokenizer, {k: v[:sample] for k, v in batch.items()})
    assert [e["input_ids"] for e in old] == new["input_ids"], "the builders tokenize differently"
    for example, labels in zip(old, new["labels"]):
        assert all(label in (-100, was) for label, was in zip(labels, example["labels"]))

    def mapped():
        datasets.config.HF_DATASETS_CACHE = tempfile.mkdtemp(dir=scratch)  # an empty cache
        return recipe.encode_rows(tokenizer, table, "train")

    times: dict[str, list[float]] = {
        "baseline": [],
        "builder": [],
        "datasets.map": [],
        "cached": [],
    }
    for _ in range(args.repeats):  # interleaved
        times["baseline"].append(timed(baseline, recipe, tokenizer, rows)[0])
        times["builder"].append(timed(builder, recipe, tokenizer, batch)[0])
        seconds, encoded = timed(mapped)
        times["datasets.map"].append(seconds)
        times["cached"].append(timed(recipe.encode_rows, tokenizer, table, "train")[0])
        assert len(encoded) == len(rows)
    medians = {name: statistics.median(values) for name, values in times.items()}
    figures = {
        "conversations": args.conversations,
        "assistant_turns": sum(m["role"] == "assistant" for row in rows for m in row["messages"]),
        "repeats": args.repeats,
        "num_proc": recipe.tokenizing_processes(table),
        "cpu_count": os.cpu_count(),
        "median_seconds": {k: round(v, 3) for k, v in medians.items()},
        "examples_per_second": {k: round(args.conversations / v, 1) for k, v in medians.items()},
        "speedup_vs_baseline": {k: round(medians["baseline"] / v, 2) for k, v in medians.items()},
    }
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(
        f"{args.conversations:,} conversations ({figures['assistant_turns']:,} assistant turns), "
        f"{args.repeats} interleaved repetitions, num_proc {figures['num_proc']} of {os.cpu_count()} CPUs"
    )
    print(f"{'case':<14} {'median s':>9} {'examples/s':>11} {'x baseline':>11}")
    for name in times:
        print(
            f"{name:<14} {medians[name]:>9.2f} {figures['examples_per_second'][name]:>11,.0f} "
            f"{figures['speedup_vs_baseline'][name]:>11.2f}"
        )


if __name__ == "__main__":
    main()
