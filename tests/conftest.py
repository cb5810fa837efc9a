"""Shared fixtures: tiny offline models and datasets, and a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent


def run_cli(
    *args: str, cwd: Path | None = None, check: bool = False, timeout: float | None = None
) -> subprocess.CompletedProcess:
    """Run `finetune-gen` as users do: a real process, real exit code, stdout and stderr."""
    result = subprocess.run(
        [sys.executable, "-m", "finetune_gen", *map(str, args)],
        cwd=cwd or ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
    return result


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """Builds tiny models lazily, once per variant per session: tiny_models("llama", template="chatml")."""
    import tiny

    root = tmp_path_factory.mktemp("tiny-models")
    cache: dict[tuple, Path] = {}

    def get(arch: str = "llama", **variant) -> Path:
        key = (arch, tuple(sorted(variant.items())))
        if key not in cache:
            name = "-".join([arch] + [f"{k}_{v}" for k, v in sorted(variant.items())])
            cache[key] = tiny.build_model(root / name, arch=arch, **variant)
        return cache[key]

    return get
