"""The `finetune-gen` command line: thin commands over the library, one error handler.

Exit codes (contract section 2): 0 success, 2 invalid input or usage, 3 no plan fits.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

import click

from finetune_gen import __version__
from finetune_gen.errors import FinetuneGenError

SPEC = click.argument("spec", type=click.Path(dir_okay=False, path_type=Path))


def handle_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Print a FinetuneGenError as a message (one line per problem) and exit with its code."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except FinetuneGenError as error:
            click.echo(f"error: {printable(error.message)}", err=True)
            for problem in error.problems:
                click.echo(f"  {printable(problem)}", err=True)
            sys.exit(error.exit_code)
        except OSError as error:  # a file we read or write, beyond the checks made on it
            where = f"{error.filename}: " if error.filename else ""
            click.echo(f"error: {printable(where)}{error.strerror or error}", err=True)
            sys.exit(2)
        except (RecursionError, MemoryError) as error:
            click.echo(
                f"error: the input is too large or too deeply nested ({type(error).__name__})",
                err=True,
            )
            sys.exit(2)
        except Exception as error:  # a bug: say so plainly; the traceback is one variable away
            if os.environ.get("FINETUNE_GEN_DEBUG"):
                raise
            click.echo(
                f"internal error: {type(error).__name__}: {str(error)[:300]}\n"
                "This is a bug in finetune-gen; rerun with FINETUNE_GEN_DEBUG=1 for the traceback "
                "and report it.",
                err=True,
            )
            sys.exit(1)

    return wrapper


def printable(text: Any) -> str:
    """One line on the terminal: a newline or escape sequence in a file name (or any value a
    message quotes) is shown escaped, so it can neither split a message nor drive the terminal."""
    from finetune_gen.render.quoting import one_line

    return one_line(text, limit=2000)


def echo_diagnostics(diagnostics: list[Any]) -> None:
    for item in diagnostics:
        line = f"{item.level}: {item.header}" + (f": {item.detail}" if item.detail else "")
        click.echo(printable(line), err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="finetune-gen")
def main() -> None:
    """Turn a short fine-tuning spec into a run folder that works the first time.

    \b
    Typical use:
      finetune-gen init my-run.yaml          # a commented starter spec
      finetune-gen plan my-run.yaml          # what will be run, why, and will it fit
      finetune-gen generate my-run.yaml -o run/
      cd run && bash launch.sh --probe && bash launch.sh

    Exit codes: 0 success, 2 invalid spec or usage, 3 nothing fits the hardware.
    """


@main.command()
@SPEC
@click.option("-o", "--output", "out_dir", type=str, help="Run folder to write.")
@click.option(
    "--force",
    is_flag=True,
    help="Overwrite the generated files in a non-empty folder (others are kept).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["files", "json", "notebook"]),
    default="files",
    show_default=True,
    help="files: the run folder; json: the output object on stdout; notebook: a Jupyter notebook in -o.",
)
@click.option(
    "--strict", is_flag=True, help="Fail (exit 3) instead of changing a value the spec set."
)
@click.option(
    "--check",
    is_flag=True,
    help="Write nothing: exit 0 when -o DIR holds what SPEC generates now, 1 with a unified diff when not.",
)
@handle_errors
def generate(
    spec: Path, out_dir: str | None, force: bool, fmt: str, strict: bool, check: bool
) -> None:
    """Write the run folder for SPEC: train.py, configs, launch.sh, eval.py, estimates.

    \b
    Examples:
      finetune-gen generate examples/llama-lora-alpaca.yaml -o run/
      finetune-gen generate spec.yaml --format json | jq .estimated_resources
      finetune-gen generate spec.yaml -o run/ --check   # CI: is the committed run/ up to date?
    """
    from finetune_gen.api import generate as build
    from finetune_gen.errors import SpecError
    from finetune_gen.files.write import write_run_folder
    from finetune_gen.render.quoting import one_line, shell_word
    from finetune_gen.render.summary import summary_text

    if out_dir is not None and not out_dir.strip():
        raise SpecError("-o: the run folder's path is empty")
    if fmt != "json" and out_dir is None:
        raise SpecError("generate: -o DIR is required (or use --format json)")
    if check and (fmt == "json" or out_dir is None):
        raise SpecError(
            "generate --check: compares with a folder; give -o DIR (files or notebook format)"
        )
    result = build(spec, out_dir=out_dir, strict=strict)
    if fmt == "json":
        click.echo(json.dumps(result.output_object(), indent=2, sort_keys=True))
        echo_diagnostics(result.diagnostics)
        return
    files = result.files
    if fmt == "notebook":
        from finetune_gen.notebook import notebook_file

        files = {"finetune.ipynb": notebook_file(result)}
    assert out_dir is not None
    if check:
        check_folder(files, Path(out_dir))
    report = write_run_folder(files, out_dir, force=force)
    click.echo(summary_text(result.plan, result.resources))
    shown = one_line(out_dir)  # a terminal shows the name, never runs escape sequences in it
    click.echo(f"\nWrote {len(report.written)} files to {shown}/: {', '.join(report.written)}")
    if report.removed_stale:
        click.echo(f"Removed files of the previous plan: {', '.join(report.removed_stale)}")
    if report.kept_edited:
        click.echo(
            "Kept, though this plan does not produce them (edited since generated): "
            + ", ".join(report.kept_edited)
        )
    click.echo(
        f"Next: cd {shell_word(out_dir)} && bash launch.sh --probe   # check the estimate on your GPU"
    )


def check_folder(files: dict[str, str], out_dir: Path) -> None:
    """`generate --check`: exit 0 when up to date, 1 with the unified diff when not."""
    from finetune_gen.check import compare_folder

    result = compare_folder(files, out_dir)
    if result.clean:
        click.echo(f"{out_dir}/: up to date ({len(files)} generated files)")
        sys.exit(0)
    click.echo(result.diff, nl=False)
    click.echo(f"{out_dir}/ differs from what the spec generates now: {result.summary()}", err=True)
    click.echo(f"Regenerate with: finetune-gen generate SPEC -o {out_dir} --force", err=True)
    sys.exit(1)


@main.command()
@click.argument("old_spec", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("new_spec", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--strict", is_flag=True, help="Fail (exit 3) instead of changing a value the spec set."
)
@handle_errors
def diff(old_spec: Path, new_spec: Path, strict: bool) -> None:
    """Show how the plan, the estimate and the run folder change from OLD_SPEC to NEW_SPEC."""
    from finetune_gen.api import generate as build
    from finetune_gen.check import spec_diff

    old = build(old_spec, strict=strict)
    new = build(new_spec, strict=strict)
    click.echo(f"--- {old_spec}\n+++ {new_spec}\n")
    click.echo(spec_diff(old.output_object(), new.output_object(), old.files, new.files), nl=False)


@main.command()
@SPEC
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the plan and estimated_resources objects as JSON.",
)
@click.option(
    "--strict", is_flag=True, help="Fail (exit 3) instead of changing a value the spec set."
)
@handle_errors
def plan(spec: Path, as_json: bool, strict: bool) -> None:
    """Show what SPEC resolves to: every decision and why, the memory breakdown, the fallbacks."""
    from finetune_gen.api import plan_file
    from finetune_gen.render.summary import summary_text

    planned = plan_file(spec, strict=strict)
    resolved, resources = planned.plan, planned.resources
    if as_json:
        payload = {"plan": resolved.public_dict(), "estimated_resources": resources.to_dict()}
        click.echo(json.dumps(payload, indent=2, sort_keys=True))
        return
    click.echo(summary_text(resolved, resources, detailed=True))


@main.command()
@SPEC
@handle_errors
def validate(spec: Path) -> None:
    """Check SPEC against the schema only (no model or data look-ups)."""
    from finetune_gen.spec.load import load_spec

    load_spec(spec)
    click.echo(f"{spec}: valid")


@main.command()
@click.option(
    "--output",
    type=click.Choice(["spec", "output"]),
    default="spec",
    show_default=True,
    help="Which schema.",
)
def schema(output: str) -> None:
    """Print the JSON Schema of the spec (or of the output object)."""
    from finetune_gen.spec.schemas import schema_text

    click.echo(schema_text(output), nl=False)


@main.command()
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path), default="finetune.yaml")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@handle_errors
def init(path: Path, force: bool) -> None:
    """Write a commented starter spec to PATH (default finetune.yaml)."""
    from finetune_gen.errors import SpecError
    from finetune_gen.spec.starter import STARTER_SPEC

    if path.exists() and not force:
        raise SpecError(f"{path}: exists; pass --force to overwrite it")
    path.write_text(STARTER_SPEC, encoding="utf-8")
    click.echo(f"Wrote {path}. Edit it, then: finetune-gen plan {path}")


@main.command()
@click.option("--gpus", "show_gpus", is_flag=True, help="List the GPU catalog instead of models.")
def models(show_gpus: bool) -> None:
    """List the model catalog (or, with --gpus, the GPU catalog)."""
    from finetune_gen.knowledge.catalog import list_gpus, list_models

    if show_gpus:
        click.echo(f"{'name':<14} {'memory':>7} {'bf16':>5} {'TFLOPs':>7} {'$/h':>6}  display")
        for gpu in list_gpus():
            click.echo(
                f"{gpu.name:<14} {gpu.memory_gb:>5g}GB {'yes' if gpu.supports_bf16 else 'no':>5} "
                f"{gpu.tflops_bf16 if gpu.supports_bf16 else gpu.tflops_fp16:>7g} {gpu.price_usd_hour:>6.2f}  {gpu.display}"
            )
        return
    from finetune_gen.knowledge.params import count_params

    click.echo(f"{'id':<48} {'params':>9} {'context':>8}  type")
    for entry in list_models():
        from finetune_gen.knowledge.architecture import Architecture

        arch = Architecture.from_config(entry.config)
        total = count_params(arch).total
        click.echo(
            f"{entry.id:<48} {total / 1e9:>8.2f}B {arch.max_position_embeddings:>8}  {arch.model_type}"
        )


@main.command("check-data")
@click.argument("source", type=click.Path(dir_okay=True, path_type=Path))
@click.option(
    "--format",
    "data_format",
    type=click.Choice(["alpaca", "sharegpt", "chatml", "custom"]),
    help="SOURCE is a data file in this format (else SOURCE is a spec).",
)
@click.option(
    "--columns",
    "column_args",
    multiple=True,
    metavar="ROLE=FIELD",
    help="Field mapping, e.g. --columns prompt=question --columns response=answer.",
)
@click.option(
    "--task",
    "task_type",
    type=click.Choice(["instruction", "chat", "classification", "generation"]),
    help="Task (default: from the columns).",
)
@click.option(
    "--tokenizer",
    "tokenizer_dir",
    type=click.Path(path_type=Path),
    help="Count real tokens with this tokenizer folder.",
)
@click.option(
    "--max-seq-length", type=click.IntRange(min=1), help="Count the rows longer than this."
)
@click.option(
    "--near-dup-threshold",
    type=click.FloatRange(0.05, 1.0),
    help="MinHash Jaccard threshold for near duplicates (default 0.4).",
)
@click.option(
    "--min-per-class",
    type=click.IntRange(min=1),
    help="Warn for classes with fewer rows (default 10).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the whole report as JSON.")
@click.option(
    "--write-clean",
    "clean_out",
    type=click.Path(path_type=Path),
    help="Write a deduplicated, filtered copy (same format) and its report.json.",
)
@handle_errors
def check_data(
    source: Path,
    data_format: str | None,
    column_args: tuple[str, ...],
    task_type: str | None,
    tokenizer_dir: Path | None,
    max_seq_length: int | None,
    near_dup_threshold: float | None,
    min_per_class: int | None,
    as_json: bool,
    clean_out: Path | None,
) -> None:
    """Check a dataset: format, duplicates and near duplicates, token lengths, labels, quality flags.

    \b
    SOURCE is a spec (its dataset is checked) or, with --format, a data file:
      finetune-gen check-data spec.yaml
      finetune-gen check-data data.jsonl --format alpaca --max-seq-length 2048
      finetune-gen check-data reviews.csv --format custom --columns text=review --columns label=stars
      finetune-gen check-data data.jsonl --format sharegpt --write-clean clean.jsonl
    Exit 2 when rows do not match the format (each listed with its row number).
    """
    from finetune_gen.data_cli import check_data_command

    check_data_command(
        source,
        data_format=data_format,
        column_args=column_args,
        task_type=task_type,
        tokenizer_dir=tokenizer_dir,
        max_seq_length=max_seq_length,
        near_dup_threshold=near_dup_threshold,
        min_per_class=min_per_class,
        as_json=as_json,
        clean_out=clean_out,
    )


@main.command("check-contamination")
@click.argument("train", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--against",
    "against",
    multiple=True,
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="An evaluation or benchmark file (repeat for several).",
)
@click.option(
    "--format",
    "data_format",
    type=click.Choice(["alpaca", "sharegpt", "chatml", "custom"]),
    default=None,
    help="Read only this format's content fields (default: every string value).",
)
@click.option(
    "--n", "ngram", type=int, default=13, show_default=True, help="N-gram length in words."
)
@click.option(
    "--common-rows",
    type=int,
    default=None,
    help="Ignore n-grams in at least K training rows (default: 10, or half the rows of a small set).",
)
@click.option(
    "--threshold",
    type=float,
    default=0.0,
    show_default=True,
    help="Flag a row when more than this share of its n-grams is in training.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--fail", is_flag=True, help="Exit 1 when any row is flagged (for CI).")
@handle_errors
def check_contamination(
    train: Path,
    against: tuple[Path, ...],
    data_format: str | None,
    ngram: int,
    common_rows: int | None,
    threshold: float,
    as_json: bool,
    fail: bool,
) -> None:
    """N-gram overlap of TRAIN's text (values, not keys) with each --against file.

    \b
    JSONL, JSON, CSV or parquet, any dataset format. Example:
      finetune-gen check-contamination data/train.jsonl --against data/test.jsonl --against mmlu.parquet
    """
    from finetune_gen.data.contamination import check_files, report_text

    report = check_files(
        train,
        list(against),
        data_format=data_format,
        n=ngram,
        common_rows=common_rows,
        threshold=threshold,
    )
    click.echo(json.dumps(report, indent=2, sort_keys=True) if as_json else report_text(report))
    if fail and any(result["flagged"] for result in report["against"].values()):
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
