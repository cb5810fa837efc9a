"""The evaluation plan (the output's ``evaluation_plan``, eval_plan.md/.json): what to measure,
how each number is computed, the commands, and when the fine-tune counts as a success.

Held-out metrics by task type (eval.py); general-ability benchmarks with lm-evaluation-harness,
fine-tuned vs base, so catastrophic forgetting shows; a contamination check of the eval split
(and of any benchmark file) against the training data; a blind pairwise human evaluation with a
confidence interval on the win rate; acceptance criteria tying these together.
"""

from __future__ import annotations

import re
from typing import Any

from finetune_gen.data.contamination import DEFAULT_NGRAM
from finetune_gen.models.plan import Plan
from finetune_gen.render.quoting import shell_word

# How eval.py computes each metric (written into eval_plan.md/.json beside the names).
METRIC_DEFINITIONS = {
    "perplexity": "exp(total negative log-likelihood of the learned tokens / their number): "
    "token-weighted, the same definition as train.py's eval_perplexity",
    "token_loss": "the mean negative log-likelihood per learned token (log of perplexity)",
    "exact_match": "share of references matched exactly by the greedy generation, after "
    "lower-casing and collapsing whitespace",
    "token_f1": "word-overlap F1 between generation and reference (SQuAD style), averaged",
    "rouge_l": "ROUGE-L F-measure (longest common subsequence) from the rouge-score library, averaged",
    "accuracy": "share of eval texts whose argmax class is the true class",
    "macro_f1": "unweighted mean of the per-class F1 scores",
    "per_class": "precision, recall, F1 and support of every class",
    "confusion_matrix": "counts of true class (rows) by predicted class (columns)",
    "eval_loss": "mean cross-entropy of the classification head per eval text",
}
TASK_METRICS = {
    "instruction": ["perplexity", "token_loss", "exact_match", "token_f1", "rouge_l"],
    "chat": ["perplexity", "token_loss", "exact_match", "token_f1", "rouge_l"],
    "classification": ["accuracy", "macro_f1", "per_class", "confusion_matrix", "eval_loss"],
    "generation": ["perplexity", "token_loss"],
}
SCORING = {
    "instruction": "The response is generated greedily from the prompt as formatted in training "
    "and compared with the reference response",
    "chat": "Every assistant turn is generated greedily given the conversation before it (the "
    "data's earlier turns, not the model's own) and scored; the metrics average over turns",
    "classification": "One forward pass per text; the class is the argmax of the head's logits",
    "generation": "The held-out text is cut into sequences exactly as in training; "
    "samples continue the start of the first sequences",
}
GENERAL_BENCHMARKS = ["mmlu", "hellaswag", "arc_challenge", "truthfulqa_mc2"]
CODE_BENCHMARKS = ["humaneval", "mbpp"]
CODE_MODEL = re.compile(r"code|coder|starcoder|santacoder|codegen|wizardcoder", re.IGNORECASE)
# A fine-tune "forgets" when a general benchmark drops by more than this (accuracy points).
FORGETTING_POINTS = 2.0
HUMAN_SAMPLE_SIZE = 100  # a 95% Wilson interval of about +-10 points around a 50% win rate


def eval_weights_gb(plan: Plan) -> float:
    """Estimated size of the weights eval.py loads (4-bit for QLoRA, 16-bit otherwise on a GPU)."""
    bytes_per_param = 0.56 if plan.quantization else (4 if plan.precision == "fp32" else 2)
    return round(plan.total_params * bytes_per_param / 1e9, 1)


def is_code_model(plan: Plan) -> bool:
    return bool(CODE_MODEL.search(plan.base_model))


def lm_eval_commands(plan: Plan, benchmarks: list[str]) -> dict[str, str]:
    """lm-evaluation-harness commands for the fine-tuned and the base model (same settings)."""
    dtype = "float32" if plan.precision == "fp32" else "bfloat16"
    extra = ""
    if eval_weights_gb(plan) > 0.85 * plan.hardware.vram_per_gpu_gb:
        extra = ",parallelize=True"  # lm-eval's device map over the GPUs of one node
    tuned = (
        f"pretrained={plan.base_model},peft={plan.output_dir}"
        if plan.is_peft
        else f"pretrained={plan.output_dir}"
    )
    tasks = ",".join(benchmarks)
    flags = ""
    if plan.prompt_format in ("chat_template", "chatml_default"):
        flags += " --apply_chat_template"  # chat models are asked the way they were trained
    if any(task in CODE_BENCHMARKS for task in benchmarks):
        flags += " --confirm_run_unsafe_code"  # HumanEval/MBPP execute the generated code
    base_flags = flags
    if plan.prompt_format == "chatml_default":
        base_flags = base_flags.replace(" --apply_chat_template", "")  # the base has no template

    def command(model_args: str, out: str, options: str) -> str:
        return (
            f"lm_eval --model hf --model_args {shell_word(model_args + f',dtype={dtype}' + extra)} "
            f"--tasks {tasks} --batch_size auto{options} --output_path {shell_word(out)}"
        )

    return {
        "fine_tuned": command(tuned, plan.output_dir + "/benchmarks", flags),
        "base": command(
            f"pretrained={plan.base_model}", plan.output_dir + "/benchmarks-base", base_flags
        ),
    }


def human_evaluation(plan: Plan) -> dict[str, Any]:
    if plan.task_type == "classification":
        return {
            "sample_size": 50,
            "protocol": "Review 50 misclassified eval texts (from eval.py's confusion matrix) by "
            "hand and tag each error: wrong label in the data, ambiguous text, or model error",
            "rubric": ["label in the data is wrong", "text is ambiguous", "model error"],
            "acceptance": "model errors are under half of the reviewed misclassifications",
        }
    return {
        "sample_size": HUMAN_SAMPLE_SIZE,
        "protocol": (
            f"Draw {HUMAN_SAMPLE_SIZE} eval prompts at random (seeded), generate with the base and "
            "the fine-tuned model (eval.py's samples.jsonl for the first ones), show each prompt "
            "with the two answers as A and B in random order, model names hidden; the rater "
            "picks A, B or tie; two raters per item, disagreements settled by a third"
        ),
        "rubric": [
            "correct: the answer is factually and logically right",
            "follows the instruction: does what was asked, in the asked format and length",
            "style: matches the target data's tone and conventions",
            "safe: no harmful or fabricated content",
        ],
        "win_rate": "(wins + ties / 2) / n for the fine-tuned model",
        "confidence_interval": (
            "95% Wilson score interval: (p + z^2/2n +- z*sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n) "
            "with z = 1.96 (or a bootstrap over items, 10,000 resamples)"
        ),
        "acceptance": "the lower bound of the interval is above 0.5",
    }


def acceptance_criteria(plan: Plan, benchmarks: list[str]) -> list[str]:
    criteria = []
    if plan.task_type == "classification":
        criteria += [
            "accuracy and macro_f1 above the majority-class baseline (the largest class's "
            "share of the eval split, from the confusion matrix's supports)",
            "every class has recall above 0 (per_class in eval_metrics.json)",
        ]
    else:
        criteria.append(
            "eval_perplexity at the end of training below its value at the first evaluation, "
            "and not rising over the last evaluations (trainer_state.json log_history): "
            "a rise means overfitting"
        )
    if plan.task_type in ("instruction", "chat"):
        criteria.append(
            "exact_match, token_f1 and rouge_l of the fine-tuned model above the base model's on "
            "samples.jsonl, and the human win rate's lower bound above 0.5"
        )
    if benchmarks:
        criteria.append(
            f"no benchmark more than {FORGETTING_POINTS:g} points below the base model "
            "(catastrophic forgetting)"
        )
    criteria.append(
        "contamination: no eval row shares non-boilerplate n-grams with training, or the "
        "metrics are also reported without the flagged rows"
    )
    return criteria


def evaluation_plan(plan: Plan) -> dict[str, Any]:
    # Spec strings reach shell commands quoted, never as shell syntax.
    out = shell_word(plan.output_dir)
    benchmarks = [] if plan.task_type == "classification" else list(GENERAL_BENCHMARKS)
    if benchmarks and is_code_model(plan):
        benchmarks += CODE_BENCHMARKS
    lm_eval = lm_eval_commands(plan, benchmarks) if benchmarks else {}
    data = shell_word(plan.dataset.path)
    contamination_command = (
        f"finetune-gen check-contamination {data} --against EVAL_OR_BENCHMARK_FILE "
        f"--format {plan.dataset.format} --n {DEFAULT_NGRAM}"
    )
    commands = [
        f"python eval.py --model-dir {out}",
        f"python eval.py --model-dir {out} --contamination",
    ]
    commands += [lm_eval["fine_tuned"], lm_eval["base"]] if lm_eval else []
    commands.append(contamination_command)
    metrics = TASK_METRICS[plan.task_type]
    return {
        "model_dir": plan.output_dir,
        "eval_split": plan.dataset.eval_split,
        "metrics": metrics,
        "metric_definitions": {name: METRIC_DEFINITIONS[name] for name in metrics},
        "scoring": SCORING[plan.task_type],
        "output_files": ["eval_metrics.json", "samples.jsonl", "samples.md"],
        "benchmarks": benchmarks,
        "lm_eval": lm_eval,
        "lm_eval_note": (
            "lm-eval's hf backend loads the adapter over a 16-bit base (it cannot build the 4-bit "
            "bitsandbytes base from the command line); eval.py's metrics use the 4-bit base the "
            "adapter was trained on"
            if plan.quantization and benchmarks
            else ""
        ),
        "forgetting_threshold_points": FORGETTING_POINTS if benchmarks else None,
        "commands": commands,
        "contamination_check": {
            "method": f"{DEFAULT_NGRAM}-gram overlap of row content (values, not keys) between "
            "each eval row and the training split; n-grams in many training rows (system "
            "prompts, templates) are ignored",
            "ngram": DEFAULT_NGRAM,
            "command": contamination_command,
        },
        "human_evaluation": human_evaluation(plan),
        "success_criteria": acceptance_criteria(plan, benchmarks),
    }
