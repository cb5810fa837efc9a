"""The `finetune-gen` command line: thin commands over the library, one error handler.

Exit codes (contract section 2): 0 success, 2 invalid input or usage, 3 no plan fits.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Any, Callable

import click

from . import __version__
from .errors import FinetuneGenError

SPEC = click.argument("spec", type=click.Path(dir_okay=False, path_type=Path))


def handle_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Print a FinetuneGenError as a message (one line per problem) and exit with its code."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except FinetuneGenError as error:
            click.echo(f"error: {error.message}", err=True)
            for problem in error.problems:
                click.echo(f"  {problem}", err=True)
            sys.exit(error.exit_code)

    return wrapper


def echo_diagnostics(diagnostics: list[Any]) -> None:
    for item in diagnostics:
        click.echo(f"{item.level}: {item.header}" + (f": {item.detail}" if item.detail else ""), err=True)


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
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False, path_type=Path), help="Run folder to write.")
@click.option("--force", is_flag=True, help="Overwrite the generated files in a non-empty folder (others are kept).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["files", "json", "notebook"]),
    default="files",
    show_default=True,
    help="files: the run folder; json: the output object on stdout; notebook: a Jupyter notebook in -o.",
)
@click.option("--strict", is_flag=True, help="Fail (exit 3) instead of changing a value the spec set.")
@handle_errors
def generate(spec: Path, out_dir: Path | None, force: bool, fmt: str, strict: bool) -> None:
    """Write the run folder for SPEC: train.py, configs, launch.sh, eval.py, estimates.

    \b
    Examples:
      finetune-gen generate examples/llama-lora-alpaca.yaml -o run/
      finetune-gen generate spec.yaml --format json | jq .estimated_resources
    """
    from .errors import SpecError
    from .generate import generate as build, write_run_folder
    from .summary import summary_text

    if fmt != "json" and out_dir is None:
        raise SpecError("generate: -o DIR is required (or use --format json)")
    result = build(spec, out_dir=out_dir, strict=strict)
    if fmt == "json":
        click.echo(json.dumps(result.output_object(), indent=2, sort_keys=True))
        echo_diagnostics(result.diagnostics)
        return
    files = result.files
    if fmt == "notebook":
        from .notebook import notebook_file

        files = {"finetune.ipynb": notebook_file(result)}
    assert out_dir is not None
    written = write_run_folder(files, out_dir, force=force)
    click.echo(summary_text(result.plan, result.resources))
    click.echo(f"\nWrote {len(written)} files to {out_dir}/: {', '.join(sorted(files))}")
    click.echo(f"Next: cd {out_dir} && bash launch.sh --probe   # check the estimate on your GPU")


@main.command()
@SPEC
@click.option("--json", "as_json", is_flag=True, help="Print the plan and estimated_resources objects as JSON.")
@click.option("--strict", is_flag=True, help="Fail (exit 3) instead of changing a value the spec set.")
@handle_errors
def plan(spec: Path, as_json: bool, strict: bool) -> None:
    """Show what SPEC resolves to: every decision and why, the memory breakdown, the fallbacks."""
    from .generate import plan_file
    from .resources import estimate_resources
    from .summary import summary_text

    resolved, planner, diagnostics = plan_file(spec, strict=strict)
    resources = estimate_resources(resolved, planner.arch, planner.counts)
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
    from .spec import load_spec

    load_spec(spec)
    click.echo(f"{spec}: valid")


@main.command()
@click.option("--output", type=click.Choice(["spec", "output"]), default="spec", show_default=True, help="Which schema.")
def schema(output: str) -> None:
    """Print the JSON Schema of the spec (or of the output object)."""
    from .schemas import schema_text

    click.echo(schema_text(output), nl=False)


@main.command()
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path), default="finetune.yaml")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@handle_errors
def init(path: Path, force: bool) -> None:
    """Write a commented starter spec to PATH (default finetune.yaml)."""
    from .errors import SpecError
    from .starter import STARTER_SPEC

    if path.exists() and not force:
        raise SpecError(f"{path}: exists; pass --force to overwrite it")
    path.write_text(STARTER_SPEC, encoding="utf-8")
    click.echo(f"Wrote {path}. Edit it, then: finetune-gen plan {path}")


@main.command()
@click.option("--gpus", "show_gpus", is_flag=True, help="List the GPU catalog instead of models.")
def models(show_gpus: bool) -> None:
    """List the model catalog (or, with --gpus, the GPU catalog)."""
    from .catalog import list_gpus, list_models

    if show_gpus:
        click.echo(f"{'name':<14} {'memory':>7} {'bf16':>5} {'TFLOPs':>7} {'$/h':>6}  display")
        for gpu in list_gpus():
            click.echo(
                f"{gpu.name:<14} {gpu.memory_gb:>5g}GB {'yes' if gpu.supports_bf16 else 'no':>5} "
                f"{gpu.tflops_bf16 if gpu.supports_bf16 else gpu.tflops_fp16:>7g} {gpu.price_usd_hour:>6.2f}  {gpu.display}"
            )
        return
    from .params import count_params

    click.echo(f"{'id':<48} {'params':>9} {'context':>8}  type")
    for entry in list_models():
        from .architecture import Architecture

        arch = Architecture.from_config(entry.config)
        total = count_params(arch).total
        click.echo(f"{entry.id:<48} {total / 1e9:>8.2f}B {arch.max_position_embeddings:>8}  {arch.model_type}")


@main.command("check-data")
@click.argument("source", type=click.Path(dir_okay=True, path_type=Path))
@click.option("--format", "data_format", type=click.Choice(["alpaca", "sharegpt", "chatml", "custom"]), help="SOURCE is a data file in this format (else SOURCE is a spec).")
@click.option("--columns", "column_args", multiple=True, metavar="ROLE=FIELD", help="Field mapping, e.g. --columns prompt=question --columns response=answer.")
@click.option("--task", "task_type", type=click.Choice(["instruction", "chat", "classification", "generation"]), help="Task (default: from the columns).")
@click.option("--tokenizer", "tokenizer_dir", type=click.Path(path_type=Path), help="Count real tokens with this tokenizer folder.")
@click.option("--max-seq-length", type=click.IntRange(min=1), help="Count the rows longer than this.")
@click.option("--near-dup-threshold", type=click.FloatRange(0.05, 1.0), help="MinHash Jaccard threshold for near duplicates (default 0.5).")
@click.option("--min-per-class", type=click.IntRange(min=1), help="Warn for classes with fewer rows (default 10).")
@click.option("--json", "as_json", is_flag=True, help="Print the whole report as JSON.")
@click.option("--write-clean", "clean_out", type=click.Path(path_type=Path), help="Write a deduplicated, filtered copy (same format) and its report.json.")
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
    from .data_cli import check_data_command

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


if __name__ == "__main__":  # pragma: no cover
    main()
