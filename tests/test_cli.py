"""The CLI as users call it: output object, plan, init, models, schema, notebook, packaging."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import venv

import pytest
import yaml

from conftest import ROOT, run_cli

EXAMPLE = "examples/llama-lora-alpaca.yaml"


def test_json_output_object_matches_the_contract():
    from finetune_gen.models.output import OutputObject

    result = run_cli("generate", EXAMPLE, "--format", "json", check=True)
    payload = json.loads(result.stdout)
    OutputObject.model_validate(payload)  # the contract's shape, field for field
    resources = payload["estimated_resources"]
    assert set(resources["gpu_memory_breakdown_gb"]) == {
        "weights",
        "trainable_and_grads",
        "optimizer",
        "activations",
        "logits",
        "overhead",
    }
    assert resources["gpu_memory_gb"] == pytest.approx(
        sum(resources["gpu_memory_breakdown_gb"].values()), abs=0.05
    )
    plan = payload["plan"]
    assert plan["method"] == "lora" and plan["total_params"] == 8030261248
    assert plan["trainable_params"] == 41943040  # r=16 on every linear layer, as peft reports
    assert "train.py" not in payload["config_files"] and "config.yaml" in payload["config_files"]
    compile(payload["training_script"], "train.py", "exec")


def test_generated_files_parse_and_load(tmp_path):
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    run_cli("generate", EXAMPLE, "-o", "examples/run", cwd=tmp_path, check=True)
    out = tmp_path / "examples" / "run"
    for path in out.iterdir():
        if path.suffix == ".py":
            ast.parse(path.read_text())
        elif path.suffix in (".yaml", ".yml"):
            assert yaml.safe_load(path.read_text())
        elif path.suffix == ".json":
            json.loads(path.read_text())
    subprocess.run(["bash", "-n", str(out / "launch.sh")], check=True)
    assert os.access(out / "launch.sh", os.X_OK)
    text = "".join(p.read_text() for p in out.iterdir())
    assert str(tmp_path) not in text, "generated files must not hold absolute paths of this machine"
    assert '"../data/alpaca_sample.jsonl"' in (out / "train.py").read_text()


def test_spec_strings_stay_literals(tmp_path):
    """A hostile dataset path must reach train.py as a string constant, never as code."""
    run_cli("generate", "golden/mistral-qlora-2gpu/spec.yaml", "-o", tmp_path, check=True)
    tree = ast.parse((tmp_path / "train.py").read_text())
    calls = [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and getattr(n.func, "attr", "") == "system"
    ]
    assert not calls
    assigned = {
        n.targets[0].id: n.value
        for n in tree.body
        if isinstance(n, ast.Assign) and isinstance(n.targets[0], ast.Name)
    }
    assert isinstance(assigned["DATASET_PATH"], ast.Constant)
    assert "os.system('echo pwned')" in assigned["DATASET_PATH"].value


def test_training_arguments_are_accepted_by_the_installed_transformers(tmp_path):
    pytest.importorskip("transformers")
    from transformers import TrainingArguments

    run_cli("generate", EXAMPLE, "-o", tmp_path, check=True)
    tree = ast.parse((tmp_path / "train.py").read_text())
    node = next(
        n
        for n in tree.body
        if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "TRAINING_ARGS"
    )
    kwargs = ast.literal_eval(node.value)
    TrainingArguments(output_dir=str(tmp_path / "o"), use_cpu=True, **kwargs)


def test_plan_json_has_plan_and_resources():
    result = run_cli("plan", EXAMPLE, "--json", check=True)
    payload = json.loads(result.stdout)
    assert set(payload) == {"plan", "estimated_resources"}
    assert payload["plan"]["decisions"]


def test_plan_table_explains_decisions():
    result = run_cli("plan", EXAMPLE, check=True)
    assert "Decisions" in result.stdout and "why" in result.stdout
    assert "Peak GPU memory" in result.stdout


def test_init_writes_a_spec_that_validates(tmp_path):
    target = tmp_path / "spec.yaml"
    run_cli("init", target, check=True)
    assert run_cli("validate", target).returncode == 0
    again = run_cli("init", target)
    assert again.returncode == 2 and "--force" in again.stderr


def test_models_lists_the_catalogs():
    models = run_cli("models", check=True).stdout
    assert "meta-llama/Llama-3.1-8B" in models and "8.03B" in models
    gpus = run_cli("models", "--gpus", check=True).stdout
    assert "h100" in gpus.lower() and "t4" in gpus.lower()


def test_notebook_holds_every_file(tmp_path):
    run_cli("generate", EXAMPLE, "--format", "notebook", "-o", tmp_path, check=True)
    notebook = json.loads((tmp_path / "finetune.ipynb").read_text())
    sources = ["".join(c["source"]) for c in notebook["cells"]]
    assert any(s.startswith("%%writefile train.py") for s in sources)
    assert notebook["nbformat"] == 4


def test_help_teaches_every_command():
    for command in ("generate", "plan", "validate", "schema", "init", "models", "check-data"):
        result = run_cli(command, "--help", check=True)
        assert "Usage:" in result.stdout
    assert "Exit codes" in run_cli("--help", check=True).stdout


def test_cli_start_up_does_not_import_the_ml_stack():
    code = (
        "import sys, finetune_gen.cli, finetune_gen.planning.planner, finetune_gen.api;"
        "print(sorted(m for m in ('torch', 'transformers', 'peft', 'datasets') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert out.stdout.strip() == "[]"


def test_committed_schemas_match_the_models():
    from finetune_gen.spec.schemas import SCHEMA_FILES, schema_text

    for which, name in SCHEMA_FILES.items():
        committed = (ROOT / "schemas" / name).read_text()
        assert committed == schema_text(
            which
        ), f"schemas/{name} is stale: run python -m finetune_gen.spec.schemas"


def test_schema_command_prints_valid_json_schema():
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(run_cli("schema", check=True).stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    spec = yaml.safe_load((ROOT / EXAMPLE).read_text())
    jsonschema.validate(spec, schema)


@pytest.mark.slow
def test_wheel_installs_and_generates_outside_the_checkout(tmp_path):
    """Templates and schemas ship inside the wheel: generate from a fresh venv, elsewhere."""
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(ROOT)],
        check=True,
        capture_output=True,
    )
    wheel = next(dist.glob("*.whl"))
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", str(wheel)], check=True)
    work = tmp_path / "elsewhere"
    work.mkdir()
    (work / "data").mkdir()
    (work / "data" / "alpaca_sample.jsonl").write_text(
        (ROOT / "examples/data/alpaca_sample.jsonl").read_text()
    )
    (work / "spec.yaml").write_text((ROOT / EXAMPLE).read_text())
    result = subprocess.run(
        [str(env_dir / "bin" / "finetune-gen"), "generate", "spec.yaml", "-o", "run"],
        cwd=work,
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    assert result.returncode == 0, result.stderr
    assert (work / "run" / "train.py").exists()
    imported = subprocess.run(
        [str(python), "-c", "import finetune_gen, sys; print(finetune_gen.__file__)"],
        cwd=work,
        capture_output=True,
        text=True,
    )
    assert str(env_dir) in imported.stdout, "the wheel, not the checkout, must have been used"


def test_quantization_config_is_accepted_by_transformers(tmp_path):
    """The GPU path's BitsAndBytesConfig (string dtypes, NF4, double quant) as generated."""
    from transformers import BitsAndBytesConfig

    run_cli("generate", "golden/mistral-qlora-2gpu/spec.yaml", "-o", tmp_path, check=True)
    tree = ast.parse((tmp_path / "train.py").read_text())
    node = next(
        n
        for n in tree.body
        if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "QUANTIZATION"
    )
    config = BitsAndBytesConfig(**ast.literal_eval(node.value))
    assert (
        config.load_in_4bit
        and config.bnb_4bit_quant_type == "nf4"
        and config.bnb_4bit_use_double_quant
    )
    assert str(config.bnb_4bit_compute_dtype) == "torch.bfloat16"


def test_black_output_is_cached_by_exact_input(tmp_path, monkeypatch):
    """A file that did not change is not formatted again; a changed one is."""
    import black

    from finetune_gen.render import engine as render

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("FINETUNE_GEN_NO_CACHE", raising=False)
    source = "x = [1,\n 2]\n"
    first = render.format_python(source, "a.py")
    assert first == black.format_str(source, mode=black.Mode())
    entries = list(tmp_path.rglob("*.py"))
    assert len(entries) == 1
    calls = []
    monkeypatch.setattr(black, "format_str", lambda *a, **k: calls.append(a) or "")
    assert render.format_python(source, "a.py") == first and calls == []  # a hit
    render.format_python(source + "y = 1\n", "a.py")
    assert len(calls) == 1  # a miss formats


def test_compiled_templates_are_cached_and_an_edited_template_is_compiled_again(
    tmp_path, monkeypatch
):
    """`generate` reuses compiled templates between runs; a changed template is not served stale."""
    import jinja2

    from finetune_gen.render import engine as render

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("FINETUNE_GEN_NO_CACHE", raising=False)
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "a.txt.jinja").write_text("one {{ x }}\n")
    monkeypatch.setattr(render, "templates_dir", lambda: templates)
    render.environment.cache_clear()
    try:
        assert render.environment().get_template("a.txt.jinja").render(x=1) == "one 1\n"
        assert list((tmp_path / "cache" / "finetune-gen").glob("jinja-*/__jinja2_*.cache"))
        (templates / "a.txt.jinja").write_text("two {{ x }}\n")
        render.environment.cache_clear()  # a new process: only the on-disk cache is left
        assert render.environment().get_template("a.txt.jinja").render(x=1) == "two 1\n"

        monkeypatch.setenv("FINETUNE_GEN_NO_CACHE", "1")
        render.environment.cache_clear()
        assert render.environment().bytecode_cache is None
        monkeypatch.delenv("FINETUNE_GEN_NO_CACHE")
        (tmp_path / "blocked").write_text("a file where the cache folder would go")
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "blocked"))
        render.environment.cache_clear()  # an unusable cache: templates are compiled each time
        assert render.environment().bytecode_cache is None
        assert render.environment().get_template("a.txt.jinja").render(x=2) == "two 2\n"
    finally:
        render.environment.cache_clear()
