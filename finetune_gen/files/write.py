"""Write a run folder all at once: a kill at any moment leaves the old folder or the new one.

Everything is rendered in memory first. The files go into a fresh temporary sibling folder
(``.NAME.finetune-gen-XXXX``, created by mkdtemp, so no name inside it can be planted), are
flushed to disk, and the folder is then moved into place with one rename; when a folder is
already there (``--force``), the two are exchanged atomically (Linux ``renameat2``), with a
two-rename fallback elsewhere.

``--force`` keeps what is not ours. A manifest (``.finetune-gen.json``) records the files
finetune-gen wrote and their hashes, so a later ``--force``:
- replaces the files the new plan produces;
- removes files an earlier generation wrote that the new plan does not produce (say
  ``ds_zero3.json`` after a switch to one GPU), unless they were edited since: those are kept
  and listed;
- moves every other entry (your notes, checkpoints in ``outputs/``) into the new folder.
While entries move, a journal in the temporary folder lists them, and the next run moves back
whatever an interrupted run left there. Symlinks inside the run folder are moved as links,
never followed.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from finetune_gen import __version__
from finetune_gen.errors import SpecError

MANIFEST = ".finetune-gen.json"
JOURNAL = ".finetune-gen-moving"
_TEMP_MARK = ".finetune-gen-"


@dataclass
class WriteReport:
    folder: Path
    written: list[str]
    removed_stale: list[str] = field(default_factory=list)
    kept_edited: list[str] = field(default_factory=list)
    kept_other: list[str] = field(default_factory=list)


def manifest_text(files: dict[str, str]) -> str:
    hashes = {name: _sha256(text.encode("utf-8")) for name, text in sorted(files.items())}
    return (
        json.dumps({"generator": f"finetune-gen {__version__}", "files": hashes}, indent=2) + "\n"
    )


def write_run_folder(files: dict[str, str], out_dir: str | Path, *, force: bool) -> WriteReport:
    """Write ``files`` (relative path -> text) as the folder ``out_dir``, atomically."""
    out = _destination(out_dir)
    _check_names(files)
    recover_interrupted(out)
    existing = _is_non_empty_folder(out)
    if existing and not force:
        raise SpecError(
            f"-o {out_dir}: folder is not empty; pass --force to overwrite the generated files in it"
        )
    if existing:
        _refuse_folders_in_the_way(out, files)
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise SpecError(f"-o {out_dir}: a parent of this path is a file, not a folder") from None
    except OSError as error:
        raise _write_error(out_dir, error) from None

    temporary: Path | None = None
    try:
        temporary = Path(tempfile.mkdtemp(prefix=f".{out.name}{_TEMP_MARK}", dir=parent))
        _write_files(temporary, {**files, MANIFEST: manifest_text(files)})
        report = WriteReport(out, sorted(files))
        if existing:
            _carry_over(out, temporary, files, report)
            _exchange(temporary, out)  # `temporary` now holds the old folder
            (out / JOURNAL).unlink(missing_ok=True)
            shutil.rmtree(temporary, ignore_errors=True)
        else:
            if out.is_dir():
                out.rmdir()  # empty: the new folder takes its place
            os.rename(temporary, out)
        temporary = None
        _fsync_dir(parent)
        return report
    except OSError as error:
        raise _write_error(out_dir, error) from None
    finally:
        if temporary is not None and temporary.exists():
            if existing:
                _move_back(temporary, out)
            shutil.rmtree(temporary, ignore_errors=True)


# ---------------------------------------------------------------- checks


def _destination(out_dir: str | Path) -> Path:
    if str(out_dir).strip() == "":
        raise SpecError("-o: the run folder's path is empty")
    out = Path(out_dir)
    try:
        info = out.lstat()
    except FileNotFoundError:
        return Path(os.path.abspath(out))
    except NotADirectoryError:
        raise SpecError(f"-o {out_dir}: a parent of this path is a file, not a folder") from None
    except OSError as error:
        raise _write_error(out_dir, error) from None
    if stat.S_ISLNK(info.st_mode):
        try:
            target = out.resolve(strict=True)
        except FileNotFoundError:
            raise SpecError(f"-o {out_dir}: is a symlink to nothing (dangling)") from None
        except (RuntimeError, OSError):
            raise SpecError(f"-o {out_dir}: is a symlink loop") from None
        if not target.is_dir():
            raise SpecError(f"-o {out_dir}: exists and is not a folder")
        return target  # the folder the link names is the run folder
    if not stat.S_ISDIR(info.st_mode):
        raise SpecError(f"-o {out_dir}: exists and is not a folder")
    return Path(os.path.abspath(out))


def _check_names(files: dict[str, str]) -> None:
    for name in files:
        parts = Path(name).parts
        if Path(name).is_absolute() or ".." in parts or not parts or name in (MANIFEST, JOURNAL):
            raise ValueError(f"bad run-folder file name {name!r}")  # a bug, never user input


def _is_non_empty_folder(out: Path) -> bool:
    try:
        return out.is_dir() and any(out.iterdir())
    except OSError as error:
        raise _write_error(out, error) from None


def _refuse_folders_in_the_way(out: Path, files: dict[str, str]) -> None:
    """A folder where a generated file goes may hold anything: never replace it."""
    for name in files:
        top = out / Path(name).parts[0]
        if len(Path(name).parts) == 1 and top.is_dir() and not top.is_symlink():
            raise SpecError(
                f"-o {out}: {name} is a folder there, where a generated file goes; "
                "move it away and run again"
            )


def _write_error(out_dir: str | Path, error: OSError) -> SpecError:
    reason = error.strerror or str(error)
    hints = {
        errno.ENOSPC: " (the disk is full)",
        errno.EROFS: " (a read-only file system)",
        errno.EACCES: " (no permission)",
        errno.EDQUOT: " (disk quota exceeded)",
        errno.ELOOP: " (a symlink loop)",
    }
    where = f": {error.filename}" if getattr(error, "filename", None) else ""
    return SpecError(
        f"-o {out_dir}: cannot write the run folder{where}: {reason}{hints.get(error.errno, '')}; "
        "nothing was changed"
    )


# ---------------------------------------------------------------- writing


def _write_files(folder: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        # O_EXCL | O_NOFOLLOW: the folder is new and ours; nothing in it may be a planted link.
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        mode = 0o755 if name.endswith(".sh") else 0o644
        descriptor = os.open(target, flags, mode)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(text.encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(target, mode)  # the umask may have narrowed it
    os.chmod(folder, 0o755)  # mkdtemp makes it 0700
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass  # some file systems cannot sync a directory; the data files are synced
    finally:
        os.close(descriptor)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _old_manifest(out: Path) -> dict[str, str]:
    try:
        data = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
        files = data.get("files", {})
        return {str(k): str(v) for k, v in files.items()} if isinstance(files, dict) else {}
    except (OSError, ValueError, AttributeError):
        return {}


def _carry_over(out: Path, new: Path, files: dict[str, str], report: WriteReport) -> None:
    """Move into ``new`` what the old folder holds that is not ours; sort out stale files."""
    ours = {Path(name).parts[0] for name in files} | {MANIFEST}
    previous = _old_manifest(out)
    moving = []
    for entry in sorted(out.iterdir(), key=lambda p: p.name):
        name = entry.name
        if name in ours:
            continue
        if name in previous and entry.is_file() and not entry.is_symlink():
            if _sha256(entry.read_bytes()) == previous[name]:
                report.removed_stale.append(name)  # stays in the old folder, deleted with it
                continue
            report.kept_edited.append(name)
        else:
            report.kept_other.append(name)
        moving.append(name)
    if not moving:
        return
    journal = new / JOURNAL
    journal.write_text(json.dumps({"from": str(out), "entries": moving}), encoding="utf-8")
    _fsync_dir(new)
    for name in moving:
        os.rename(out / name, new / name)  # same parent folder, so one file system: cheap
    # The journal goes only after the exchange: until then a killed run is undone from it.


def _exchange(new: Path, out: Path) -> None:
    """Swap the two folders in one step where the kernel can; else with two renames."""
    if _renameat2_exchange(new, out):
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}{_TEMP_MARK}old-", dir=out.parent))
    old.rmdir()
    os.rename(out, old)
    os.rename(new, out)
    os.rename(old, new)


def _renameat2_exchange(a: Path, b: Path) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    result = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EPERM):
        return False  # this file system cannot exchange: fall back
    raise OSError(code, os.strerror(code), str(b))


def _move_back(temporary: Path, out: Path) -> None:
    """Return the entries a failed or killed run had moved out of ``out`` (from its journal)."""
    try:
        entries = json.loads((temporary / JOURNAL).read_text(encoding="utf-8")).get("entries", [])
    except (OSError, ValueError, AttributeError):
        return
    for name in entries:
        source = temporary / str(name)
        if (source.exists() or source.is_symlink()) and not (out / name).exists():
            os.rename(source, out / name)


def recover_interrupted(out: Path) -> list[str]:
    """Undo what a killed run left beside ``out``; returns the siblings it cleaned up.

    - ``.NAME.finetune-gen-old-*``: the old folder, moved aside by the two-rename fallback; put
      back when ``out`` is missing.
    - ``.NAME.finetune-gen-*`` with a journal: a new folder that had started taking entries
      from ``out``; they go back.
    - any other such sibling: a half-written new folder, or the old folder after the exchange:
      removed.
    """
    cleaned: list[str] = []
    if not out.parent.is_dir():
        return cleaned
    prefix = glob_escape(f".{out.name}{_TEMP_MARK}")
    for old in sorted(out.parent.glob(prefix + "old-*")):
        if old.is_dir() and not old.is_symlink() and not out.exists():
            os.rename(old, out)
            cleaned.append(old.name)
    for sibling in sorted(out.parent.glob(prefix + "*")):
        if not sibling.is_dir() or sibling.is_symlink():
            continue
        if (sibling / JOURNAL).exists() and out.is_dir():
            _move_back(sibling, out)
        shutil.rmtree(sibling, ignore_errors=True)
        cleaned.append(sibling.name)
    stray = out / JOURNAL  # killed after the exchange, before the journal was removed
    if stray.is_file() and not stray.is_symlink():
        stray.unlink()
    return cleaned


def glob_escape(text: str) -> str:
    return "".join(f"[{ch}]" if ch in "*?[" else ch for ch in text)
