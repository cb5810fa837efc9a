"""What the run folder offers after training: merging, serving, SLURM, and their values.

The files (merge.py, serve.sh, slurm.sbatch) exist only where they make sense for the plan;
the values they print (the merge precision, vLLM's LoRA rank, the SLURM time limit) are
computed here from the plan and the estimate, so the templates only present them.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from finetune_gen.estimate.resources import Resources
from finetune_gen.knowledge.prompts import ALPACA_PROMPT, PROMPT_FORMATS
from finetune_gen.models.plan import Plan
from finetune_gen.variants.methods import MERGEABLE_METHODS, METHODS
from finetune_gen.variants.tasks import TASKS

# peft's merge_and_unload folds these adapters into the base weights (the methods registry).
# vLLM loads plain LoRA adapters (and QLoRA's, which are LoRA over a quantized base) at
# serving time; DoRA, IA3, LoHa and LoKr adapters are served merged.
VLLM_ADAPTER_METHODS = tuple(n for n, m in METHODS.items() if m.served_as_adapter)
# The values `vllm serve --max-lora-rank` accepts (vllm 0.33.0, vllm/config/lora.py
# MaxLoRARanks; the flag list in tests/data/vllm-serve-flags.txt comes from the same wheel).
VLLM_MAX_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
VLLM_VERSION = "0.33.0"
# SLURM's time limit: the estimate plus this margin, at least this many minutes, so a run
# that is slower than estimated is not killed just before it saves.
SLURM_TIME_MARGIN = 1.5
SLURM_MIN_MINUTES = 30
# Bytes per parameter of llama.cpp's Q4_K_M quantization (4.5-5 bits per weight).
GGUF_Q4_K_M_BYTES_PER_PARAM = 0.6

DTYPE_NAMES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def serves(plan: Plan) -> bool:
    """vLLM serves generative models: merged adapters, LoRA adapters, fully trained models."""
    if TASKS[plan.task_type].classifies:
        return False
    return plan.method in MERGEABLE_METHODS or not plan.is_peft


@dataclass(frozen=True)
class AfterTraining:
    """Ready-to-print values for merge.py, serve.sh, slurm.sbatch and the README."""

    merged_dir: str
    merge_dtype: str
    served_model: str
    serve_adapter: bool
    max_lora_rank: int
    tensor_parallel: int
    curl_endpoint: str
    curl_payload: str
    serving_weights_gb: float
    gguf_q4_gb: float
    slurm_time: str
    slurm_job_name: str
    vllm_version: str = VLLM_VERSION
    vllm_lora_ranks: str = ", ".join(map(str, VLLM_MAX_LORA_RANKS))


def merge_dtype(plan: Plan) -> str:
    """The precision of the merged model: the training precision; 16 bits for QLoRA.

    QLoRA trains over 4-bit weights, but merging into them would round the adapter away: the
    base is reloaded in its 16-bit compute dtype and the adapter merged there.
    """
    if plan.quantization is not None:
        compute = plan.quantization.compute_dtype
        return compute if compute in ("bfloat16", "float16") else "bfloat16"
    return DTYPE_NAMES.get(plan.precision, "bfloat16")


def vllm_lora_rank(rank: int) -> int:
    """The smallest --max-lora-rank vLLM accepts that holds this rank."""
    return next((value for value in VLLM_MAX_LORA_RANKS if value >= rank), VLLM_MAX_LORA_RANKS[-1])


def slurm_time_limit(hours: float) -> str:
    """SLURM's --time (D-HH:MM:SS) for an estimated run of `hours`, with a margin."""
    minutes = max(SLURM_MIN_MINUTES, math.ceil(hours * 60 * SLURM_TIME_MARGIN))
    days, rest = divmod(minutes, 24 * 60)
    return f"{days}-{rest // 60:02d}:{rest % 60:02d}:00"


def curl_request(plan: Plan, model: str) -> tuple[str, str]:
    """(endpoint, JSON body) of an example request in the format the model was trained on."""
    if PROMPT_FORMATS[plan.prompt_format].plain_text:
        prompt = ALPACA_PROMPT.format(instruction="Name three primary colours.")
        body: dict[str, Any] = {"model": model, "prompt": prompt, "max_tokens": 128}
        return "/v1/completions", json.dumps(body)
    if plan.task_type == "generation":
        body = {"model": model, "prompt": "Once upon a time", "max_tokens": 128}
        return "/v1/completions", json.dumps(body)
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "Name three primary colours."}],
        "max_tokens": 128,
    }
    return "/v1/chat/completions", json.dumps(body)


def after_training(plan: Plan, resources: Resources) -> AfterTraining:
    served = plan.run_name
    endpoint, payload = curl_request(plan, served)
    weights_bytes = 2 if merge_dtype(plan) != "float32" else 4
    return AfterTraining(
        merged_dir=plan.output_dir.rstrip("/") + "-merged",
        merge_dtype=merge_dtype(plan),
        served_model=served,
        serve_adapter=plan.method in VLLM_ADAPTER_METHODS,
        max_lora_rank=vllm_lora_rank(plan.lora.r if plan.lora else 16),
        tensor_parallel=plan.hardware.gpus,
        curl_endpoint=endpoint,
        curl_payload=payload,
        serving_weights_gb=round(plan.total_params * weights_bytes / 1e9, 1),
        gguf_q4_gb=round(plan.total_params * GGUF_Q4_K_M_BYTES_PER_PARAM / 1e9, 1),
        slurm_time=slurm_time_limit(resources.time.hours),
        # sbatch reads `#SBATCH --job-name=...` up to the first space: a plain name only.
        slurm_job_name=re.sub(r"[^A-Za-z0-9._-]", "_", plan.run_name)[:64] or "finetune",
    )
