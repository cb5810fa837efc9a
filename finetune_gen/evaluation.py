"""The evaluation plan (the output's ``evaluation_plan``): what to measure and how.

Perplexity on the held-out split always; task metrics by task type; benchmark commands for
general ability (lm-evaluation-harness, the usual tool for MMLU and friends) so regressions
from catastrophic forgetting show; and a contamination check of the eval split against the
training split.
"""

from __future__ import annotations

from typing import Any

from .plan import Plan
from .quoting import shell_word

TASK_METRICS = {
    "instruction": ["eval_loss", "perplexity", "exact_match", "token_f1"],
    "chat": ["eval_loss", "perplexity", "exact_match", "token_f1"],
    "classification": ["eval_loss", "accuracy", "macro_f1"],
    "generation": ["eval_loss", "perplexity"],
}
BENCHMARKS = {
    "instruction": ["mmlu", "hellaswag", "arc_challenge", "truthfulqa_mc2"],
    "chat": ["mmlu", "hellaswag", "arc_challenge", "truthfulqa_mc2"],
    "classification": [],
    "generation": ["mmlu", "hellaswag", "arc_challenge"],
}


def evaluation_plan(plan: Plan) -> dict[str, Any]:
    # Spec strings reach shell commands quoted, never as shell syntax.
    out = shell_word(plan.output_dir)
    adapter_args = f"pretrained={plan.base_model},peft={plan.output_dir}"
    model_args = shell_word(adapter_args if plan.is_peft else f"pretrained={plan.output_dir}")
    base_args = shell_word(f"pretrained={plan.base_model}")
    benchmarks = BENCHMARKS[plan.task_type]
    commands = [
        f"python eval.py --model-dir {out}",
        f"python eval.py --model-dir {out} --contamination",
    ]
    if benchmarks:
        tasks = ",".join(benchmarks)
        commands.append(
            f"lm_eval --model hf --model_args {model_args} --tasks {tasks} "
            f"--batch_size auto --output_path {shell_word(plan.output_dir + '/benchmarks')}"
        )
        commands.append(
            f"lm_eval --model hf --model_args {base_args} --tasks {tasks} "
            f"--batch_size auto --output_path {shell_word(plan.output_dir + '/benchmarks-base')}"
        )
    return {
        "model_dir": plan.output_dir,
        "eval_split": plan.dataset.eval_split,
        "metrics": TASK_METRICS[plan.task_type],
        "benchmarks": benchmarks,
        "commands": commands,
        "contamination_check": {
            "method": "13-gram overlap between each eval example and the training split",
            "ngram": 13,
            "threshold": 0.5,
            "command": f"python eval.py --model-dir {out} --contamination",
        },
        "human_evaluation": (
            "Sample 50 eval prompts, generate with the fine-tuned and the base model, and have a "
            "reviewer pick the better answer blind; report the win rate."
            if plan.task_type in ("instruction", "chat")
            else "Review 50 misclassified or generated examples by hand for systematic errors."
        ),
        "success_criteria": [
            "eval_loss falls below its value at the first evaluation",
            "benchmark scores within 2 points of the base model (no catastrophic forgetting)"
            if benchmarks
            else "accuracy and macro-F1 above the majority-class baseline",
            "contamination: no eval example above the overlap threshold",
        ],
    }
