"""CUDA-only checks of the generated scripts: QLoRA on a GPU, and measured vs estimated memory.

What the CPU smoke tests cannot show: QLoRA loading NF4 weights with double quantization and
bf16 compute on a CUDA device and training with the paged 8-bit AdamW the planner picks; and the
peak GPU memory and speed that `probe.py` measures, against the estimate in resources.json,
for a catalog-sized model (Qwen2.5-0.5B's config with random weights, so no download).

One command, from the repository root, on a machine with an NVIDIA GPU (written for an H200):

    python3 benchmarks/gpu_check.py

On a machine without a package index, carry wheels for what its Python lacks (the script names
them: typically datasets, bitsandbytes, pydantic and black). It installs what is missing with pip
when an index is reachable (--no-install: never), builds
the model and a toy dataset under --work-dir, and for each method (qlora, lora, full) generates a
run folder with `finetune-gen generate`, trains 10 steps, runs `probe.py` at the planned
micro-batch and sequence length, and (QLoRA) `eval.py`. It prints a table and writes
benchmarks/results/gpu_check-<UTC time>.json and .md. It does not run in CI.

`--tiny` uses a tiny model and `--allow-cpu` runs without CUDA: only to test this script.

The estimator's calibration (several models, methods, lengths, Liger on and off, within 10
minutes, recorded for tests/test_calibration.py) is benchmarks/gpu_calibration.py; carry the
wheels for either with benchmarks/carry_wheels.sh.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

# import name -> pip requirement; the generated scripts' needs plus the generator's own.
REQUIREMENTS = {
    "torch": "torch",
    "transformers": "transformers>=5.0,<6",
    "peft": "peft>=0.17",
    "datasets": "datasets>=3.0",
    "accelerate": "accelerate>=1.0",
    "bitsandbytes": "bitsandbytes>=0.45",
    "jinja2": "jinja2>=3.1",
    "pydantic": "pydantic>=2.6",
    "click": "click>=8.1",
    "black": "black==26.10.1",
    "rich": "rich>=13",
    "tokenizers": "tokenizers",
}
METHODS = ("qlora", "lora", "full")
CATALOG_MODEL = "Qwen/Qwen2.5-0.5B"


def log(message: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {message}", flush=True)


def ensure_packages(install: bool) -> dict[str, str]:
    missing = [name for name in REQUIREMENTS if importlib.util.find_spec(name) is None]
    if missing and install:
        log(f"installing {', '.join(missing)} with pip")
        command = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            *(REQUIREMENTS[m] for m in missing),
        ]
        if subprocess.run(command, check=False).returncode != 0:
            log("pip could not install them (no index reachable?)")
        importlib.invalidate_caches()
        missing = [name for name in REQUIREMENTS if importlib.util.find_spec(name) is None]
    if missing:
        raise SystemExit(
            f"missing Python packages: {', '.join(missing)}; install them "
            f"({' '.join(REQUIREMENTS[m] for m in missing)}) or carry wheels, then run again"
        )
    versions = {}
    for name in ("torch", "transformers", "peft", "datasets", "accelerate", "bitsandbytes"):
        versions[name] = getattr(importlib.import_module(name), "__version__", "?")
    return versions


def build_model(folder: Path, tiny_model: bool) -> Path:
    """A tokenizer (tests/tiny.py's, with a ChatML template) and a random-weight model."""
    import tiny
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    if (folder / "config.json").exists():
        return folder
    if tiny_model:
        return tiny.build_model(folder, arch="qwen2", template="chatml")
    from finetune_gen.knowledge.catalog import resolve_model

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = tiny.build_tokenizer(folder, template="chatml")
    config = dict(resolve_model(CATALOG_MODEL).config)
    config.update(bos_token_id=None, eos_token_id=tokenizer.eos_token_id)
    model_config = AutoConfig.for_model(**config)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(model_config, dtype=torch.bfloat16)
    model.save_pretrained(folder)
    log(
        f"built {CATALOG_MODEL}'s architecture with random weights: {model.num_parameters():,} parameters"
    )
    return folder


def write_data(path: Path, rows: int, words: int) -> Path:
    import random

    import tiny

    rng = random.Random(0)
    with path.open("w") as handle:
        for i in range(rows):
            text = " ".join(rng.choice(tiny.WORDS) for _ in range(words))
            item = {
                "instruction": f"Repeat the colour of item {i}: {text}",
                "input": "",
                "output": text,
            }
            handle.write(json.dumps(item) + "\n")
    return path


def generate(work: Path, model: Path, data: Path, method: str, seq_len: int) -> Path:
    spec = {
        "base_model": str(model),
        "task_type": "instruction",
        "dataset": {"path": str(data), "format": "alpaca", "train_split": 0.9, "eval_split": 0.1},
        "training_config": {"method": method, "max_seq_length": seq_len, "epochs": 1},
        "hardware": {"gpus": 1, "gpu_type": "h200"},
    }
    folder = work / method
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    (folder / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    command = [sys.executable, "-m", "finetune_gen", "generate", "spec.yaml", "-o", "run"]
    result = subprocess.run(
        command, check=False, cwd=folder, capture_output=True, text=True, env=script_env()
    )
    if result.returncode != 0:
        raise SystemExit(f"generate failed for {method}:\n{result.stdout}\n{result.stderr}")
    return folder / "run"


def script_env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
    }


def run(folder: Path, *args: str, timeout: int = 900) -> tuple[int, float, str]:
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, *args],
        check=False,
        cwd=folder,
        capture_output=True,
        text=True,
        env=script_env(),
        timeout=timeout,
    )
    output = result.stdout + result.stderr
    (folder / f"{Path(args[0]).stem}.log").write_text(output)
    return result.returncode, round(time.perf_counter() - start, 1), output


def inspect_qlora(run_folder: Path) -> dict:
    """Load the generated train.py as a module and look at the model its setup_model builds."""
    import torch

    spec = importlib.util.spec_from_file_location("gpu_check_train", run_folder / "train.py")
    recipe = importlib.util.module_from_spec(spec)
    cwd = os.getcwd()
    os.chdir(run_folder)
    try:
        spec.loader.exec_module(recipe)
        precision = recipe.setup_precision()
        tokenizer = recipe.setup_tokenizer()
        model = recipe.setup_model(tokenizer, precision)
    finally:
        os.chdir(cwd)
    import bitsandbytes as bnb

    layer = next(
        m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)
    )  # under the LoRA wrapper
    found = {
        "precision": precision,
        "optimizer": recipe.TRAINING_ARGS["optim"],
        "quant_type": layer.weight.quant_type,
        "double_quant": bool(getattr(layer.weight.quant_state, "nested", False)),
        "compute_dtype": str(layer.compute_dtype),
        "weight_device": str(layer.weight.device),
        "gpu_memory_after_load_gb": (
            round(torch.cuda.memory_allocated() / 1e9, 3) if torch.cuda.is_available() else None
        ),
    }
    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return found


def losses(output_dir: Path) -> list[float]:
    state = json.loads((output_dir / "trainer_state.json").read_text())
    return [round(entry["loss"], 4) for entry in state["log_history"] if "loss" in entry]


def check_method(work: Path, model: Path, data: Path, method: str, seq_len: int) -> dict:
    log(f"{method}: generating")
    run_folder = generate(work, model, data, method, seq_len)
    from finetune_gen.api import plan_file

    plan = plan_file(run_folder.parent / "spec.yaml", out_dir=run_folder).plan
    result: dict = {"method": method, "run_folder": str(run_folder)}
    result["plan"] = {
        key: getattr(plan, key)
        for key in (
            "micro_batch_size",
            "gradient_checkpointing",
            "optimizer",
            "precision",
            "max_seq_length",
        )
    }
    if method == "qlora":
        result["qlora"] = inspect_qlora(run_folder)
        log(f"qlora setup: {result['qlora']}")
    log(f"{method}: train.py --max-steps 10")
    code, seconds, output = run(run_folder, "train.py", "--max-steps", "10", "--output-dir", "out")
    result["train"] = {"exit": code, "seconds": seconds}
    if code != 0:
        result["train"]["tail"] = output[-3000:]
        return result
    result["train"]["losses"] = losses(run_folder / "out")
    log(f"{method}: probe.py --steps 5 (planned micro-batch, every sequence at the maximum length)")
    code, seconds, output = run(run_folder, "probe.py", "--steps", "5")
    result["probe"] = {"exit": code, "seconds": seconds}
    if code == 0:
        result["probe"].update(json.loads((run_folder / "probe_results.json").read_text()))
        measured = result["probe"].get("peak_allocated_gb")
        if measured:
            result["probe"]["measured_over_estimate"] = round(
                measured / result["probe"]["estimated_peak_gb"], 3
            )
    else:
        result["probe"]["tail"] = output[-3000:]
    if method == "qlora":
        log("qlora: eval.py --max-samples 4")
        code, seconds, output = run(
            run_folder, "eval.py", "--model-dir", "out", "--max-samples", "4"
        )
        result["eval"] = {"exit": code, "seconds": seconds}
        if code == 0:
            result["eval"].update(
                json.loads((run_folder / "out" / "eval_results.json").read_text())
            )
            result["eval"].pop("contamination", None)
        else:
            result["eval"]["tail"] = output[-3000:]
    return result


def report(results: dict) -> str:
    lines = [
        f"# GPU check, {results['time']}",
        "",
        f"Device: {results['device']}; {', '.join(f'{k} {v}' for k, v in results['versions'].items())}.",
        f"Model: {results['model']}; sequence length {results['seq_len']}.",
        "",
        "| method | train | first/last loss | micro-batch | optimizer | peak GB measured | estimated | ratio | tokens/s | est. tokens/s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for item in results["methods"]:
        train, probe, plan = item.get("train", {}), item.get("probe", {}), item.get("plan", {})
        trained = train.get("losses") or []
        loss = f"{trained[0]} / {trained[-1]}" if trained else "-"
        lines.append(
            f"| {item['method']} | exit {train.get('exit')} ({train.get('seconds')} s) | {loss} | "
            f"{plan.get('micro_batch_size')} | {plan.get('optimizer')} | {probe.get('peak_allocated_gb', '-')} | "
            f"{probe.get('estimated_peak_gb', '-')} | {probe.get('measured_over_estimate', '-')} | "
            f"{probe.get('tokens_per_second_per_gpu', '-')} | {probe.get('estimated_tokens_per_second', '-')} |"
        )
    for item in results["methods"]:
        if "qlora" in item:
            lines += [
                "",
                f"QLoRA as loaded by the generated setup_model(): {json.dumps(item['qlora'])}",
            ]
        if "eval" in item:
            lines += [f"eval.py on the QLoRA adapter: {json.dumps(item['eval'])}"]
        for step in ("train", "probe", "eval"):
            if "tail" in item.get(step, {}):
                lines += ["", f"{item['method']} {step} failed:", "```", item[step]["tail"], "```"]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work-dir", default="/tmp/finetune-gen-gpu-check")
    parser.add_argument("--results-dir", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument(
        "--methods", default=",".join(METHODS), help="comma-separated: qlora,lora,full"
    )
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument(
        "--no-install", action="store_true", help="never pip install missing packages"
    )
    parser.add_argument("--tiny", action="store_true", help="a tiny model (tests this script)")
    parser.add_argument(
        "--allow-cpu", action="store_true", help="run without CUDA (tests this script)"
    )
    args = parser.parse_args()

    versions = ensure_packages(install=not args.no_install)
    import torch

    if not torch.cuda.is_available() and not args.allow_cpu:
        raise SystemExit(
            "no CUDA device: this script checks what only a GPU shows (--allow-cpu to test it)"
        )
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    log(f"device {device}; {versions}")

    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    model = build_model(work / ("tiny-model" if args.tiny else "qwen2.5-0.5b-random"), args.tiny)
    seq_len = 128 if args.tiny else args.seq_len
    data = write_data(work / "data.jsonl", rows=200, words=max(8, seq_len // 3))
    results = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "device": device,
        "versions": versions,
        "model": (
            "tiny test model" if args.tiny else f"{CATALOG_MODEL} architecture, random weights"
        ),
        "seq_len": seq_len,
        "methods": [],
    }
    failed = False
    for method in args.methods.split(","):
        try:  # keep going: one method's failure is itself a result
            item = check_method(work, model, data, method.strip(), seq_len)
        except (SystemExit, OSError, RuntimeError, ValueError, subprocess.SubprocessError) as error:
            item = {"method": method, "error": repr(error)}
        results["methods"].append(item)
        failed |= "error" in item or any(
            item.get(step, {}).get("exit", 0) != 0 for step in ("train", "probe", "eval")
        )

    text = report(results)
    print(text)
    print(json.dumps(results, indent=2))
    out = Path(args.results_dir)
    out.mkdir(parents=True, exist_ok=True)
    stamp = results["time"].replace(":", "").replace("-", "")
    (out / f"gpu_check-{stamp}.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / f"gpu_check-{stamp}.md").write_text(text)
    log(f"wrote {out}/gpu_check-{stamp}.json and .md")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
