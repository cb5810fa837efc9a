"""How long `finetune-gen generate` and `plan` take against the floor of importing their light
dependencies, measured side by side: interleaved runs, medians, ratios (absolute times on a
shared machine are noise).

    python benchmarks/generator_speed.py [--runs 7]

Cases: the import floor (jinja2, pydantic, click, yaml, rich); `generate` of the shipped
example with a warm formatter cache (what a rerun, or `generate --check`, costs) and with
FINETUNE_GEN_NO_CACHE=1 (black formats every file); `plan` of a spec that fits nothing (the
widest search).
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    out = Path(tempfile.mkdtemp())
    cli = [sys.executable, "-m", "finetune_gen"]
    cases = {
        "import floor": ([sys.executable, "-c", "import jinja2, pydantic, click, yaml, rich"], env),
        "generate (cache warm)": (cli + ["generate", str(EXAMPLE), "-o", str(out / "a"), "--force"], env),
        "generate (no cache)": (
            cli + ["generate", str(EXAMPLE), "-o", str(out / "b"), "--force"],
            {**env, "FINETUNE_GEN_NO_CACHE": "1"},
        ),
        "plan, nothing fits": (cli + ["plan", str(NO_FIT)], env),
    }
    timed(*cases["generate (cache warm)"])  # fill the cache once
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.runs):
        for name, (command, case_env) in cases.items():  # interleaved
            times[name].append(timed(command, case_env))
    floor = statistics.median(times["import floor"])
    print(f"{'case':<24} {'median s':>9} {'x floor':>8}   ({args.runs} interleaved runs)")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<24} {median:>9.3f} {median / floor:>8.2f}")


if __name__ == "__main__":
    main()
