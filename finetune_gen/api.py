"""From a spec file to the output object and the run folder: the library behind the CLI.

Local paths in a spec (the dataset file, a model folder) are read relative to the spec file,
and written into the run folder relative to that folder, so a run folder can move with its
data and never holds an absolute path of the machine that generated it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finetune_gen.errors import SpecError
from finetune_gen.estimate.resources import Resources
from finetune_gen.models.plan import Plan
from finetune_gen.models.spec import Spec
from finetune_gen.planning.orchestrate import Planned, plan
from finetune_gen.planning.planner import Diagnostic
from finetune_gen.render.engine import render_files
from finetune_gen.render.evaluation import evaluation_plan
from finetune_gen.render.outputs import CONFIG_NAMES
from finetune_gen.spec.load import load_spec

DATA_SUFFIXES = (".json", ".jsonl", ".csv", ".parquet")


@dataclass
class Generated:
    plan: Plan
    resources: Resources
    evaluation: dict[str, Any]
    files: dict[str, str]
    diagnostics: list[Diagnostic]

    def output_object(self) -> dict[str, Any]:
        """The contract's output object (section 3)."""
        return {
            "training_script": self.files["train.py"],
            "config_files": {
                name: text for name, text in self.files.items() if name in CONFIG_NAMES
            },
            "evaluation_plan": self.evaluation,
            "estimated_resources": self.resources.to_dict(),
            "plan": self.plan.public_dict(),
        }


def _localize(
    value: str, spec_dir: Path, *, is_dataset: bool, field: str | None = None
) -> tuple[str, bool]:
    """(absolute path, True) when ``value`` names a local file or folder, else (value, False)."""
    expanded = Path(value).expanduser()
    candidate = expanded if expanded.is_absolute() else spec_dir / expanded
    if candidate.exists():
        return str(candidate.resolve()), True
    looks_local = value.startswith((".", "/", "~")) or (
        is_dataset and value.lower().endswith(DATA_SUFFIXES)
    )
    if looks_local:
        field = field or ("dataset.path" if is_dataset else "base_model")
        raise SpecError(
            f"{field}: {value} not found (a relative path is read from the spec file's folder)"
        )
    return value, False


def _relative(path: str, out_dir: Path) -> str:
    return Path(os.path.relpath(path, out_dir.resolve())).as_posix()


def plan_file(
    spec_path: str | Path, *, out_dir: str | Path | None = None, strict: bool = False
) -> Planned:
    """Plan a spec file: its local paths read from the spec's folder, written relative to ``out_dir``."""
    spec_path = Path(spec_path)
    spec = load_spec(spec_path)
    spec_dir = spec_path.resolve().parent
    out = Path(out_dir) if out_dir is not None else Path.cwd()
    dataset_path, data_local = _localize(spec.dataset.path, spec_dir, is_dataset=True)
    model_path, model_local = _localize(spec.base_model, spec_dir, is_dataset=False)
    # dataset.mix paths and dataset.report are read from the spec's folder too.
    mixes = [
        (mix, *_localize(mix.path, spec_dir, is_dataset=True, field=f"dataset.mix[{i}].path"))
        for i, mix in enumerate(spec.dataset.mix or [])
    ]
    report = spec.dataset.report
    if report is not None:
        report = _localize(report, spec_dir, is_dataset=True, field="dataset.report")[0]
    dataset_update: dict = {"path": dataset_path, "report": report}
    augment = spec.dataset.augment
    paraphraser = (None, False)
    if augment is not None and augment.paraphrase_model:
        paraphraser = _localize(
            augment.paraphrase_model,
            spec_dir,
            is_dataset=False,
            field="dataset.augment.paraphrase_model",
        )
        dataset_update["augment"] = augment.model_copy(update={"paraphrase_model": paraphraser[0]})
    if mixes:
        dataset_update["mix"] = [mix.model_copy(update={"path": path}) for mix, path, _ in mixes]
    resolved: Spec = spec.model_copy(
        update={
            "base_model": model_path,
            "dataset": spec.dataset.model_copy(update=dataset_update),
        }
    )

    def relocate(planned: Plan) -> Plan:
        """The run folder refers to local files relative to itself."""
        return planned.model_copy(
            update={
                "base_model": _relative(model_path, out) if model_local else planned.base_model,
                "dataset": planned.dataset.model_copy(
                    update={
                        "path": (
                            _relative(dataset_path, out) if data_local else planned.dataset.path
                        ),
                        "mix": [
                            m.model_copy(update={"path": _relative(path, out) if local else m.path})
                            for m, (_, path, local) in zip(planned.dataset.mix, mixes)
                        ],
                        "report": (
                            _relative(report, out) if planned.dataset.report and report else None
                        ),
                        "augment": planned.dataset.augment.model_copy(
                            update={
                                "paraphrase_model": (
                                    _relative(paraphraser[0], out)
                                    if paraphraser[1]
                                    else planned.dataset.augment.paraphrase_model
                                )
                            }
                        ),
                    }
                ),
            }
        )

    return plan(resolved, spec_name=spec_path.name, strict=strict, relocate=relocate)


def generate(
    spec_path: str | Path, *, out_dir: str | Path | None = None, strict: bool = False
) -> Generated:
    planned = plan_file(spec_path, out_dir=out_dir, strict=strict)
    evaluation = evaluation_plan(planned.plan)
    files = render_files(planned.plan, planned.resources, evaluation)
    return Generated(planned.plan, planned.resources, evaluation, files, planned.diagnostics)
