"""Benchmark: useful tokens per second of the generated train.py against a naive baseline.

    python benchmarks/train_efficiency.py --quick         # a small set, one repeat
    python benchmarks/train_efficiency.py                 # the README figures
    python benchmarks/train_efficiency.py --count-only    # token counts of one epoch, no training (CI)
    python benchmarks/train_efficiency.py --json

A tiny Llama-style model (hidden 256, 4 layers, random weights, a byte-level BPE trained
offline) is fine-tuned on the CPU on an alpaca-format set whose response lengths follow a skewed
(log-normal) distribution, seeded. Both arms train the same examples, one epoch, from the same
initial weights, with the generated script's own functions (generate, then its train path:
choose_collation, build_datasets, speed_settings, training_arguments, setup_model, build_trainer):

- ``generated``: what train.py picks at start-up on this machine (no varlen kernel on the CPU, so
  length-grouped padded batches);
- ``naive``: the same Trainer with random batches padded to max_seq_length.

Arms run interleaved, repeated; figures are medians. Useful tokens are the examples' own tokens
(padding excluded); the useful-token fraction is useful / processed (batch rows x width).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def write_skewed_alpaca(path: Path, rows: int, seed: int = 0) -> None:
    """Alpaca rows: short prompts, responses of log-normal length (median 16 words, long tail)."""
    from tiny import WORDS

    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as handle:
        for number in range(rows):
            prompt = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 16)))
            words = min(200, max(2, round(rng.lognormvariate(math.log(16), 0.9))))
            response = " ".join(rng.choice(WORDS) for _ in range(words))
            row = {"instruction": f"{prompt} {number}?", "input": "", "output": response}
            handle.write(json.dumps(row) + "\n")


def build_model(folder: Path) -> Path:
    """A Llama-style model big enough that compute, not overhead, dominates a step on the CPU."""
    import tiny
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    tokenizer = tiny.build_tokenizer(folder)
    config = LlamaConfig(
        vocab_size=((len(tokenizer) + 31) // 32) * 32,
        hidden_size=256,
        intermediate_size=688,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=1024,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    return folder


def generate_run(work: Path, model: Path, data: Path, max_seq_length: int, batch: int) -> Path:
    spec = {
        "base_model": str(model),
        "task_type": "instruction",
        "dataset": {"path": str(data), "format": "alpaca", "train_split": 0.95, "eval_split": 0.05},
        "training_config": {
            "method": "full",
            "epochs": 1,
            "batch_size": batch,
            "gradient_accumulation_steps": 1,
            "learning_rate": 1e-4,
            "max_seq_length": max_seq_length,
            "gradient_checkpointing": False,
            "optimizer": "adamw_torch",
        },
        "hardware": {"gpus": 1, "vram_per_gpu": "24GB", "gpu_type": "rtx_4090"},
    }
    (work / "spec.json").write_text(json.dumps(spec))
    run = work / "run"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "finetune_gen",
            "generate",
            str(work / "spec.json"),
            "-o",
            str(run),
            "--force",
        ],
        check=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
    )
    return run


def load_recipe(run: Path):
    spec = importlib.util.spec_from_file_location("benchmarked_train", run / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class CountingCollator:
    """Wraps a collator; counts the tokens each batch holds (processed) and its real ones (useful)."""

    def __init__(self, collate):
        self.collate = collate
        self.processed = self.useful = 0

    def __call__(self, examples):
        batch = self.collate(examples)
        self.processed += batch["input_ids"].numel()
        mask = batch.get("attention_mask")  # padding-free batches have none: every token is real
        self.useful += int(mask.sum()) if mask is not None else batch["input_ids"].numel()
        return batch


def run_arm(recipe, arm: str, datasets, work: Path, train: bool = True) -> dict:
    """One epoch of one arm (or, train=False, only its batches); returns token counts and time."""
    import torch

    tokenizer, train_set = datasets
    collation = recipe.choose_collation("auto" if arm == "generated" else "padded")
    overrides = {
        "output_dir": str(work / f"out-{arm}"),
        "report_to": [],
        "eval_strategy": "no",
        "save_strategy": "no",
        "logging_steps": 10_000,
        "disable_tqdm": True,
    }
    overrides.update(recipe.speed_settings("fp32", collation, False))
    args = recipe.training_arguments("fp32", False, **overrides)
    torch.manual_seed(0)
    model = recipe.setup_model(tokenizer, "fp32")
    trainer = recipe.build_trainer(model, tokenizer, train_set, [], args)
    collate = trainer.data_collator
    if arm == "naive":  # every row padded to max_seq_length (all examples fit in it)
        collate = recipe.DataCollatorForLanguageModeling(
            pad_token_id=tokenizer.pad_token_id, pad_to_multiple_of=recipe.MAX_SEQ_LENGTH
        )
    counter = CountingCollator(collate)
    trainer.data_collator = counter
    start = time.perf_counter()
    if train:
        trainer.train()
    else:
        for _ in trainer.get_train_dataloader():
            pass
    seconds = time.perf_counter() - start
    return {
        "arm": arm,
        "collation": collation,
        "seconds": seconds,
        "processed_tokens": counter.processed,
        "useful_tokens": counter.useful,
        "useful_fraction": counter.useful / counter.processed,
        "useful_tokens_per_s": counter.useful / seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a small set, one repeat (CI)")
    parser.add_argument(
        "--rows", type=int, default=None, help="examples (default 1200; --quick 160)"
    )
    parser.add_argument(
        "--repeats", type=int, default=None, help="runs per arm (default 3; --quick 1)"
    )
    parser.add_argument(
        "--count-only", action="store_true", help="count one epoch's tokens, train nothing"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (default 1: steadier on a shared CPU)"
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()
    rows = args.rows or (64 if args.quick else 800)
    repeats = args.repeats or (1 if args.quick or args.count_only else 3)
    max_seq_length, batch = 384, 4
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ["CUDA_VISIBLE_DEVICES"] = ""  # the CPU figures; a GPU would pick padding-free

    import contextlib
    import io

    import torch

    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        data = work / "data.jsonl"
        write_skewed_alpaca(data, rows)
        run = generate_run(work, build_model(work / "model"), data, max_seq_length, batch)
        os.chdir(run)
        recipe = load_recipe(run)
        with contextlib.redirect_stdout(io.StringIO()):
            tokenizer = recipe.setup_tokenizer()
            train_rows, _ = recipe.load_rows()
            train_set, _ = recipe.build_datasets(tokenizer, train_rows, train_rows.select([]))
        results: dict[str, list[dict]] = {"generated": [], "naive": []}
        for repeat in range(repeats):
            order = ["generated", "naive"] if repeat % 2 == 0 else ["naive", "generated"]
            for arm in order:
                with (
                    contextlib.redirect_stdout(io.StringIO()),
                    contextlib.redirect_stderr(io.StringIO()),
                ):
                    results[arm].append(
                        run_arm(recipe, arm, (tokenizer, train_set), work, not args.count_only)
                    )
                last = results[arm][-1]
                print(
                    f"  {arm}: {last['seconds']:.1f} s, {last['useful_tokens_per_s']:,.0f} useful tokens/s",
                    file=sys.stderr,
                )
    summary = {
        "rows": rows,
        "train_examples": len(train_set),
        "repeats": repeats,
        "max_seq_length": max_seq_length,
        "micro_batch": batch,
        "arms": {},
    }
    for arm, runs in results.items():
        summary["arms"][arm] = {
            "collation": runs[0]["collation"],
            "processed_tokens": runs[0]["processed_tokens"],
            "useful_tokens": runs[0]["useful_tokens"],
            "useful_fraction": round(runs[0]["useful_fraction"], 4),
            "median_seconds": round(statistics.median(r["seconds"] for r in runs), 3),
            "median_useful_tokens_per_s": round(
                statistics.median(r["useful_tokens_per_s"] for r in runs), 1
            ),
        }
    arms = summary["arms"]
    summary["speedup"] = round(
        arms["generated"]["median_useful_tokens_per_s"]
        / arms["naive"]["median_useful_tokens_per_s"],
        2,
    )
    if args.json:
        print(json.dumps(summary))  # one line, last: libraries may print to stdout before it
        return
    print(
        f"{summary['train_examples']} examples, one epoch, micro-batch {batch}, max_seq_length {max_seq_length}, "
        f"{repeats} interleaved repeat(s), medians"
    )
    print(
        f"{'arm':<10} {'collation':<16} {'processed':>10} {'useful':>9} {'fraction':>8} {'useful tok/s':>12}"
    )
    for arm, figures in arms.items():
        print(
            f"{arm:<10} {figures['collation']:<16} {figures['processed_tokens']:>10,} {figures['useful_tokens']:>9,} "
            f"{figures['useful_fraction']:>8.3f} {figures['median_useful_tokens_per_s']:>12,.0f}"
        )
    print(f"generated / naive useful tokens/s: {summary['speedup']:.2f}x")


if __name__ == "__main__":
    main()
