"""Each user-facing choice is one registry entry, and every entry renders.

The spec's enums are the registries' keys; every method, task, dataset format and distribution
renders a run folder whose Python compiles; eval.py and probe.py use only names train.py
defines (its documented interface) and never assign to train.py's globals; the outputs table
is what the run folder, the README's file table, `generate --check` and the output object read.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import get_args

import pytest

from finetune_gen.planning import orchestrate as planning
from finetune_gen.render import engine as render
from finetune_gen.render.after_training import after_training
from finetune_gen.variants.distribution import DISTRIBUTIONS
from finetune_gen.errors import SpecError
from finetune_gen.render.evaluation import evaluation_plan
from finetune_gen.variants.formats import FORMATS
from finetune_gen.variants.methods import METHODS
from finetune_gen.render.outputs import (
    CONFIG_NAMES,
    GENERATED_NAMES,
    OUTPUTS,
    outputs_for,
)
from finetune_gen.models.spec import (
    DatasetFormat,
    Distributed,
    Method,
    TaskType,
    parse_spec,
)
from finetune_gen.variants.tasks import TASKS

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "templates"


def test_spec_enums_are_the_registry_keys():
    assert [t.value for t in TaskType] == list(TASKS)
    assert [f.value for f in DatasetFormat] == list(FORMATS)
    assert list(get_args(Method)) == list(METHODS)
    assert list(get_args(Distributed)) == ["auto", *DISTRIBUTIONS]


COLUMNS = {
    "classification": {"text": "review", "label": "stars"},
    "chat": {"messages": "turns"},
}


def spec_of(task: str, data_format: str, method: str, distributed: str = "auto", gpus: int = 1):
    dataset = {"path": "org/data", "format": data_format, "num_examples": 2000}
    if data_format == "custom":
        dataset["columns"] = COLUMNS.get(task, {"prompt": "question", "response": "answer"})
    training = {"method": method, "distributed": distributed, "epochs": 1}
    if METHODS[method].trains_virtual_tokens:
        training["gradient_checkpointing"] = False
    return parse_spec(
        {
            "base_model": "Qwen/Qwen2.5-0.5B",
            "task_type": task,
            "dataset": dataset,
            "training_config": training,
            "hardware": {"gpus": gpus, "gpu_type": "a100_80gb"},
        }
    )


def combinations():
    """Every method with every task, every format with every task, every distribution."""
    seen = []
    for method in METHODS:
        for task in TASKS:
            seen.append((task, "custom", method, "auto", 1))
    for data_format in FORMATS:
        for task in TASKS:
            seen.append((task, data_format, "lora", "auto", 1))
    for name, entry in DISTRIBUTIONS.items():
        for method in ("full", "lora"):
            seen.append(("instruction", "alpaca", method, name, 2 if entry.multi_process else 1))
    return list(dict.fromkeys(seen))


def top_level_names(tree: ast.Module) -> set[str]:
    """What a module defines for its importers: functions, classes, assigned and imported names."""
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                names |= {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names


def recipe_uses(tree: ast.Module) -> tuple[set[str], set[str]]:
    """(names read as recipe.X, names assigned as recipe.X = ...)."""
    read, assigned = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "recipe":
            (assigned if isinstance(node.ctx, ast.Store) else read).add(node.attr)
    return read, assigned


@pytest.fixture(scope="module")
def rendered():
    """The run folder of each combination (black skipped: only the structure is checked here)."""
    original = render.format_python
    render.format_python = lambda source, name: source
    try:
        folders, refused = {}, {}
        for combo in combinations():
            try:
                planned = planning.plan(spec_of(*combo))
            except SpecError as error:
                refused[combo] = error
                continue
            files = render.render_files(planned.plan, planned.resources, evaluation_plan(planned.plan))
            folders[combo] = (planned, files)
        return folders, refused
    finally:
        render.format_python = original


def test_every_entry_renders_and_eval_and_probe_use_only_what_train_defines(rendered):
    folders, refused = rendered
    for combo, (_, files) in folders.items():
        trees = {name: ast.parse(files[name], filename=name) for name in ("train.py", "eval.py", "probe.py")}
        for name, text in files.items():
            if name.endswith(".py"):
                compile(text, f"{combo}/{name}", "exec")
        defined = top_level_names(trees["train.py"])
        for name in ("eval.py", "probe.py"):
            read, assigned = recipe_uses(trees[name])
            assert read, (combo, name, "imports train.py as recipe")
            assert read <= defined, (combo, name, sorted(read - defined))
            assert not assigned, (combo, name, "assigns train.py globals", sorted(assigned))
    # Each registry entry was rendered at least once (a refusal is never the only outcome).
    assert {p.plan.method for p, _ in folders.values()} == set(METHODS)
    assert {p.plan.task_type for p, _ in folders.values()} == set(TASKS)
    assert {p.plan.dataset.format for p, _ in folders.values()} == set(FORMATS)
    assert {p.plan.distributed for p, _ in folders.values()} == set(DISTRIBUTIONS)
    for combo, error in refused.items():
        lines = [error.message, *error.problems]
        assert all(re.match(r"^[a-z_.]+: \S", line) for line in lines), (combo, lines)


def test_the_run_folder_is_the_outputs_table(rendered):
    folders, _ = rendered
    for combo, (planned, files) in folders.items():
        plan = planned.plan
        assert set(files) == {o.name for o in outputs_for(plan)}, combo
        assert set(files) <= GENERATED_NAMES
        table = files["README.md"].split("## Files", 1)[1].split("\n\n", 2)[1]
        listed = set(re.findall(r"`([^`]+)`", "\n".join(line.split(" | ")[0] for line in table.splitlines())))
        after = after_training(plan, planned.resources)
        assert listed == {o.name for o in outputs_for(plan) if o.describe(plan, after)}, combo
        assert {"train.py", "eval.py", "probe.py", "launch.sh", "resources.json"} <= listed


def test_the_launch_files_follow_the_distribution_entry(rendered):
    folders, _ = rendered
    for combo, (planned, files) in folders.items():
        plan = planned.plan
        entry = DISTRIBUTIONS[plan.distributed]
        if entry.deepspeed_config:
            assert entry.deepspeed_config in files, combo
            assert f'"stage": {entry.zero_stage}' in files[entry.deepspeed_config]
            assert entry.deepspeed_config in files["accelerate.yaml"]
            assert re.search(rf"""["']deepspeed["']: ["']{entry.deepspeed_config}["']""", files["train.py"])
        else:
            assert not any(name.startswith("ds_") for name in files), combo
        if "accelerate.yaml" in files:
            assert f"distributed_type: {entry.accelerate_type}\n" in files["accelerate.yaml"]
        assert ("accelerate.yaml" in files) == (plan.world_size > 1 or entry.multi_process)


def test_classification_padding_follows_the_method_trait(rendered):
    folders, _ = rendered
    for combo, (planned, files) in folders.items():
        plan = planned.plan
        if plan.task_type != "classification":
            continue
        side = "left" if METHODS[plan.method].feeds_embeddings else "right"
        assert f'PADDING_SIDE = "{side}"' in files["train.py"], combo


def test_config_files_are_the_tables_config_rows(rendered):
    from finetune_gen.api import Generated

    folders, _ = rendered
    planned, files = folders[("instruction", "alpaca", "full", "deepspeed_zero3", 2)]
    result = Generated(planned.plan, planned.resources, {}, files, [])
    config = set(result.output_object()["config_files"])
    assert config == {n for n in files if n in CONFIG_NAMES}
    assert config == {"config.yaml", "launch.sh", "requirements.txt", "accelerate.yaml", "ds_zero3.json", "serve.sh"}


def test_templates_never_compare_variant_names():
    """Variant facts come from registry entries; templates test traits, not names."""
    pattern = re.compile(
        r"plan\.(method|task_type|distributed|dataset\.format|prompt_format)\s*(==|!=|\bin\b|\.startswith)"
    )
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in sorted(TEMPLATES.rglob("*.jinja"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert offenders == []


def test_every_template_partial_an_entry_names_exists():
    for entry in METHODS.values():
        assert (TEMPLATES / "train" / f"method_{entry.partial}.py.jinja").is_file(), entry.name
    for entry in TASKS.values():
        assert (TEMPLATES / "train" / f"task_{entry.partial}.py.jinja").is_file(), entry.name
        assert (TEMPLATES / "eval" / f"task_{entry.partial}.py.jinja").is_file(), entry.name
    for entry in FORMATS.values():
        for columns in ({}, {"messages": "m"}):
            assert (TEMPLATES / "train" / f"format_{entry.partial_for(columns)}.py.jinja").is_file()
    for output in OUTPUTS:
        assert not output.template or (TEMPLATES / output.template).is_file(), output.name


def test_a_lora_variant_is_one_methods_entry(tmp_path):
    """docs/architecture.md: a PEFT method reusing an adapter family is an entry in methods.py
    (plus the regenerated schema). A copy of the package gains only that entry and generates."""
    import shutil
    import subprocess
    import sys

    shutil.copytree(ROOT / "finetune_gen", tmp_path / "finetune_gen", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(TEMPLATES, tmp_path / "templates")
    methods = tmp_path / "finetune_gen" / "variants" / "methods.py"
    anchor = '        MethodEntry("lokr", "LoKr", "low_rank", "LoKrConfig", adapter="lokr"),\n'
    text = methods.read_text()
    assert anchor in text
    entry = (
        '        MethodEntry("rslora", "rsLoRA (rank-stabilised LoRA)", "low_rank", "LoraConfig",'
        ' adapter="lora", peft_options=(("use_rslora", True),)),\n'
    )
    methods.write_text(text.replace(anchor, anchor + entry))
    (tmp_path / "spec.yaml").write_text(
        "base_model: Qwen/Qwen2.5-0.5B\ntask_type: instruction\n"
        "dataset: {path: org/data, format: alpaca, num_examples: 2000}\n"
        "training_config: {method: rslora}\nhardware: {gpus: 1, gpu_type: a10g_24gb}\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "finetune_gen", "generate", "spec.yaml", "--format", "json"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "FINETUNE_GEN_NO_CACHE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    import json

    output = json.loads(result.stdout)
    script = output["training_script"]
    assert '"use_rslora": True' in script and "LoraConfig(**PEFT_CONFIG" in script
    assert output["plan"]["lora"]["r"] > 0 and output["plan"]["trainable_params"] > 0
    assert output["estimated_resources"]["gpu_memory_gb"] > 0


def test_every_rendered_script_passes_pyflakes(rendered, tmp_path):
    """No unused import or undefined name in any entry's scripts (goldens cover only a few)."""
    import subprocess
    import sys

    folders, _ = rendered
    paths = []
    for number, (_, files) in enumerate(folders.values()):
        folder = tmp_path / str(number)
        folder.mkdir()
        for name, text in files.items():
            if name.endswith(".py"):
                (folder / name).write_text(text)
                paths.append(str(folder / name))
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--isolated", "--no-cache", "--select", "F", *paths],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:]
