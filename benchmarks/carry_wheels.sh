#!/usr/bin/env bash
# Wheels for a GPU machine that has no network: download them here, install them there.
#
#   here (a package index is reachable), from the repository root:
#       bash benchmarks/carry_wheels.sh download [DIR]      # DIR: benchmarks/wheels (git-ignored)
#   on the GPU machine (no network), from the repository root:
#       bash benchmarks/carry_wheels.sh install [DIR]
#       python3 benchmarks/gpu_calibration.py
#
# `download` pins what this virtual environment runs (pip freeze: transformers, peft, trl,
# datasets, accelerate, bitsandbytes, the generator's own dependencies...) plus liger-kernel,
# for the GPU machine's Python (PYVER, default this one's) on manylinux x86_64, each with
# --no-deps so nothing else is pulled in. It never downloads torch, triton or the nvidia-*
# CUDA libraries: the CUDA torch wheels are several GB, far beyond what a device run carries
# (64 MiB in all); use the GPU machine's own torch (the script prints its version), or fetch
# the CUDA build matching its driver on a machine with the space and carry it separately.
# bitsandbytes' wheel alone is tens of MB: when DIR is over the carry limit, split it over two
# runs (`install` installs whatever DIR holds and can be repeated).
#
# ONLY="transformers peft" limits the download to those packages and their dependencies
# (what the GPU machine lacks). With the device tool: run(command="bash benchmarks/carry_wheels.sh install && python3
# benchmarks/gpu_calibration.py", carry=["benchmarks/wheels"]).
set -euo pipefail

mode="${1:-}"
dir="${2:-benchmarks/wheels}"
here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here"
# Never carried: the multi-GB CUDA stack, the project itself, and packaging tools.
skip='^(torch|triton|nvidia-|finetune-gen|finetune_gen|pip|setuptools|wheel)([=@ ]|$)'

case "$mode" in
download)
    pyver="${PYVER:-$(python3 -c 'import sys; print(f"{sys.version_info.major}{sys.version_info.minor}")')}"
    mkdir -p "$dir"
    # The installed closure of what the generator and its generated scripts import (pyproject's
    # dependencies and the `train` extra), at this environment's versions, minus $skip.
    python3 - "$skip" "${ONLY:-}" > "$dir/requirements.txt" <<'PY'
import re, sys
from importlib.metadata import PackageNotFoundError, distribution
from packaging.requirements import Requirement

skip = re.compile(sys.argv[1], re.I)
top = sys.argv[2].split() or [
    "jinja2", "pydantic", "click", "black", "PyYAML", "rich", "datasketch", "transformers",
    "peft", "trl", "datasets", "accelerate", "bitsandbytes", "tensorboard", "matplotlib",
    "rouge-score",
]
seen, todo = {}, list(top)
while todo:
    name = todo.pop()
    key = name.lower().replace("_", "-")
    if key in seen or skip.match(key + "=="):
        continue
    try:
        dist = distribution(name)
    except PackageNotFoundError:
        continue
    seen[key] = f"{dist.metadata['Name']}=={dist.version}"
    for text in dist.requires or []:
        req = Requirement(text)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            todo.append(req.name)
print("\n".join(sorted(seen.values())))
print("liger-kernel")
PY
    # one package at a time: a package without a wheel for the target is reported, not fatal
    while read -r requirement; do
        python3 -m pip download --quiet --no-deps --only-binary=:all: \
            --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 --platform any \
            --python-version "$pyver" --implementation cp -d "$dir" "$requirement" \
            || echo "no wheel for $requirement (python $pyver): the GPU machine must have it" >&2
    done < "$dir/requirements.txt"
    du -sh "$dir"
    ;;
install)
    test -d "$dir" || { echo "$dir: no wheels (run 'download' where an index is reachable)" >&2; exit 2; }
    python3 -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda)' \
        || { echo "no torch on this machine: carry a CUDA torch wheel for its driver" >&2; exit 2; }
    # Every wheel in DIR, without touching an index; what is already installed at that
    # version is left alone; dependencies must be in DIR or installed already.
    python3 -m pip install --no-index --find-links "$dir" --no-deps "$dir"/*.whl
    python3 -m pip check || echo "pip check: see above (missing dependencies must be carried too)" >&2
    ;;
*)
    sed -n '2,20p' "$0"
    exit 2
    ;;
esac
