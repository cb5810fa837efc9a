"""The estimator against this project's own GPU measurements of its generated train.py.

benchmarks/gpu_calibration.py records, on a lent GPU, the generated script's
torch.cuda.max_memory_allocated() with the estimator's inputs for that run; every recorded
measurement must be within 10% of today's estimate (recomputed here, not read back). The
published measurements of ../shared/data are tests/test_estimate.py's; this file only reads
benchmarks/results/gpu_calibration-*.json, and is skipped, saying so, while there is none.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_calibration

RESULTS = ROOT / "benchmarks" / "results"
TOLERANCE = 0.10
RECORDS = gpu_calibration.measurements(RESULTS)


@pytest.mark.skipif(
    not RECORDS,
    reason=(
        "no GPU measurement recorded yet: run `python3 benchmarks/gpu_calibration.py` on a GPU "
        "and commit benchmarks/results/gpu_calibration-*.json"
    ),
)
@pytest.mark.parametrize(
    "record",
    RECORDS,
    ids=[f"{r['model']}-{r['method']}-{r['seq_len']}-liger{r['liger']}" for r in RECORDS],
)
def test_estimate_within_ten_percent_of_the_measured_peak(record):
    estimate = gpu_calibration.estimated_allocated_gb(record)
    measured = record["max_memory_allocated_gb"]
    assert abs(estimate - measured) <= TOLERANCE * measured, (
        f"{record['file']}: measured {measured:.2f} GB on {record['device']}, estimated "
        f"{estimate:.2f} GB ({estimate / measured - 1:+.1%})"
    )


def test_a_record_rebuilds_the_shape_the_estimate_used():
    """The harness itself: a recorded shape (JSON) is the estimator's shape again."""
    import json

    from finetune_gen.knowledge.catalog import resolve_model
    from finetune_gen.estimate.formulas import estimate_memory
    from finetune_gen.knowledge.params import count_params
    from finetune_gen.planning.planner import plan_spec
    from finetune_gen.estimate.shape import shape_for_plan
    from finetune_gen.models.spec import parse_spec

    spec = parse_spec(
        {
            "base_model": "Qwen/Qwen2.5-0.5B",
            "task_type": "instruction",
            "dataset": {
                "path": "org/data",
                "format": "alpaca",
                "num_examples": 1000,
                "avg_tokens_per_example": 300,
            },
            "training_config": {"method": "lora", "lora": {"target_modules": ["q_proj", "v_proj"]}},
            "hardware": {"gpus": 1, "gpu_type": "h200"},
        }
    )
    plan, _ = plan_spec(spec)
    shape = dataclasses.replace(shape_for_plan(plan), seq_len=1024, loss_impl="liger")
    record = json.loads(
        json.dumps({"model": "Qwen/Qwen2.5-0.5B", "shape": dataclasses.asdict(shape)})
    )
    assert gpu_calibration.shape_from_record(record) == shape
    arch = resolve_model("Qwen/Qwen2.5-0.5B").architecture
    assert gpu_calibration.estimated_allocated_gb(record) == pytest.approx(
        estimate_memory(arch, count_params(arch), shape).allocated_gb
    )


def test_measurements_skip_failures_and_the_cpu_test_model(tmp_path):
    import json

    report = {
        "environment": {"device": "NVIDIA H200"},
        "measurements": [
            {"model": "Qwen/Qwen2.5-0.5B", "method": "lora", "error": "OutOfMemoryError"},
            {"model": "tiny", "method": "lora", "max_memory_allocated_gb": 0.1},
            {"model": "Qwen/Qwen2.5-0.5B", "method": "lora", "max_memory_allocated_gb": 3.2},
            {"model": "Qwen/Qwen2.5-0.5B", "method": "full", "skipped": "time budget spent"},
        ],
    }
    (tmp_path / "gpu_calibration-20261201T000000Z.json").write_text(json.dumps(report))
    found = gpu_calibration.measurements(tmp_path)
    assert [r["max_memory_allocated_gb"] for r in found] == [3.2]
    assert found[0]["device"] == "NVIDIA H200"
