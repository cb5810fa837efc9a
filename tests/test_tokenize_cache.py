"""Tokenization in the generated train.py is cached across processes and runs.

datasets' own cache key hashes the map function, which differs from process to process, so
before this every run (and every rank of a distributed launch) tokenized the whole dataset
again. The script now keys the cache on the rows, its own text and the tokenizer; under a
distributed launch the node's processes take turns, so one tokenizes and the others read.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from chat_templates import FAMILIES
from smoke import generate, write_spec
from test_chat_templates import conversations, write_conversations

pytest.importorskip("transformers")

PROBE = r"""
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("generated_train", sys.argv[1])
recipe = importlib.util.module_from_spec(spec)
spec.loader.exec_module(recipe)
tokenizer = recipe.setup_tokenizer()
train_rows, _ = recipe.load_rows()
if sys.argv[2:] == ["in-memory"]:  # rows held in memory (as rows read with the json module are)
    from datasets import Dataset
    train_rows = Dataset.from_list(train_rows.to_list())
encoded = recipe.encode_rows(tokenizer, train_rows, "train")
print("RESULT " + json.dumps({
    "fingerprint": encoded._fingerprint,
    "files": [f["filename"] for f in encoded.cache_files],
    "labels": [list(labels) for labels in encoded["labels"]],
}))
"""


def start(run, cache, world_size=None, where="file"):
    env = dict(os.environ, HF_DATASETS_CACHE=str(cache), HF_HUB_OFFLINE="1")
    env.pop("WORLD_SIZE", None)
    if world_size:
        env["WORLD_SIZE"] = str(world_size)
    return subprocess.Popen(
        [sys.executable, str(run.parent / "probe.py"), str(run / "train.py"), where],
        cwd=run,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process):
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, (out[-2000:], err[-3000:])
    (line,) = [line for line in out.splitlines() if line.startswith("RESULT ")]
    return json.loads(line[len("RESULT ") :]), "tokenizing the train split" in err


def make_run(tmp_path, tiny_models):
    (tmp_path / "probe.py").write_text(PROBE)
    data = write_conversations(tmp_path / "chat.jsonl", conversations(30))
    model = tiny_models("llama", family="chatml")
    spec = write_spec(tmp_path, model, data, task_type="chat", format="chatml")
    return generate(spec, tmp_path / "run")


@pytest.mark.parametrize("where", ["file", "in-memory"])
def test_a_second_run_reads_the_first_runs_tokenization(tmp_path, tiny_models, where):
    assert FAMILIES["chatml"].template
    run, cache = make_run(tmp_path, tiny_models), tmp_path / "cache"
    first, tokenized = finish(start(run, cache, where=where))
    assert tokenized and first["files"], "the first run tokenizes and writes a cache file"
    in_memory = all(os.sep + "finetune_gen" + os.sep in path for path in first["files"])
    assert in_memory == (where == "in-memory")
    written = {path: os.path.getmtime(path) for path in first["files"]}
    second, tokenized_again = finish(start(run, cache, where=where))
    assert not tokenized_again, "the second run must read the cache, not tokenize again"
    assert second["fingerprint"] == first["fingerprint"]
    assert second["files"] == first["files"]
    assert {path: os.path.getmtime(path) for path in second["files"]} == written
    assert second["labels"] == first["labels"]


def test_distributed_processes_tokenize_once(tmp_path, tiny_models):
    run, cache = make_run(tmp_path, tiny_models), tmp_path / "cache"
    ranks = [start(run, cache, world_size=2) for _ in range(2)]
    results = [finish(process) for process in ranks]
    assert sorted(tokenized for _, tokenized in results) == [False, True]
    assert results[0][0]["labels"] == results[1][0]["labels"]
    assert results[0][0]["fingerprint"] == results[1][0]["fingerprint"]


def test_a_changed_script_tokenizes_again(tmp_path, tiny_models):
    run, cache = make_run(tmp_path, tiny_models), tmp_path / "cache"
    first, _ = finish(start(run, cache))
    script = run / "train.py"
    script.write_text(script.read_text().replace("MAX_SEQ_LENGTH = ", "MAX_SEQ_LENGTH = 8 + ", 1))
    second, tokenized = finish(start(run, cache))
    assert tokenized and second["fingerprint"] != first["fingerprint"]
