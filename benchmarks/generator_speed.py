"""How long `finetune-gen generate` and `plan` take against the floor of importing their light
dependencies, measured side by side: interleaved runs, medians, ratios (absolute times on a
shared machine are noise).

    python benchmarks/generator_speed.py [--runs 7]

Cases: the import floor (jinja2, pydantic, click, yaml, rich); `generate` of the shipped
example with warm caches (what a rerun, or `generate --check`, costs), of the example with
a new learning rate (what a spec edit costs: the changed files are formatted), and with
FINETUNE_GEN_NO_CACHE=1 (black formats every file and every template is compiled); `plan` of
a spec that fits nothing (the widest search).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "llama-lora-alpaca.yaml"
NO_FIT = ROOT / "golden" / "llama70b-no-fit" / "spec.yaml"


def timed(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, env=env, cwd=ROOT, capture_output=True, check=False)
    return time.perf_counter() - start


EDITED = "generate, spec edited"


def edited_spec(out: Path, run: int) -> Path:
    """The example with a learning rate never seen before: train.py and config.yaml change (black
    formats them), the other files and every compiled template come from the caches."""
    text = EXAMPLE.read_text().replace(
        "data/alpaca_sample.jsonl", str(EXAMPLE.parent / "data" / "alpaca_sample.jsonl")
    )
    text = text.replace(
        "  epochs: 3\n",
        f"  epochs: 3\n  learning_rate: {1e-4 * (1 + (time.time_ns() % 10**6) / 10**6 + run):.6e}\n",
    )
    path = out / f"edited-{run}.yaml"
    path.write_text(text)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    out = Path(tempfile.mkdtemp())
    cli = [sys.executable, "-m", "finetune_gen"]
    cases = {
        "import floor": ([sys.executable, "-c", "import jinja2, pydantic, click, yaml, rich"], env),
        "generate (cache warm)": (
            cli + ["generate", str(EXAMPLE), "-o", str(out / "a"), "--force"],
            env,
        ),
        "generate (no cache)": (
            cli + ["generate", str(EXAMPLE), "-o", str(out / "b"), "--force"],
            {**env, "FINETUNE_GEN_NO_CACHE": "1"},
        ),
        "plan, nothing fits": (cli + ["plan", str(NO_FIT)], env),
    }
    # pip byte-compiles a package when it installs it; a checkout under PYTHONDONTWRITEBYTECODE
    # (set on some machines) would otherwise compile every module on every run (~0.6 s here).
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(ROOT / "finetune_gen")], check=True
    )
    timed(*cases["generate (cache warm)"])  # fill the cache once
    times: dict[str, list[float]] = {name: [] for name in [*cases, EDITED]}
    for run in range(args.runs):
        for name, (command, case_env) in cases.items():  # interleaved
            times[name].append(timed(command, case_env))
        edited = edited_spec(out, run)
        times[EDITED].append(
            timed(cli + ["generate", str(edited), "-o", str(out / "c"), "--force"], env)
        )
    floor = statistics.median(times["import floor"])
    print(f"{'case':<24} {'median s':>9} {'x floor':>8}   ({args.runs} interleaved runs)")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<24} {median:>9.3f} {median / floor:>8.2f}")


if __name__ == "__main__":
    main()
