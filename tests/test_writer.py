"""Run-folder writes are all or nothing, follow no links, and know which files are theirs."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import ROOT, run_cli
from finetune_gen.files import write as writer
from finetune_gen.errors import SpecError
from finetune_gen.files.write import MANIFEST, write_run_folder

FILES = {"train.py": "print('new')\n", "launch.sh": "#!/bin/sh\necho new\n", "README.md": "# new\n"}
OLD = {"train.py": "print('old')\n", "launch.sh": "#!/bin/sh\necho old\n", "ds_zero3.json": "{}\n"}
SPEC = ROOT / "examples" / "llama-lora-alpaca.yaml"


def snapshot(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def siblings(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir() if p.name.startswith("."))


def test_writes_every_file_and_a_manifest_of_their_hashes(tmp_path):
    out = tmp_path / "run"
    report = write_run_folder(FILES, out, force=False)
    assert report.written == sorted(FILES)
    assert {k: v.decode() for k, v in snapshot(out).items() if k != MANIFEST} == FILES
    manifest = json.loads((out / MANIFEST).read_text())
    for name, text in FILES.items():
        assert manifest["files"][name] == hashlib.sha256(text.encode()).hexdigest()
    assert os.access(out / "launch.sh", os.X_OK)
    assert siblings(out) == []  # no temporary folder left


def test_refuses_a_non_empty_folder_without_force(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(SpecError, match="--force"):
        write_run_folder(FILES, out, force=False)


def test_force_keeps_other_files_and_removes_stale_generated_ones(tmp_path):
    out = tmp_path / "run"
    write_run_folder(OLD, out, force=False)
    (out / "notes.txt").write_text("mine")
    (out / "outputs").mkdir()
    (out / "outputs" / "checkpoint-1").write_text("weights")
    report = write_run_folder(FILES, out, force=True)
    assert report.removed_stale == ["ds_zero3.json"]  # the old plan's, unedited: removed
    assert not (out / "ds_zero3.json").exists()
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "outputs" / "checkpoint-1").read_text() == "weights"
    assert (out / "train.py").read_text() == FILES["train.py"]


def test_force_keeps_and_lists_a_stale_file_the_user_edited(tmp_path):
    out = tmp_path / "run"
    write_run_folder(OLD, out, force=False)
    (out / "ds_zero3.json").write_text('{"tuned": true}\n')
    report = write_run_folder(FILES, out, force=True)
    assert report.kept_edited == ["ds_zero3.json"]
    assert (out / "ds_zero3.json").read_text() == '{"tuned": true}\n'


def test_a_symlink_in_the_folder_is_never_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "run"
    out.mkdir()
    (out / "train.py").symlink_to(victim)  # where a generated file goes
    (out / "train.py.tmp").symlink_to(victim)  # the old writer's temporary name
    (out / "link-to-victim").symlink_to(victim)
    write_run_folder(FILES, out, force=True)
    assert victim.read_text() == "precious"
    assert not (out / "train.py").is_symlink() and (out / "train.py").read_text() == FILES["train.py"]
    assert (out / "link-to-victim").is_symlink()  # the user's link moved as a link


@pytest.mark.parametrize("failing_call", [1, 2, 3])
def test_a_failed_write_leaves_the_old_folder_as_it_was(tmp_path, monkeypatch, failing_call):
    out = tmp_path / "run"
    write_run_folder(OLD, out, force=False)
    (out / "notes.txt").write_text("mine")
    before = snapshot(out)
    real_open, calls = os.open, []

    def full_disk(path, flags, *args, **kwargs):
        if flags & os.O_CREAT and Path(path).parent.name.startswith(".run"):
            calls.append(path)
            if len(calls) == failing_call:
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(writer.os, "open", full_disk)
    with pytest.raises(SpecError, match="disk is full.*nothing was changed"):
        write_run_folder(FILES, out, force=True)
    assert snapshot(out) == before
    assert siblings(out) == []


def test_a_failure_while_moving_the_users_files_puts_them_back(tmp_path, monkeypatch):
    out = tmp_path / "run"
    write_run_folder(OLD, out, force=False)
    for name in ("a.txt", "b.txt", "c.txt"):
        (out / name).write_text(name)
    before = snapshot(out)
    real_rename, moved = os.rename, []

    def flaky(source, target, **kwargs):
        if Path(source).parent == out:
            moved.append(source)
            if len(moved) == 2:
                raise OSError(errno.EIO, "Input/output error", str(source))
        return real_rename(source, target, **kwargs)

    monkeypatch.setattr(writer.os, "rename", flaky)
    with pytest.raises(SpecError, match="Input/output error"):
        write_run_folder(FILES, out, force=True)
    assert snapshot(out) == before
    assert siblings(out) == []


KILLER = textwrap.dedent(
    """
    import os, shutil, sys
    from pathlib import Path
    sys.path.insert(0, {root!r})
    from finetune_gen.files import write as writer
    calls = []
    module = shutil if {call!r} == "rmtree" else os
    real = getattr(module, {call!r})
    def die(*args, **kwargs):
        calls.append(args)
        if len(calls) == {after}:
            os._exit(9)  # a kill: no cleanup runs
        return real(*args, **kwargs)
    setattr(getattr(writer, module.__name__), {call!r}, die)
    files = {{"train.py": "new\\n", "launch.sh": "new\\n", "README.md": "new\\n"}}
    writer.write_run_folder(files, {out!r}, force=True)
    """
)


@pytest.mark.parametrize("call,after", [("open", 1), ("open", 3), ("rename", 1), ("rename", 2), ("rmtree", 1)])
def test_a_killed_run_leaves_old_or_new_and_the_next_run_recovers(tmp_path, call, after):
    out = tmp_path / "run"
    write_run_folder(OLD, out, force=False)
    for name in ("a.txt", "b.txt"):
        (out / name).write_text(name)
    old = snapshot(out)
    script = KILLER.format(root=str(ROOT), call=call, after=after, out=str(out))
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert killed.returncode == 9, killed.stderr
    # What a user finds right after the kill: the old folder, or the complete new one, and the
    # user's files either in it or (mid-move) beside it, where the next run takes them back.
    writer.recover_interrupted(out)
    state = snapshot(out)
    complete_new = {name: state.get(name) for name in ("train.py", "launch.sh", "README.md")} == {
        name: b"new\n" for name in ("train.py", "launch.sh", "README.md")
    }
    assert state == old or (complete_new and state["a.txt"] == b"a.txt" and state["b.txt"] == b"b.txt")
    assert siblings(out) == []
    # And a normal rerun completes.
    write_run_folder(FILES, out, force=True)
    assert (out / "train.py").read_text() == FILES["train.py"]
    assert (out / "a.txt").read_text() == "a.txt"


@pytest.mark.parametrize(
    "setup,message",
    [
        ("empty", "path is empty"),
        ("file", "exists and is not a folder"),
        ("file-parent", "a parent of this path is a file"),
        ("dangling", "dangling"),
        ("loop", "symlink loop"),
        ("folder-in-the-way", "launch.sh is a folder there"),
    ],
)
def test_unwritable_destinations_are_clear_errors(tmp_path, setup, message):
    out: Path | str = tmp_path / "run"
    if setup == "empty":
        out = ""
    elif setup == "file":
        Path(out).write_text("x")
    elif setup == "file-parent":
        (tmp_path / "f").write_text("x")
        out = tmp_path / "f" / "run"
    elif setup == "dangling":
        Path(out).symlink_to(tmp_path / "nowhere")
    elif setup == "loop":
        Path(out).symlink_to(tmp_path / "run2")
        (tmp_path / "run2").symlink_to(tmp_path / "run")
    elif setup == "folder-in-the-way":
        (Path(out) / "launch.sh").mkdir(parents=True)
        (Path(out) / "launch.sh" / "mine.txt").write_text("mine")
    with pytest.raises(SpecError, match=message):
        write_run_folder(FILES, out, force=True)
    if setup == "folder-in-the-way":
        assert (Path(out) / "launch.sh" / "mine.txt").read_text() == "mine"


def test_read_only_destination_is_a_clear_error(tmp_path, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path))

    monkeypatch.setattr(writer.tempfile, "mkdtemp", read_only)
    with pytest.raises(SpecError, match="read-only file system"):
        write_run_folder(FILES, tmp_path / "run", force=False)


def test_the_two_rename_fallback_also_swaps(tmp_path, monkeypatch):
    monkeypatch.setattr(writer, "_renameat2_exchange", lambda a, b: False)
    out = tmp_path / "run"
    write_run_folder(OLD, out, force=False)
    (out / "notes.txt").write_text("mine")
    write_run_folder(FILES, out, force=True)
    assert (out / "train.py").read_text() == FILES["train.py"]
    assert (out / "notes.txt").read_text() == "mine"
    assert siblings(out) == []


def test_cli_reports_removed_files_after_a_plan_change(tmp_path):
    data = ROOT / "examples" / "data" / "alpaca_sample.jsonl"
    spec = tmp_path / "spec.yaml"
    common = f"base_model: meta-llama/Llama-3.1-8B\ntask_type: instruction\ndataset: {{path: {data}, format: alpaca}}\n"
    spec.write_text(
        common + "training_config: {method: lora, distributed: deepspeed_zero3}\n"
        "hardware: {gpus: 2, gpu_type: rtx_4090}\n"
    )
    first = run_cli("generate", spec, "-o", tmp_path / "run")
    assert first.returncode == 0, first.stderr
    assert (tmp_path / "run" / "ds_zero3.json").exists()
    spec.write_text(common + "training_config: {method: lora}\nhardware: {gpus: 1, gpu_type: rtx_4090}\n")
    second = run_cli("generate", spec, "-o", tmp_path / "run", "--force")
    assert second.returncode == 0, second.stderr
    assert "Removed files of the previous plan: accelerate.yaml, ds_zero3.json" in second.stdout
    assert not (tmp_path / "run" / "ds_zero3.json").exists()


def test_cli_empty_output_path_is_refused(tmp_path):
    result = run_cli("generate", SPEC, "-o", "", cwd=tmp_path)
    assert result.returncode == 2 and "path is empty" in result.stderr
    assert list(tmp_path.iterdir()) == []
