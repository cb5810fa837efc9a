"""serve.sh (vLLM) and slurm.sbatch: valid bash, vLLM options that exist, values from the plan."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, run_cli
from finetune_gen.render.after_training import VLLM_MAX_LORA_RANKS, VLLM_VERSION, slurm_time_limit

FLAGS_FILE = ROOT / "tests" / "data" / "vllm-serve-flags.txt"


def vllm_flags() -> set[str]:
    lines = FLAGS_FILE.read_text().splitlines()
    assert lines[0].startswith(f"# vllm {VLLM_VERSION}:"), "the flag list and the generator name different vLLM versions"
    return {line for line in lines[1:] if line.startswith("--")}


def spec_file(
    tmp_path: Path, method="lora", gpus=1, nodes=1, task="instruction", fmt="alpaca", r=None, columns=None, **extra
):
    training = {"method": method, "max_seq_length": 3072}
    if r:
        training["lora"] = {"r": r}
    spec = {
        "base_model": "meta-llama/Llama-3.1-8B",
        "task_type": task,
        "dataset": {"path": "tatsu-lab/alpaca", "format": fmt, "num_examples": 5000, "avg_tokens_per_example": 300},
        "training_config": training,
        "hardware": {"gpus": gpus, "nodes": nodes, "vram_per_gpu": "80GB", "gpu_type": "a100_80gb"},
        **extra,
    }
    if columns:
        spec["dataset"]["columns"] = columns
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def generated(tmp_path: Path, **spec) -> Path:
    run_cli("generate", spec_file(tmp_path, **spec), "-o", tmp_path / "run", check=True)
    return tmp_path / "run"


def vllm_commands(script: str) -> list[list[str]]:
    """Each `vllm serve` command line of the script, continuation lines joined, as words."""
    text = re.sub(r"\\\n\s*", " ", script)
    commands = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("exec vllm serve"):
            commands.append(shlex.split(line.replace('"${common[@]}"', common_args(script))))
    return commands


def common_args(script: str) -> str:
    block = re.search(r"common=\((.*?)\n\)", script, re.S)
    return " ".join(part.strip() for part in block.group(1).splitlines() if part.strip())


def options(words: list[str]) -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for index, word in enumerate(words):
        if word.startswith("--"):
            value = words[index + 1] if index + 1 < len(words) and not words[index + 1].startswith("--") else None
            found[word] = value
    return found


def test_serve_script_is_valid_bash_with_documented_vllm_options(tmp_path):
    run = generated(tmp_path, method="lora", gpus=2, r=24)
    script = (run / "serve.sh").read_text()
    subprocess.run(["bash", "-n", str(run / "serve.sh")], check=True)
    commands = vllm_commands(script)
    assert len(commands) == 2, commands  # merged and adapter
    known = vllm_flags()
    for words in commands:
        unknown = sorted(set(options(words)) - known)
        assert not unknown, f"not options of vllm {VLLM_VERSION} serve: {unknown}"
        assert options(words)["--max-model-len"] == "3072"
        assert options(words)["--tensor-parallel-size"] == "2"
    merged, adapter = commands
    assert merged[3] == "outputs-merged"
    adapter_options = options(adapter)
    assert "--enable-lora" in adapter_options
    assert adapter_options["--lora-modules"].endswith("=outputs")
    # r=24 needs the next rank vLLM accepts.
    assert adapter_options["--max-lora-rank"] == "32"
    assert adapter[3] == "meta-llama/Llama-3.1-8B"


def test_serve_script_curl_example_matches_the_prompt_format(tmp_path):
    script = (generated(tmp_path / "alpaca") / "serve.sh").read_text()
    assert "/v1/completions" in script and "### Instruction:" in script
    chat = generated(tmp_path / "chat", task="chat", fmt="chatml")
    script = (chat / "serve.sh").read_text()
    assert "/v1/chat/completions" in script and '"messages"' in script


@pytest.mark.parametrize("method, modes", [("dora", ["merged"]), ("full", [None]), ("qlora", ["merged", "adapter"])])
def test_serving_modes_per_method(tmp_path, method, modes):
    script = (generated(tmp_path, method=method) / "serve.sh").read_text()
    assert ("  adapter)" in script) == ("adapter" in modes)
    if method == "full":
        assert "exec vllm serve outputs " in script and "merge.py" not in script


def test_no_serve_script_for_classification_or_prompt_tuning(tmp_path):
    run = generated(tmp_path / "a", method="prompt_tuning")
    assert not (run / "serve.sh").exists()
    run = generated(tmp_path / "b", task="classification", fmt="custom", columns={"text": "t", "label": "l"})
    assert (run / "train.py").exists() and not (run / "serve.sh").exists()


def test_lora_ranks_list_matches_the_vllm_source():
    """VLLM_MAX_LORA_RANKS is what vllm accepts for --max-lora-rank (vllm/config/lora.py)."""
    assert "--max-lora-rank" in vllm_flags()
    assert VLLM_MAX_LORA_RANKS == (1, 8, 16, 32, 64, 128, 256, 320, 512)


def test_readme_has_serving_and_export_notes(tmp_path):
    readme = (generated(tmp_path) / "README.md").read_text()
    assert "bash serve.sh" in readme
    assert "convert_hf_to_gguf.py" in readme and "Q4_K_M" in readme
    assert "16.1 GB" in readme  # Llama-3.1-8B's weights in bf16, to serve


def test_slurm_script_for_multi_node_plans(tmp_path):
    single = generated(tmp_path / "one", gpus=8)
    assert not (single / "slurm.sbatch").exists()
    run = generated(tmp_path / "two", gpus=8, nodes=2)
    path = run / "slurm.sbatch"
    subprocess.run(["bash", "-n", str(path)], check=True)
    script = path.read_text()
    directives = dict(re.findall(r"^#SBATCH --([a-z-]+)(?:=(\S+))?$", script, re.M))
    assert directives["nodes"] == "2"
    assert directives["gpus-per-node"] == "8"
    assert directives["ntasks-per-node"] == "1"
    hours = __import__("json").loads((run / "resources.json").read_text())["training_hours"]
    assert directives["time"] == slurm_time_limit(hours)
    assert "srun" in script and "torchrun" in script
    for variable in ("SLURM_JOB_NODELIST", "SLURM_NNODES", "SLURM_JOB_ID"):
        assert variable in script
    assert "--rdzv_backend c10d" in script and "--nproc_per_node 8" in script


@pytest.mark.parametrize(
    "hours, limit", [(0.1, "0-00:30:00"), (2.0, "0-03:00:00"), (20.0, "1-06:00:00")]
)
def test_slurm_time_limit_has_a_margin(hours, limit):
    assert slurm_time_limit(hours) == limit
