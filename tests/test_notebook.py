"""`generate --format notebook`: a valid notebook that trains, evaluates and merges when run."""

from __future__ import annotations

import json

import pytest

import tiny
from conftest import run_cli
from smoke import write_spec


def notebook_for(tmp_path, tiny_models, method="lora", rows=40):
    model = tiny_models("llama")
    data = tiny.write_alpaca(tmp_path / "alpaca.jsonl", rows=rows)
    spec = write_spec(tmp_path, model, data, method=method)
    run_cli("generate", spec, "--format", "notebook", "-o", tmp_path / "nb", check=True)
    run_cli("generate", spec, "-o", tmp_path / "run", check=True)  # a sibling: same relative paths
    return tmp_path / "nb" / "finetune.ipynb", spec


def sources(notebook):
    return ["".join(cell["source"]) for cell in notebook["cells"]]


def test_notebook_is_valid_and_holds_the_run_folder_files_verbatim(tmp_path, tiny_models):
    import nbformat

    path, _ = notebook_for(tmp_path, tiny_models)
    notebook = nbformat.read(str(path), as_version=4)
    nbformat.validate(notebook)
    cells = sources(notebook)
    written = {}
    for text in cells:
        if text.startswith("%%writefile "):
            name, body = text.split("\n", 1)
            written[name.removeprefix("%%writefile ")] = body
    folder = tmp_path / "run"
    generated = {p.name: p.read_text() for p in folder.iterdir() if p.is_file() and p.name not in ("README.md", ".finetune-gen.json")}
    assert written == generated
    order = [next(i for i, c in enumerate(cells) if marker in c) for marker in (
        "| method |", "%%writefile config.yaml", "pip", "--check-data", '"launch.sh"', '"eval.py"', '"merge.py"'
    )]
    assert order == sorted(order), order


def test_notebook_without_merge_for_full_fine_tuning(tmp_path, tiny_models):
    path, _ = notebook_for(tmp_path, tiny_models, method="full")
    cells = sources(json.loads(path.read_text()))
    assert not any("merge.py" in c for c in cells)


def test_notebook_check_mode(tmp_path, tiny_models):
    path, spec = notebook_for(tmp_path, tiny_models)
    ok = run_cli("generate", spec, "--format", "notebook", "-o", path.parent, "--check")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    path.write_text(path.read_text().replace("TRAIN_OPTIONS = []", "TRAIN_OPTIONS = ['--max-steps', '2']"))
    stale = run_cli("generate", spec, "--format", "notebook", "-o", path.parent, "--check")
    assert stale.returncode == 1 and "finetune.ipynb" in stale.stdout


@pytest.mark.slow
def test_notebook_runs_top_to_bottom_on_the_cpu(tmp_path, tiny_models, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    path, _ = notebook_for(tmp_path, tiny_models, rows=32)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    notebook = nbformat.read(str(path), as_version=4)
    client = NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
    client.execute()

    folder = path.parent
    assert (folder / "outputs" / "adapter_model.safetensors").exists()
    assert (folder / "outputs" / "run_summary.json").exists()
    assert list((folder / "outputs-merged").glob("*.safetensors"))
    # The files the notebook wrote are the run folder's, byte for byte.
    for generated in (tmp_path / "run").iterdir():
        if generated.is_file() and generated.name not in ("README.md", ".finetune-gen.json"):
            assert (folder / generated.name).read_text() == generated.read_text(), generated.name
    outputs = "".join(
        output.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
    )
    assert "<<The" in outputs and "### Response:" in outputs  # the masking, shown
    assert "Saved the merged model" in outputs
