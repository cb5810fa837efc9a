"""Spec strings are data, never code: a property test over every string a spec can carry.

For each example, hostile strings go into every field that reaches a generated file (the model
folder's name, config.json strings and chat template, the dataset id, column names, the output
folder, the run name, LoRA target names, the spec file's name). The same spec with plain values
is generated beside it, and:

- every ``.py`` parses, and its AST with string constants blanked equals the plain one's;
- ``launch.sh`` passes ``bash -n`` and, run with stub python/torchrun/accelerate on PATH, runs
  exactly one command and creates nothing;
- config.yaml and every JSON file load, and hold each value exactly;
- Markdown, YAML, shell and text files have the plain generation's lines: a value cannot add a
  line, start one, or add a line to a code block.

CI runs 100 examples (about 2 minutes); `FINETUNE_GEN_FUZZ_EXAMPLES=10000 python -m pytest
tests/test_injection.py` is the long mode (README, reliability section).
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from finetune_gen.api import generate

EXAMPLES = int(os.environ.get("FINETUNE_GEN_FUZZ_EXAMPLES", "100"))

FRAGMENTS = [
    '"""', "'''", '"', "'", "\\", "\\N{", "\\x", "\\u12", "\n", "\r\n", "\r", "\t", "\x0b", "\x0c",
    "\x1b[31m", "\x7f", "\x85", "\x9b", "\u2028", "\u2029", "\ufeff", "\u200b", "\u202e",
    "{{ 7*7 }}", "{% if %}", "{#", "$(touch pwned)", "`touch pwned`", "; touch pwned", "&&",
    "|", "#", "%(prog)s", "%s", "%", "---", "- ", "* ", "```", "<script>", "]]", "${HOME}",
    "\\n", "import os; os.system('touch pwned')", "\x00"[:0], "😀", "é", "\U0001f600",
]
text = st.lists(
    st.one_of(
        st.sampled_from(FRAGMENTS),
        st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), max_size=8),
    ),
    min_size=1,
    max_size=12,
).map("".join)
# A file or folder name: no "/" or NUL, at most 255 bytes, not "." or "..".
name = text.map(lambda s: s.replace("/", "_")).filter(
    lambda s: s.strip(" ") not in ("", ".", "..") and len(s.encode()) <= 200
)
long_text = st.one_of(text, text.map(lambda s: (s * 400)[:3000]))

PLAIN = {
    "model": "plainmodel",
    "spec": "plainspec",
    "dataset": "plaindata",
    "prompt": "plainprompt",
    "response": "plainresponse",
    "output_dir": "plainoutput",
    "run_name": "plainrun",
    "target": "plaintarget",
    "dtype": "plaindtype",
    "template": "plaintemplate",
}


def write_case(folder: Path, values: dict[str, str]) -> Path:
    """A spec, its model folder and the paths, from ``values``; returns the spec path."""
    folder.mkdir(parents=True)
    model = folder / values["model"]
    model.mkdir()
    config = {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM", values["dtype"]],
        "torch_dtype": values["dtype"],
        "_name_or_path": values["model"],
        "hidden_size": 256,
        "intermediate_size": 512,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "num_hidden_layers": 2,
        "vocab_size": 1024,
        "max_position_embeddings": 4096,
    }
    (model / "config.json").write_text(json.dumps(config), encoding="utf-8")
    (model / "tokenizer_config.json").write_text(
        json.dumps({"chat_template": values["template"] + "{{ messages }}"}), encoding="utf-8"
    )
    dataset = "org/" + values["dataset"]
    if dataset.lower().endswith((".json", ".jsonl", ".csv", ".parquet")):
        dataset += "x"  # a hub id: local-looking names must exist
    spec = {
        "base_model": "./" + values["model"],
        "task_type": "instruction",
        "dataset": {
            "path": dataset,
            "format": "custom",
            "columns": {"prompt": values["prompt"], "response": values["response"]},
            "num_examples": 1000,
            "avg_tokens_per_example": 200,
        },
        "training_config": {
            "method": "lora",
            "lora": {"target_modules": [values["target"] + ".q_proj", "v_proj"]},
        },
        "hardware": {"gpus": 1, "vram_per_gpu": "24GB"},
        "output_dir": values["output_dir"],
        "run_name": values["run_name"],
    }
    path = folder / (values["spec"] + ".yaml")
    text = yaml.safe_dump(spec, allow_unicode=False, width=10**6)  # escapes what YAML cannot hold
    assert yaml.safe_load(text) == spec
    path.write_text(text, encoding="utf-8")
    return path


def blank_strings(tree: ast.AST) -> str:
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            node.value = ""
        if isinstance(node, ast.JoinedStr):  # f-strings: keep the expressions, blank the text
            node.values = [v for v in node.values if not isinstance(v, ast.Constant)]
    return ast.dump(tree)


def string_leaves(value) -> set[str]:
    if isinstance(value, str):
        return {value}
    if isinstance(value, dict):
        return set().union(*(string_leaves(k) | string_leaves(v) for k, v in value.items()))
    if isinstance(value, list):
        return set().union(set(), *(string_leaves(v) for v in value))
    return set()


def stub_bin(folder: Path, log: Path) -> Path:
    stubs = folder / "stub-bin"
    stubs.mkdir()
    for program in ("python", "python3", "torchrun", "accelerate", "deepspeed"):
        stub = stubs / program
        stub.write_text(f'#!/bin/sh\necho "{program} $*" >> "{log}"\n')
        stub.chmod(0o755)
    return stubs


def run_launch(files: dict[str, str], work: Path) -> tuple[list[str], list[str]]:
    """launch.sh in a folder of its own with stubs on PATH: (commands run, files created)."""
    run = work / "launch"
    run.mkdir()
    (run / "launch.sh").write_text(files["launch.sh"], encoding="utf-8")
    log = work / "commands.log"
    stubs = stub_bin(work, log)
    env = {"PATH": f"{stubs}:/usr/bin:/bin", "HOME": str(work)}
    check = subprocess.run(["bash", "-n", str(run / "launch.sh")], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    subprocess.run(["bash", str(run / "launch.sh")], cwd=run, env=env, capture_output=True, timeout=30)
    commands = log.read_text().splitlines() if log.exists() else []
    created = sorted(p.name for p in run.iterdir() if p.name != "launch.sh")
    return commands, created


_PLAIN_FILES: dict[str, str] = {}


def plain_files(tmp: Path) -> dict[str, str]:
    """The plain generation, made once: every example has the same layout of folders."""
    if not _PLAIN_FILES:
        spec = write_case(tmp / "plain", PLAIN)
        _PLAIN_FILES.update(generate(spec, out_dir=tmp / "plain" / "run").files)
    return _PLAIN_FILES


def compare(tmp: Path, values: dict[str, str]) -> None:
    plain = plain_files(tmp)
    hostile_spec = write_case(tmp / "hostile", values)
    hostile = generate(hostile_spec, out_dir=tmp / "hostile" / "run").files
    assert sorted(plain) == sorted(hostile)

    for file, text in hostile.items():
        if file.endswith(".py"):
            tree = ast.parse(text, filename=file)  # a SyntaxError fails the example
            assert blank_strings(tree) == blank_strings(ast.parse(plain[file])), file
        else:
            got, want = text.splitlines(), plain[file].splitlines()
            assert len(got) == len(want), f"{file}: a value added or removed a line"
            for line, reference in zip(got, want):
                if reference:  # a value never starts a line
                    assert line[:1] == reference[:1], f"{file}: {line[:80]!r}"
        if file.endswith(".json"):
            json.loads(text)
    loaded = yaml.safe_load(hostile["config.yaml"])
    leaves, plain_leaves = string_leaves(loaded), string_leaves(yaml.safe_load(plain["config.yaml"]))
    for key in ("output_dir", "prompt", "response", "dataset", "target"):
        if any(PLAIN[key] in leaf for leaf in plain_leaves):
            assert any(values[key] in leaf for leaf in leaves), f"config.yaml lost {key}"
    for file in ("eval_plan.json", "resources.json"):
        json.loads(hostile[file])

    commands, created = run_launch(hostile, tmp / "hostile")
    assert len(commands) == 1 and commands[0].startswith("python train.py"), commands
    assert created == [], created


values_strategy = st.fixed_dictionaries(
    {
        "model": name,
        "spec": name,
        "dataset": text,
        "prompt": long_text,
        "response": text,
        "output_dir": long_text.filter(lambda s: s.strip()),
        "run_name": text.filter(lambda s: s.strip()),
        "target": text.map(lambda s: s.replace(".", "_")),
        "dtype": text,
        "template": long_text,
    }
)


@pytest.mark.filterwarnings("ignore")
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(values=values_strategy)
def test_hostile_strings_stay_data(values, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("inject")
    try:
        compare(tmp, values)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


KNOWN_ATTACKS = {
    "docstring breakout": 'x"""\nimport os; os.system("touch pwned")\n"""',
    "windows path": "C:\\Users\\me\\runs",
    "named escape": "\\N{",
    "hex escape": "\\x",
    "C1 controls": "a\x85b\x9bc\x7f",
    "line separators": "a\u2028b\u2029c",
    "argparse format": "%(prog)s %d 100%",
    "jinja": "{{ 7*7 }}{% raw %}",
    "shell": "$(touch pwned)`touch pwned`; touch pwned",
    "newline in spec name": "spec\necho pwned",
}


@pytest.mark.parametrize("attack", sorted(KNOWN_ATTACKS))
def test_known_attacks_stay_data(attack, tmp_path):
    value = KNOWN_ATTACKS[attack]
    values = {key: value for key in PLAIN}
    values["model"] = values["spec"] = value.replace("/", "_")
    values["target"] = value.replace(".", "_")
    compare(tmp_path, values)


@pytest.mark.slow
def test_help_of_every_script_runs_no_value(tmp_path):
    """`python train.py --help` (and eval.py, probe.py) print the values and run none of them."""
    import sys

    value = 'x"""\nimport os; open("PWNED", "w")\n"""\\N{ %(prog)s 100% \u2028'
    values = {key: value for key in PLAIN}
    values["model"] = values["spec"] = value.replace("/", "_")
    values["target"] = value.replace(".", "_")
    spec = write_case(tmp_path / "case", values)
    out = tmp_path / "case" / "run"
    files = generate(spec, out_dir=out).files
    out.mkdir()
    for file, body in files.items():
        (out / file).write_text(body, encoding="utf-8")
    for script in ("train.py", "eval.py", "probe.py"):
        result = subprocess.run(
            [sys.executable, script, "--help"], cwd=out, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, result.stderr[-2000:]
        assert "usage:" in result.stdout
    assert not list(tmp_path.rglob("PWNED"))
