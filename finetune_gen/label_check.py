"""`check-data SPEC` with the model at hand: the generated train.py's own label builder on every row.

The run folder's train.py is standalone, so its label code (render the conversation once with
the model's chat template, tokenize once, mark the assistant spans) lives in the template, not
in this package. Rather than keep a second copy that could drift, this module renders the
train.py that `generate` would write for the spec, imports it from a scratch folder and calls
its functions: what is reported here is what training would do, row for row.

Only called when the spec's base model is a local folder with a tokenizer, for instruction
and chat tuning; it imports the ML stack (through the script), never at CLI start-up.
"""

from __future__ import annotations

import contextlib
import importlib.util
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

MAX_LISTED = 20
SFT_TASKS = ("instruction", "chat")


def load_generated_script(spec_path: Path, folder: Path) -> Any:
    """The train.py that `generate` writes for the spec, imported as a module from `folder`."""
    from finetune_gen.api import generate

    generated = generate(spec_path, out_dir=folder)
    script = folder / "train.py"
    script.write_text(generated.files["train.py"], encoding="utf-8")
    spec = importlib.util.spec_from_file_location("finetune_gen_check_train", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def label_report(spec_path: Path) -> dict[str, Any]:
    """Training examples as train.py builds them: rows the chat template refuses, turns
    learned without an end-of-turn token, responses cut at max_seq_length, the share of
    tokens learned and the real token lengths."""
    with tempfile.TemporaryDirectory() as scratch, contextlib.redirect_stdout(sys.stderr):
        recipe = load_generated_script(spec_path, Path(scratch))
        recipe.SKIP_BAD_ROWS = True  # rows of the wrong format are the format check's to report
        tokenizer = recipe.setup_tokenizer()
        rows = recipe.load_file_rows()
        encoded = recipe.encode_rows(tokenizer, rows, "whole")
        columns = {
            name: list(encoded[name])
            for name in (recipe.ROW, "problem", "unclosed", "truncated", "length", "labels")
        }
        limit = recipe.MAX_SEQ_LENGTH
        system_policy = getattr(recipe, "SYSTEM_MESSAGE", None)
        facts = recipe.template_facts(tokenizer) if hasattr(recipe, "template_facts") else None
    numbers = columns[recipe.ROW]
    refused = [(n, p) for n, p in zip(numbers, columns["problem"]) if p]
    good = [i for i, problem in enumerate(columns["problem"]) if not problem]
    unclosed = [(numbers[i], columns["unclosed"][i]) for i in good if columns["unclosed"][i]]
    truncated = [numbers[i] for i in good if columns["truncated"][i]]
    lengths = sorted(columns["length"][i] for i in good)
    learned = sum(sum(1 for x in columns["labels"][i] if x != -100) for i in good)
    kept = sum(len(columns["labels"][i]) for i in good)  # within max_seq_length
    nothing = [numbers[i] for i in good if all(x == -100 for x in columns["labels"][i])]
    report: dict[str, Any] = {
        "builder": "the generated train.py (the model's chat template and tokenizer)",
        "rows": len(numbers),
        "max_seq_length": limit,
        "refused": {
            "count": len(refused),
            "listed": [{"row": n, "problem": p} for n, p in sorted(refused)[:MAX_LISTED]],
        },
        "unclosed": {
            "count": len(unclosed),
            "listed": [{"row": n, "learned": t} for n, t in sorted(unclosed)[:MAX_LISTED]],
        },
        "truncated": {"count": len(truncated), "rows": sorted(truncated)[:MAX_LISTED]},
        "nothing_learned": {"count": len(nothing), "rows": sorted(nothing)[:MAX_LISTED]},
        "learned_token_share": round(learned / kept, 4) if kept else 0.0,
        "token_lengths": _summary(lengths),
        "over_max_seq_length": sum(length > limit for length in lengths),
    }
    if facts is not None:
        report["template"] = {"system": facts["system"], "system_message": system_policy}
    return report


def _summary(lengths: list[int]) -> dict[str, float]:
    if not lengths:
        return {"min": 0, "median": 0, "p95": 0, "max": 0, "mean": 0}
    return {
        "min": lengths[0],
        "median": statistics.median(lengths),
        "p95": lengths[min(len(lengths) - 1, int(0.95 * len(lengths)))],
        "max": lengths[-1],
        "mean": round(statistics.fmean(lengths), 1),
    }


def label_lines(report: dict[str, Any]) -> list[str]:
    """The report for people: one line of figures, then what would stop or hurt training."""
    lengths = report["token_lengths"]
    summary = (
        f"training examples (built by {report['builder']}): {report['rows']:,} rows, "
        f"{report['learned_token_share']:.1%} of tokens learned; token lengths median "
        f"{lengths['median']:g}, p95 {lengths['p95']:g}, max {lengths['max']:g} "
        f"({report['over_max_seq_length']:,} over max_seq_length {report['max_seq_length']})"
    )
    lines = [summary]
    for item in report["refused"]["listed"]:
        lines.append(f"refused: {item['problem']}")
    for item in report["unclosed"]["listed"]:
        lines.append(
            f"unclosed: row {item['row']}: learned without an end-of-turn token: {item['learned'][:80]!r}"
        )
    truncated = report["truncated"]
    if truncated["count"]:
        lines.append(
            f"truncated: {truncated['count']:,} rows have responses cut at max_seq_length "
            f"{report['max_seq_length']} (their end-of-turn is lost): rows "
            + ", ".join(map(str, truncated["rows"][:10]))
            + (" ..." if truncated["count"] > 10 else "")
        )
    nothing = report["nothing_learned"]
    if nothing["count"]:
        lines.append(
            f"skipped: {nothing['count']:,} rows have no learned token within max_seq_length "
            "(the prompt fills it): rows " + ", ".join(map(str, nothing["rows"][:10]))
        )
    return lines


def label_problems(report: dict[str, Any], skip_bad_rows: bool) -> list[str]:
    """What would stop train.py: refused rows (unless skip_bad_rows), unclosed turns."""
    problems = []
    if report["refused"]["count"] and not skip_bad_rows:
        problems += [item["problem"] for item in report["refused"]["listed"]]
        more = report["refused"]["count"] - len(report["refused"]["listed"])
        if more > 0:
            problems.append(f"... and {more} more rows the chat template refuses (see --json)")
    problems += [
        f"row {item['row']}: an assistant turn is learned without an end-of-turn token"
        for item in report["unclosed"]["listed"]
    ]
    return problems
