"""Calibrate the estimator on a GPU: the generated train.py's real peak memory and speed.

One prepared command for one H200 (no network), meant to finish in under 10 minutes:

    bash benchmarks/carry_wheels.sh install     # only where packages are missing (see that file)
    python3 benchmarks/gpu_calibration.py       # --budget-s 540 by default

For each model of ``MATRIX`` (random weights built from the catalog's config: 0.5B, 1.5B and
8B classes, no download) and each method (full, LoRA, QLoRA) it generates a run folder with
``finetune-gen generate`` and, in a fresh process per (model, method), imports that run's
train.py and drives its own functions (setup_model, training_arguments, build_trainer, as
probe.py does) for a few optimizer steps at two sequence lengths, without and then with Liger
kernels (``use_liger_kernel``; Liger patches the model in place, so "with" comes second).
Every sequence is at the planned length (probe_example), so the peak is the worst case the
estimator sizes.

Each measurement records ``torch.cuda.max_memory_allocated()``, tokens/s over the steady
steps, MFU (executed FLOPs from the estimator's flops_per_token over the catalog's dense bf16
peak), the estimator's inputs (the TrainingShape, field by field, so tests/test_calibration.py
recomputes the estimate from the current code) and the environment (versions, device,
driver, attention implementation). Results are written as they come to
benchmarks/results/gpu_calibration-<UTC time>.json, so a run cut short keeps what it measured;
configurations past the time budget are skipped and listed as such.

`--tiny --allow-cpu` runs the whole path on the CPU with a tiny model (tests the script only).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import importlib
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

# (catalog model, methods, sequence lengths, micro-batch, gradient checkpointing)
MATRIX = [
    ("Qwen/Qwen2.5-0.5B", ("full", "lora", "qlora"), (512, 2048), 4, False),
    ("Qwen/Qwen2.5-1.5B", ("full", "lora", "qlora"), (1024, 4096), 2, False),
    ("meta-llama/Llama-3.1-8B", ("lora", "qlora", "full"), (1024, 2048), 2, True),
]
TINY = [("tiny", ("lora",), (64, 128), 2, False)]
STEPS = 4  # optimizer steps per configuration; the first (warm-up) is not timed
VERSIONED = (
    "torch",
    "transformers",
    "peft",
    "trl",
    "accelerate",
    "bitsandbytes",
    "datasets",
    "liger_kernel",
)


def log(message: str) -> None:
    print(f"[gpu_calibration {time.strftime('%H:%M:%S')}] {message}", flush=True)


def environment() -> dict:
    import torch

    env = {"python": platform.python_version(), "platform": platform.platform()}
    for name in VERSIONED:
        try:
            module = importlib.import_module(name)
            env[name] = getattr(module, "__version__", "installed")
        except Exception as error:
            env[name] = f"unavailable ({type(error).__name__})"
    env["cuda"] = torch.version.cuda
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env["device"] = torch.cuda.get_device_name(0)
        env["capability"] = f"{props.major}.{props.minor}"
        env["device_memory_gb"] = round(props.total_memory / 1e9, 2)
        env["cudnn"] = torch.backends.cudnn.version()
        try:
            env["driver"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                check=False,
                timeout=20,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            env["driver"] = "unknown"
    else:
        env["device"] = "cpu"
    env["flash_attn"] = importlib.util.find_spec("flash_attn") is not None
    return env


def script_env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }


# ---------------------------------------------------------------- models and run folders


def build_model(folder: Path, model_id: str) -> Path:
    """A tokenizer (tests/tiny.py's, ChatML) and random weights from the catalog's config."""
    import tiny
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    if (folder / "config.json").exists():
        return folder
    if model_id == "tiny":
        return tiny.build_model(folder, arch="qwen2", template="chatml")
    from finetune_gen.knowledge.catalog import resolve_model

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = tiny.build_tokenizer(folder, template="chatml")
    config = dict(resolve_model(model_id).config)
    config.update(bos_token_id=None, eos_token_id=tokenizer.eos_token_id)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    with torch.device(device):  # initialising 8B on the GPU takes seconds, on the CPU minutes
        model = AutoModelForCausalLM.from_config(
            AutoConfig.for_model(**config), dtype=torch.bfloat16
        )
    model.save_pretrained(folder)
    log(f"{model_id}: random weights, {model.num_parameters():,} parameters, in {folder}")
    del model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return folder


def write_data(path: Path, rows: int = 64) -> Path:
    with path.open("w") as handle:
        for i in range(rows):
            handle.write(
                json.dumps({"instruction": f"Say {i}", "input": "", "output": f"{i}"}) + "\n"
            )
    return path


def generate(
    work: Path, model: Path, data: Path, method: str, seq_len: int, micro: int, gc_on: bool
) -> Path:
    import yaml

    spec = {
        "base_model": str(model),
        "task_type": "instruction",
        "dataset": {"path": str(data), "format": "alpaca", "train_split": 0.9, "eval_split": 0.1},
        "training_config": {
            "method": method,
            "max_seq_length": seq_len,
            "epochs": 1,
            "batch_size": micro,
            "gradient_accumulation_steps": 1,
            "gradient_checkpointing": gc_on or method == "qlora",
        },
        "hardware": {"gpus": 1, "gpu_type": "h200"},
    }
    folder = work / f"{model.name}-{method}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    (folder / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    result = subprocess.run(
        [sys.executable, "-m", "finetune_gen", "generate", "spec.yaml", "-o", "run"],
        check=False,
        cwd=folder,
        capture_output=True,
        text=True,
        env=script_env(),
    )
    if result.returncode != 0:
        raise RuntimeError(f"generate {method} failed:\n{result.stdout}\n{result.stderr}")
    return folder / "run"


# ---------------------------------------------------------------- one (model, method): the worker


def worker(run_folder: Path, model_id: str, seqs: list[int], out: Path, deadline: float) -> None:
    """Import the generated train.py and measure each (sequence length, Liger) configuration."""
    import torch
    from transformers import TrainerCallback

    from finetune_gen.knowledge.catalog import get_gpu, resolve_model
    from finetune_gen.estimate.formulas import estimate_memory, flops_per_token
    from finetune_gen.api import plan_file
    from finetune_gen.knowledge.params import count_params
    from finetune_gen.estimate.shape import shape_for_plan

    plan = plan_file(run_folder.parent / "spec.yaml", out_dir=run_folder).plan
    # The model folder holds the catalog's config with random weights: the same architecture
    # (the plan names it relative to the run folder).
    arch = resolve_model(str((run_folder / plan.base_model).resolve())).architecture
    counts = count_params(arch)
    peak_tflops = get_gpu("h200").tflops_bf16

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times, self.started = [], None

        def on_step_begin(self, args, state, control, **kwargs):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.times.append(time.perf_counter() - self.started)

    os.chdir(run_folder)
    sys.path.insert(0, str(run_folder))
    recipe = importlib.import_module("train")
    precision = recipe.setup_precision()
    tokenizer = recipe.setup_tokenizer()
    model = recipe.setup_model(tokenizer, precision)
    liger_options = [False]
    if importlib.util.find_spec("liger_kernel") is not None and torch.cuda.is_available():
        liger_options.append(True)
    for liger in liger_options:
        for seq in seqs:
            record = {"model": model_id, "method": plan.method, "seq_len": seq, "liger": liger}
            if time.time() > deadline:
                record["skipped"] = "time budget spent"
                append(out, record)
                continue
            micro = plan.micro_batch_size
            shape = dataclasses.replace(
                shape_for_plan(plan),
                micro_batch_size=micro,
                seq_len=seq,
                loss_impl="liger" if liger else "hf",
            )
            examples = [recipe.probe_example(tokenizer, seq) for _ in range(micro * (STEPS + 1))]
            timer = StepTimer()
            try:
                with tempfile.TemporaryDirectory() as scratch:
                    args = recipe.training_arguments(
                        precision,
                        False,
                        output_dir=scratch,
                        max_steps=STEPS,
                        save_strategy="no",
                        report_to="none",
                        logging_steps=1,
                        use_liger_kernel=liger,
                    )
                    trainer = recipe.build_trainer(model, tokenizer, examples, [], args)
                    trainer.add_callback(timer)
                    gc.collect()
                    if torch.cuda.is_available():
                        torch.cuda.empty_cache()
                        torch.cuda.reset_peak_memory_stats()
                        before = torch.cuda.memory_allocated()
                    trainer.train()
                    del trainer
            except Exception as error:
                record["error"] = f"{type(error).__name__}: {str(error)[:500]}"
                append(out, record)
                gc.collect()
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                continue
            steady = timer.times[1:] or timer.times
            tokens_per_second = micro * seq / (sum(steady) / len(steady))
            estimate = estimate_memory(arch, counts, shape)
            record.update(
                micro_batch_size=micro,
                steps=STEPS,
                tokens_per_second=round(tokens_per_second, 1),
                flops_per_token=flops_per_token(arch, counts, shape),
                mfu=round(
                    tokens_per_second * flops_per_token(arch, counts, shape) / (peak_tflops * 1e12),
                    4,
                ),
                attn_implementation=getattr(
                    getattr(model, "config", None), "_attn_implementation", None
                ),
                shape=dataclasses.asdict(shape),
                estimated_allocated_gb=round(estimate.allocated_gb, 3),
            )
            if torch.cuda.is_available():
                record["max_memory_allocated_gb"] = round(
                    torch.cuda.max_memory_allocated() / 1e9, 3
                )
                record["max_memory_reserved_gb"] = round(torch.cuda.max_memory_reserved() / 1e9, 3)
                record["allocated_before_gb"] = round(before / 1e9, 3)
                record["measured_over_estimate"] = round(
                    record["max_memory_allocated_gb"] / estimate.allocated_gb, 3
                )
            append(out, record)
            log(json.dumps({k: v for k, v in record.items() if k != "shape"}))


def shape_from_record(record: dict):
    """The estimator's TrainingShape of a measurement (JSON turned the tuples into lists)."""
    from finetune_gen.estimate.formulas import TrainingShape

    fields = dict(record["shape"])
    if isinstance(fields.get("target_modules"), list):
        fields["target_modules"] = tuple(fields["target_modules"])
    return TrainingShape(**fields)


def estimated_allocated_gb(record: dict) -> float:
    """Today's estimate of max_memory_allocated for a recorded measurement (catalog model)."""
    from finetune_gen.knowledge.catalog import resolve_model
    from finetune_gen.estimate.formulas import estimate_memory
    from finetune_gen.knowledge.params import count_params

    arch = resolve_model(record["model"]).architecture
    return estimate_memory(arch, count_params(arch), shape_from_record(record)).allocated_gb


def measurements(results_dir: Path) -> list[dict]:
    """Every recorded GPU measurement with a peak, from benchmarks/results/gpu_calibration-*.json."""
    found = []
    for path in sorted(results_dir.glob("gpu_calibration-*.json")):
        report = json.loads(path.read_text())
        for record in report.get("measurements", []):
            if "max_memory_allocated_gb" in record and record.get("model") != "tiny":
                found.append(
                    {**record, "file": path.name, "device": report["environment"].get("device")}
                )
    return found


def append(path: Path, record: dict) -> None:
    with path.open("a") as handle:
        handle.write(json.dumps(record) + "\n")


# ---------------------------------------------------------------- the parent


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work-dir", default="/tmp/finetune-gen-calibration")
    parser.add_argument("--results-dir", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument(
        "--budget-s", type=float, default=540, help="stop starting configurations after this"
    )
    parser.add_argument("--tiny", action="store_true", help="a tiny model (tests this script)")
    parser.add_argument(
        "--allow-cpu", action="store_true", help="run without CUDA (tests this script)"
    )
    parser.add_argument(
        "--worker", nargs=4, metavar=("RUN", "MODEL", "SEQS", "OUT"), help=argparse.SUPPRESS
    )
    parser.add_argument("--deadline", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run, model_id, seqs, out = args.worker
        worker(Path(run), model_id, [int(s) for s in seqs.split(",")], Path(out), args.deadline)
        return 0

    import torch

    if not torch.cuda.is_available() and not args.allow_cpu:
        raise SystemExit("no CUDA device: this script measures GPU memory (--allow-cpu to test it)")
    start = time.time()
    deadline = start + args.budget_s
    work = Path(args.work_dir)
    (work / "models").mkdir(parents=True, exist_ok=True)
    data = write_data(work / "data.jsonl")
    results_dir = Path(args.results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    lines = work / f"measurements-{stamp}.jsonl"
    report = {
        "script": "benchmarks/gpu_calibration.py",
        "time": stamp,
        "environment": environment(),
    }
    out = results_dir / f"gpu_calibration-{stamp}.json"
    log(f"environment: {report['environment']}")

    def write() -> None:
        records = (
            [json.loads(line) for line in lines.read_text().splitlines()] if lines.exists() else []
        )
        report["measurements"] = records
        report["seconds"] = round(time.time() - start, 1)
        out.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")

    for model_id, methods, seqs, micro, gc_on in TINY if args.tiny else MATRIX:
        folder = work / "models" / model_id.replace("/", "--")
        try:
            build_model(folder, model_id)
        except Exception as error:
            append(lines, {"model": model_id, "error": f"building the model: {error!r}"})
            continue
        for method in methods:
            if time.time() > deadline:
                append(lines, {"model": model_id, "method": method, "skipped": "time budget spent"})
                continue
            try:
                run_folder = generate(work, folder, data, method, max(seqs), micro, gc_on)
            except RuntimeError as error:
                append(lines, {"model": model_id, "method": method, "error": str(error)[-2000:]})
                continue
            log(f"{model_id} {method}: measuring {seqs}")
            command = [
                sys.executable, __file__, "--worker", str(run_folder), model_id,
                ",".join(str(s) for s in seqs), str(lines), "--deadline", str(deadline),
            ]  # fmt: skip
            try:
                result = subprocess.run(
                    command, check=False, env=script_env(), capture_output=True, text=True,
                    timeout=max(60.0, deadline + 120 - time.time()),
                )  # fmt: skip
                if result.returncode != 0:
                    append(
                        lines, {"model": model_id, "method": method, "error": result.stderr[-2000:]}
                    )
            except subprocess.TimeoutExpired:
                append(lines, {"model": model_id, "method": method, "error": "worker timed out"})
            write()
    write()
    measured = [r for r in report["measurements"] if "max_memory_allocated_gb" in r]
    log(f"wrote {out}: {len(measured)} measurements in {report['seconds']} s")
    for r in measured:
        print(
            f"{r['model']:<26} {r['method']:<6} seq {r['seq_len']:>5} liger {r['liger']!s:<5} "
            f"measured {r['max_memory_allocated_gb']:7.2f} GB  estimated {r['estimated_allocated_gb']:7.2f} GB  "
            f"ratio {r['measured_over_estimate']:.3f}  {r['tokens_per_second']:>9,.0f} tok/s  MFU {r['mfu']:.1%}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
