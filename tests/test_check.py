"""`generate --check` (is a committed run folder up to date?) and `diff OLD NEW`."""

from __future__ import annotations

import yaml

from conftest import run_cli


def write(tmp_path, name="spec.yaml", **training):
    spec = {
        "base_model": "meta-llama/Llama-3.1-8B",
        "task_type": "instruction",
        "dataset": {"path": "tatsu-lab/alpaca", "format": "alpaca", "num_examples": 5000, "avg_tokens_per_example": 300},
        "training_config": {"method": "lora", **training},
        "hardware": {"gpus": 1, "vram_per_gpu": "48GB", "gpu_type": "a6000"},
    }
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec))
    return path


def test_check_passes_on_a_fresh_run_folder(tmp_path):
    spec = write(tmp_path)
    run_cli("generate", spec, "-o", tmp_path / "run", check=True)
    (tmp_path / "run" / "outputs").mkdir()  # results and the user's own files are not compared
    (tmp_path / "run" / "outputs" / "adapter_config.json").write_text("{}")
    (tmp_path / "run" / "notes.txt").write_text("mine\n")
    result = run_cli("generate", spec, "-o", tmp_path / "run", "--check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "up to date" in result.stdout
    assert not (tmp_path / "run" / "train.py.tmp").exists()


def test_check_fails_with_a_unified_diff_after_a_spec_change(tmp_path):
    spec = write(tmp_path)
    run_cli("generate", spec, "-o", tmp_path / "run", check=True)
    before = (tmp_path / "run" / "train.py").read_text()
    write(tmp_path, learning_rate=1e-4)
    result = run_cli("generate", spec, "-o", tmp_path / "run", "--check")
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"--- {(tmp_path / 'run').as_posix()}/train.py" in result.stdout
    assert "+++ generated/train.py" in result.stdout
    added = [line for line in result.stdout.splitlines() if line.startswith("+") and "learning_rate" in line]
    assert any("0.0001" in line for line in added), added
    assert "changed: " in result.stderr and "train.py" in result.stderr
    assert (tmp_path / "run" / "train.py").read_text() == before  # --check writes nothing


def test_check_counts_missing_and_stale_generated_files(tmp_path):
    spec = write(tmp_path)
    run = tmp_path / "run"
    run_cli("generate", spec, "-o", run, check=True)
    (run / "eval.py").unlink()
    (run / "ds_zero3.json").write_text("{}\n")  # left over from an older plan
    result = run_cli("generate", spec, "-o", run, "--check")
    assert result.returncode == 1
    assert "missing: eval.py" in result.stderr
    assert "not generated any more: ds_zero3.json" in result.stderr
    assert "+++ /dev/null" in result.stdout and "--- /dev/null" in result.stdout


def test_check_of_a_folder_that_does_not_exist_fails(tmp_path):
    result = run_cli("generate", write(tmp_path), "-o", tmp_path / "nowhere", "--check")
    assert result.returncode == 1
    assert "missing: " in result.stderr
    assert not (tmp_path / "nowhere").exists()


def test_check_needs_a_folder(tmp_path):
    result = run_cli("generate", write(tmp_path), "--format", "json", "--check")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def test_diff_shows_plan_estimate_and_file_changes(tmp_path):
    old = write(tmp_path, "old.yaml")
    new = write(tmp_path, "new.yaml", method="qlora", max_seq_length=4096)
    result = run_cli("diff", old, new)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert 'method: "lora" -> "qlora"' in out
    assert "max_seq_length: " in out and "-> 4096" in out
    assert "estimate:\n" in out and "gpu_memory_gb: " in out
    assert "~ train.py" in out and "~ merge.py" in out
    same = run_cli("diff", old, old)
    assert same.stdout.count("(no change)") == 3, same.stdout


def test_diff_names_files_added_and_removed(tmp_path):
    one = write(tmp_path, "one.yaml")
    two = tmp_path / "two.yaml"
    spec = yaml.safe_load(one.read_text())
    spec["hardware"] = {"gpus": 8, "nodes": 2, "vram_per_gpu": "80GB", "gpu_type": "a100_80gb"}
    two.write_text(yaml.safe_dump(spec))
    out = run_cli("diff", one, two, check=True).stdout
    assert "+ slurm.sbatch" in out and "+ accelerate.yaml" in out
    assert "hardware.nodes: 1 -> 2" in out


def test_diff_of_a_bad_spec_is_one_message(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("base_model: x\n")
    result = run_cli("diff", bad, write(tmp_path))
    assert result.returncode == 2 and "Traceback" not in result.stderr
