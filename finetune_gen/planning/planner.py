"""The planner: from a spec and the catalogs to a fully resolved, explained :class:`Plan`.

Pure and deterministic: it prints nothing and exits nothing; it returns the plan and a list
of diagnostics, or raises :class:`SpecError` / :class:`NoFitError` for the CLI to report.

Order of work: resolve the model and the data; settle hyperparameters from the seed's guide;
pick the method (when the spec leaves it open) as the best-quality one whose estimated peak
fits the usable VRAM; then walk the seed's fallback ladder until the run fits, recording each
step with the memory before and after.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace
from typing import Any

from finetune_gen import __version__
from finetune_gen.data.stats import DatasetStats, read_stats, resolve_columns
from finetune_gen.errors import NoFitError, SpecError
from finetune_gen.estimate.formulas import (
    CHECKPOINT_WRITE_BYTES_PER_S,
    COLLATIONS,
    estimate_eval_memory,
    estimate_memory,
    estimate_storage,
    estimate_time,
    eval_flops_per_token,
    flops_per_token,
)
from finetune_gen.estimate.padding import useful_fraction
from finetune_gen.estimate.shape import build_shape
from finetune_gen.knowledge.architecture import Architecture
from finetune_gen.knowledge.catalog import (
    GPU,
    ResolvedModel,
    get_gpu,
    guess_gpu,
    list_gpus,
    local_chat_template,
    resolve_model,
)
from finetune_gen.knowledge.params import (
    ParamCounts,
    count_params,
    trainable_params,
)
from finetune_gen.knowledge.prompts import PROMPT_FORMATS, template_system_role
from finetune_gen.models.plan import (
    DatasetPlan,
    Decision,
    Fallback,
    HardwarePlan,
    LaunchPlan,
    LoraPlan,
    PaddingPlan,
    Plan,
    QuantizationPlan,
    SchedulePlan,
)
from finetune_gen.models.spec import Spec
from finetune_gen.planning import schedule
from finetune_gen.planning.data_prep import (
    DEFAULT_NEAR_DUP_THRESHOLD,
    augment_plan,
    check_preparation,
    mix_plans,
    read_report,
)
from finetune_gen.planning.guards import plan_guards
from finetune_gen.planning.hyperparams import (
    DEFAULT_NUM_EXAMPLES,
    DEFAULT_TOKENS_PER_EXAMPLE,
    Context,
    _Draft,
)
from finetune_gen.planning.kernels import plan_collation, plan_liger
from finetune_gen.variants.distribution import DISTRIBUTIONS
from finetune_gen.variants.methods import METHODS
from finetune_gen.variants.tasks import TASKS

# Quality order for automatic method choice (the issue and the seed: full > LoRA > QLoRA).
AUTO_METHODS = ("full", "lora", "qlora")


@dataclass(frozen=True)
class Diagnostic:
    level: str  # "info" | "warning"
    header: str
    detail: str
    path: str = ""


class Planner:
    """Plans one spec. Construct, then call :meth:`plan`; nothing is printed."""

    def __init__(self, spec: Spec, *, spec_name: str = "spec.yaml", strict: bool = False):
        self.spec = spec
        self.spec_name = spec_name
        self.strict = strict
        self._trainable_cache: dict[tuple, int] = {}
        self.tc = spec.training_config
        self.diagnostics: list[Diagnostic] = []
        self.warnings: list[str] = []
        self.model: ResolvedModel = resolve_model(spec.base_model)
        self.arch: Architecture = self.model.architecture
        self.task = TASKS[spec.task_type.value].head
        self.columns = resolve_columns(
            spec.task_type.value, spec.dataset.format.value, spec.dataset.columns
        )
        self.stats: DatasetStats | None = read_stats(
            spec.dataset.path, spec.task_type.value, spec.dataset.format.value, self.columns
        )
        self.report_note = self._apply_report()
        # The classification head's size counts in the trainable parameters.
        self.num_labels = max(2, len(self.stats.labels)) if self.stats else 2
        self.check_task_and_method()
        self.counts: ParamCounts = count_params(
            self.arch, task=self.task, num_labels=self.num_labels
        )

    # ------------------------------------------------------------ helpers

    def warn(self, header: str, detail: str = "", path: str = "") -> None:
        self.warnings.append(header + (f": {detail}" if detail else ""))
        self.diagnostics.append(Diagnostic("warning", header, detail, path))

    def _decide(
        self, draft: _Draft, setting: str, value: Any, why: str, source: str = "planner"
    ) -> Any:
        draft.decisions[setting] = Decision(setting=setting, value=value, why=why, source=source)
        return value

    # ------------------------------------------------------------ combinations

    def check_task_and_method(self) -> None:
        """Requests that cannot run with the installed stack, refused before planning."""
        task, method = self.spec.task_type.value, self.tc.method
        needs = TASKS[task].roles
        if not any(all(role in self.columns for role in option) for option in needs):
            wanted = " or ".join("+".join(option) for option in needs)
            raise SpecError(
                f"dataset: task_type {task} needs the column roles {wanted}",
                problems=[
                    (
                        f"dataset.format: {self.spec.dataset.format.value} gives roles "
                        f"{', '.join(sorted(self.columns)) or 'none'}; use format custom with "
                        "`columns`, e.g. {text: review, label: sentiment}"
                        if task == "classification"
                        else f"dataset.columns: map the roles {wanted}"
                    )
                ],
            )
        if method is not None:
            settings = self.tc.model_dump()
            for refusal in METHODS[method].refusals:
                if refusal.applies(task, settings):
                    raise SpecError(refusal.message, problems=[refusal.problem])

    # ------------------------------------------------------------ data

    def _apply_report(self) -> str | None:
        """dataset.report: a check-data --json report's row count and token lengths replace the
        planner's own (estimated) ones when it describes this file and is newer than it."""
        ds = self.spec.dataset
        if not ds.report:
            return None
        numbers, why_not = read_report(ds.report, ds.path)
        if numbers is None or self.stats is None:
            self.warn(
                "dataset.report not used", why_not or "the dataset is not at hand", "dataset.report"
            )
            return None
        self.stats = replace(
            self.stats,
            rows=numbers.rows,
            rows_extrapolated=False,
            reported_mean=numbers.mean_tokens,
            reported_p99=numbers.p99_tokens,
            lengths_note=(
                "token lengths from check-data" if numbers.tokenizer else self.stats.lengths_note
            ),
            lengths_unit=(
                f"tokenizer {numbers.tokenizer}" if numbers.tokenizer else self.stats.lengths_unit
            ),
        )
        return numbers.note

    def _columns_with_system(self, ds: Any) -> dict[str, str]:
        """dataset.augment.system_prompts on prompt/response rows: a field for the system prompt."""
        columns = dict(self.columns)
        prompts = ds.augment.system_prompts if ds.augment else None
        if prompts and "messages" not in columns and "system" not in columns:
            columns["system"] = "__system__"
        return columns

    def dataset_plan(self) -> DatasetPlan:
        ds = self.spec.dataset
        check_preparation(ds, self.spec.task_type.value, self.columns)
        if self.stats is not None:
            if self.stats.problems and ds.skip_bad_rows:
                # train.py skips and counts them (dataset.skip_bad_rows): said, not refused.
                self.warn(
                    "malformed rows will be skipped",
                    f"{len(self.stats.problems)} problem(s), e.g. "
                    + "; ".join(self.stats.problems[:3]),
                    "dataset.skip_bad_rows",
                )
            elif self.stats.problems:
                raise SpecError(
                    f"dataset.path: {ds.path} does not match format {ds.format.value!r}",
                    problems=self.stats.problems[:10],
                )
            rows = self.stats.rows
            tokens = self.stats.mean_tokens
            if self.stats.rows_extrapolated:
                self.warn("dataset rows extrapolated", self.stats.count_note, "dataset.path")
            for note in self.stats.warnings:
                self.warn("dataset rows to review", note, "dataset.path")
        else:
            rows = ds.num_examples or DEFAULT_NUM_EXAMPLES
            tokens = ds.avg_tokens_per_example or DEFAULT_TOKENS_PER_EXAMPLE
            if not ds.num_examples:
                self.warn(
                    "dataset size unknown",
                    f"{ds.path} is not a local file and dataset.num_examples is unset; "
                    f"time and epochs assume {DEFAULT_NUM_EXAMPLES} rows",
                    "dataset.num_examples",
                )
        if self.report_note:
            self.warn("dataset counted by check-data", self.report_note, "dataset.report")
        mixes = mix_plans(ds, self.spec.task_type.value, self.columns, rows)
        for mix in mixes:
            if mix.available_rows is not None and mix.planned_rows > mix.available_rows:
                self.warn(
                    "mixed dataset repeats rows",
                    f"{mix.path}: {mix.planned_rows} rows drawn from {mix.available_rows}; "
                    "each row once, the rest sampled again",
                    "dataset.mix",
                )
        if ds.eval_split > 0 and rows * ds.eval_split < 1:
            self.warn(
                "eval split rounds to zero rows",
                "train.py keeps 1 row for evaluation",
                "dataset.eval_split",
            )
        return DatasetPlan(
            path=ds.path,
            format=ds.format.value,
            train_split=ds.train_split,
            eval_split=ds.eval_split,
            columns=self._columns_with_system(ds),
            num_examples=rows,
            avg_tokens_per_example=tokens,
            counted_from_file=self.stats is not None,
            system_message=ds.system_message,
            skip_bad_rows=ds.skip_bad_rows,
            test_split=ds.test_split,
            stratify=ds.stratify,
            remove_test_near_duplicates=ds.remove_test_near_duplicates,
            near_dup_threshold=ds.near_dup_threshold or DEFAULT_NEAR_DUP_THRESHOLD,
            mix=mixes,
            augment=augment_plan(ds),
            report=ds.report if self.report_note else None,
        )

    # ------------------------------------------------------------ hardware

    def hardware_plan(self) -> HardwarePlan:
        hw = self.spec.hardware
        assert hw is not None
        gpu: GPU | None = get_gpu(hw.gpu_type) if hw.gpu_type else None
        if gpu is None and hw.vram_per_gpu is not None:
            # Speed and price come from a typical card of that size (the closest one if none matches).
            vram = hw.vram_per_gpu
            gpu = guess_gpu(vram) or min(
                list_gpus(), key=lambda g: (abs(g.memory_gb - vram), g.name)
            )
        if gpu is None:
            raise SpecError(
                "hardware: give vram_per_gpu or gpu_type",
                problems=["hardware.vram_per_gpu: required"],
            )
        overridden = hw.price_per_gpu_hour is not None
        return HardwarePlan.for_gpu(
            gpu,
            hw.gpus,
            nodes=hw.nodes,
            vram_gb=hw.vram_per_gpu,
            price=hw.price_per_gpu_hour,
            price_source="spec (hardware.price_per_gpu_hour)" if overridden else None,
            assumed=hw.gpu_type is None,
        )

    # ------------------------------------------------------------ memory

    def trainable(
        self, method: str, lora: LoraPlan | None, virtual_tokens: int, freeze_layers: int
    ) -> int:
        # The ladder and the hardware search ask for the same few counts thousands of times.
        targets = lora.target_modules if lora else None
        key = (
            method,
            tuple(targets) if isinstance(targets, list) else targets,
            lora.r if lora else None,
            virtual_tokens,
            freeze_layers,
        )
        if key not in self._trainable_cache:
            self._trainable_cache[key] = self._count_trainable(
                method, lora, virtual_tokens, freeze_layers
            )
        return self._trainable_cache[key]

    def _count_trainable(
        self, method: str, lora: LoraPlan | None, virtual_tokens: int, freeze_layers: int
    ) -> int:
        return trainable_params(
            self.arch,
            method,
            # IA3 without a LoRA plan uses peft's per-architecture defaults (IA3Config()).
            target_modules=(
                lora.target_modules if lora else (None if method == "ia3" else "all-linear")
            ),
            r=lora.r if lora else 16,
            num_virtual_tokens=virtual_tokens,
            freeze_trainable_layers=freeze_layers,
            task=self.task,
            num_labels=self.num_labels,
        )

    def kernel_choice(self, ctx: Context) -> tuple[str, str, str, bool, str]:
        """Collation expected on the target GPU, its fallback and why; Liger and why (kernels.py)."""
        gpu = get_gpu(ctx.hardware.gpu_type)
        capability = gpu.compute_capability if gpu is not None else "0"
        task = self.spec.task_type.value
        collation, fallback, why = plan_collation(task, ctx.packing, capability)
        use_liger, liger_why = plan_liger(self.arch.model_type, task)
        return collation, fallback, why, use_liger, liger_why

    def collation_and_liger(self, ctx: Context) -> tuple[str, bool]:
        """The collation and the Liger switch that the estimates plan for."""
        collation, _, _, use_liger, _ = self.kernel_choice(ctx)
        return collation, use_liger

    def peak_gb(self, draft: _Draft, ctx: Context, *, liger: bool | None = None) -> float:
        return estimate_memory(
            self.arch, self.counts, self.shape_of(draft, ctx, liger=liger)
        ).peak_gb

    def shape_of(self, draft: _Draft, ctx: Context, *, liger: bool | None = None):
        """The estimator's shape of a draft (Liger as planned unless ``liger`` says otherwise)."""
        lora = ctx.lora_for(draft.method)
        return build_shape(
            method=draft.method,
            trainable_params=self.trainable(draft.method, lora, ctx.virtual_tokens, ctx.freeze),
            precision=ctx.precision,
            micro_batch_size=draft.micro_batch,
            seq_len=ctx.seq_len,
            gradient_checkpointing=draft.gradient_checkpointing,
            optimizer=draft.optimizer,
            distributed=draft.distributed,
            world_size=ctx.world_size,
            gpus_per_node=ctx.gpus_per_node,
            cpu_offload=draft.cpu_offload,
            task=self.task,
            lora=lora,
            num_virtual_tokens=ctx.virtual_tokens,
            num_labels=self.num_labels,
            full_master_weights_fp32=full_master_weights(draft, ctx.precision),
            use_liger_kernel=self.collation_and_liger(ctx)[1] if liger is None else liger,
        )

    # ------------------------------------------------------------ the plan

    def trial(self, method: str | None = None) -> "Planner":
        """A quiet copy that plans a candidate configuration (hardware recommendations).

        It shares the resolved model, the data statistics and the caches, keeps its own
        diagnostics and is never strict: a candidate that needs a fallback simply takes it.
        """
        trial = copy.copy(self)
        trial.warnings, trial.diagnostics, trial.strict = [], [], False
        if method is not None:
            trial.tc = trial.tc.model_copy(update={"method": method})
        return trial

    def plan(self, hardware: HardwarePlan | None = None) -> tuple[Plan, list[Diagnostic]]:
        """Plan on ``hardware`` (default: the spec's). ``planning.plan`` recommends hardware
        when the spec names none, and adds "what would fit" to a :class:`NoFitError`."""
        if self.spec.hardware is None and hardware is None:
            raise ValueError(
                "the spec names no hardware: plan with planning.plan(), which recommends it"
            )
        hw = hardware or self.hardware_plan()
        data = self.dataset_plan()
        ctx = Context.build(self, hw, data)
        draft = self.choose_method(ctx)
        return self.finish(ctx, draft, data), self.diagnostics

    def choose_method(self, ctx: Context) -> _Draft:
        tc = self.tc
        if tc.method is not None:
            draft = ctx.initial_draft(tc.method)
            self._decide(draft, "method", tc.method, "set in the spec", "spec")
            return self.fit(draft, ctx)
        tried = []
        for method in AUTO_METHODS:
            draft = ctx.initial_draft(method)
            fitted = self.fit(
                draft, ctx, allow_method_switch=False, allow_offload=False, quiet=True
            )
            peak = self.peak_gb(fitted, ctx)
            tried.append(f"{method} {peak:.1f} GB")
            if peak <= ctx.usable:
                why = (
                    f"the best-quality method whose estimated peak ({peak:.1f} GB) fits the usable "
                    f"{ctx.usable:.1f} GB per GPU (tried in order: {', '.join(tried)})"
                )
                self._decide(fitted, "method", method, why)
                return fitted
        draft = ctx.initial_draft("qlora")
        fitted = self.fit(draft, ctx, allow_method_switch=False, allow_offload=True)
        self._decide(
            fitted,
            "method",
            "qlora",
            f"nothing fits without CPU offload (tried {', '.join(tried)})",
        )
        return fitted

    def fit(
        self,
        draft: _Draft,
        ctx: Context,
        *,
        allow_method_switch: bool = True,
        allow_offload: bool = True,
        quiet: bool = False,
    ) -> _Draft:
        """Walk the seed's fallback ladder until the estimated peak fits the usable VRAM.

        1. reduce_batch_size (halve, accumulation doubles), 2. enable_gradient_checkpointing,
        3. switch_to_qlora, 4. use_deepspeed_offload. On several GPUs the distribution strategy
        is chosen first: the first of DDP, ZeRO-2, ZeRO-3 that fits after steps 1-2.
        """
        draft = replace(draft, decisions=dict(draft.decisions), fallbacks=list(draft.fallbacks))
        first_micro_batch = draft.micro_batch
        if ctx.world_size > 1 and self.tc.distributed == "auto":
            draft = self.choose_distributed(draft, ctx)
        else:
            self.shrink(draft, ctx)
        if allow_method_switch and not self.fits(draft, ctx):
            # Only when full fine-tuning was asked for: choosing a method, LoRA beats pure bf16.
            self.use_pure_bf16(draft, ctx)
        if (
            allow_method_switch
            and not self.fits(draft, ctx)
            and draft.method in ("full", "lora", "dora", "freeze")
        ):
            self.switch_to_qlora(draft, ctx, first_micro_batch)
        if allow_offload and not self.fits(draft, ctx) and draft.cpu_offload == "none":
            self.offload(draft, ctx)
        if not quiet:
            self.check_user_values(draft)
        return draft

    def fits(self, draft: _Draft, ctx: Context) -> bool:
        return self.peak_gb(draft, ctx) <= ctx.usable

    def record(
        self,
        draft: _Draft,
        ctx: Context,
        action: str,
        setting: str,
        old: Any,
        new: Any,
        why: str,
        apply,
    ) -> None:
        """Apply one ladder step and log it with the estimated peak before and after."""
        before = self.peak_gb(draft, ctx)
        apply()
        draft.fallbacks.append(
            Fallback(
                action=action,
                setting=setting,
                **{"from": old},
                to=new,
                why=why,
                memory_before_gb=round(before, 2),
                memory_after_gb=round(self.peak_gb(draft, ctx), 2),
            )
        )

    def shrink(self, draft: _Draft, ctx: Context) -> None:
        """Steps 1 and 2: a smaller micro-batch (same effective batch), then checkpointing."""
        while not self.fits(draft, ctx) and draft.micro_batch > 1:
            old, new = draft.micro_batch, draft.micro_batch // 2

            def halve(old: int = old, new: int = new) -> None:
                draft.accumulation = draft.accumulation * old // new
                draft.micro_batch = new

            if self.tc.batch_size is None:
                halve()  # a micro-batch the planner picked is searched, not fallen back from
            else:
                why = f"micro-batch {old} does not fit; gradient accumulation rises to keep the effective batch"
                self.record(
                    draft, ctx, "reduce_batch_size", "micro_batch_size", old, new, why, halve
                )
        # peft refuses prefix tuning with gradient checkpointing: that step does not apply.
        if (
            not self.fits(draft, ctx)
            and not draft.gradient_checkpointing
            and draft.method != "prefix_tuning"
        ):
            why = "activations do not fit; recompute them in the backward pass (about 1/3 more compute)"
            enable = lambda: setattr(draft, "gradient_checkpointing", True)  # noqa: E731
            self.record(
                draft,
                ctx,
                "enable_gradient_checkpointing",
                "gradient_checkpointing",
                False,
                True,
                why,
                enable,
            )

    def use_pure_bf16(self, draft: _Draft, ctx: Context) -> None:
        """Full fine-tuning without fp32 master weights: bf16 weights, gradients and states.

        Saves 10 B/param (18 -> 8) but an update below a weight's bf16 spacing rounds away
        (at lr 2e-5 most do), so it comes after the cheaper steps, is taken only when it makes
        the run fit (otherwise the next step, QLoRA, replaces full fine-tuning anyway) and is
        reported.
        """
        if full_master_weights(draft, ctx.precision) is not True or ctx.precision != "bf16":
            return
        draft.fp32_master_weights = False
        helps = self.fits(draft, ctx)
        draft.fp32_master_weights = True
        if not helps:
            return
        why = (
            "fp32 master weights do not fit; weights, gradients and AdamW states in bf16, where "
            "small updates round to zero (no bf16-safe optimizer such as Kahan-summed "
            "stable_adamw is installed by the run folder's requirements)"
        )
        pure = lambda: setattr(draft, "fp32_master_weights", False)  # noqa: E731
        self.record(draft, ctx, "use_pure_bf16", "fp32_master_weights", True, False, why, pure)

    def switch_to_qlora(self, draft: _Draft, ctx: Context, first_micro_batch: int) -> None:
        """Step 3: a 4-bit base model; then grow the micro-batch back toward the first one."""
        old_method = draft.method

        def to_qlora() -> None:
            draft.method = "qlora"
            # An optimizer the spec set is kept: adapter states are small under any optimizer.
            if self.tc.optimizer is None:
                draft.optimizer = ctx.default_optimizer("qlora")

        why = f"{old_method} does not fit even at micro-batch 1 with checkpointing; a 4-bit base model does"
        self.record(draft, ctx, "switch_to_qlora", "method", old_method, "qlora", why, to_qlora)
        shrunk_to, before = draft.micro_batch, self.peak_gb(draft, ctx)
        while draft.micro_batch * 2 <= first_micro_batch and draft.accumulation % 2 == 0:
            draft.micro_batch, draft.accumulation = draft.micro_batch * 2, draft.accumulation // 2
            if not self.fits(draft, ctx):
                draft.micro_batch, draft.accumulation = (
                    draft.micro_batch // 2,
                    draft.accumulation * 2,
                )
                break
        if draft.micro_batch != shrunk_to and self.tc.batch_size is not None:
            draft.fallbacks.append(
                Fallback(
                    action="restore_batch_size",
                    setting="micro_batch_size",
                    **{"from": shrunk_to},
                    to=draft.micro_batch,
                    why="the 4-bit model frees memory: the micro-batch grows back toward the spec's",
                    memory_before_gb=round(before, 2),
                    memory_after_gb=round(self.peak_gb(draft, ctx), 2),
                )
            )

    def offload(self, draft: _Draft, ctx: Context) -> None:
        """Step 4: DeepSpeed CPU offload of the optimizer states, then of the parameters."""
        old_distributed = draft.distributed

        def offload_optimizer() -> None:
            draft.cpu_offload = "optimizer"
            if draft.distributed in ("none", "ddp"):
                # Offload is a DeepSpeed ZeRO feature; ZeRO-2 with offload works on one GPU too.
                draft.distributed = (
                    "deepspeed_zero2" if draft.method != "full" else "deepspeed_zero3"
                )

        before = (draft.cpu_offload, draft.distributed, self.peak_gb(draft, ctx))
        offload_optimizer()
        helps = self.peak_gb(draft, ctx) < before[2]
        draft.cpu_offload, draft.distributed = before[0], before[1]
        if not helps:
            return  # tiny optimizer states (e.g. prefix tuning): ZeRO's buffers would cost more
        why = "still does not fit; optimizer states move to CPU RAM (slower steps)"
        self.record(
            draft,
            ctx,
            "use_deepspeed_offload",
            "cpu_offload",
            f"none ({old_distributed})",
            "optimizer",
            why,
            offload_optimizer,
        )
        if not self.fits(draft, ctx) and draft.distributed in ("deepspeed_zero3", "fsdp"):
            why = "still does not fit; parameters move to CPU RAM too"
            offload_all = lambda: setattr(draft, "cpu_offload", "all")  # noqa: E731
            self.record(
                draft,
                ctx,
                "use_deepspeed_offload",
                "cpu_offload",
                "optimizer",
                "all",
                why,
                offload_all,
            )

    def choose_distributed(self, draft: _Draft, ctx: Context) -> _Draft:
        """DDP if a full replica fits; else ZeRO-2 (shards optimizer + grads); else ZeRO-3."""
        options = ["ddp", "deepspeed_zero2", "deepspeed_zero3"]
        peaks = []
        for option in options:
            trial = replace(
                draft,
                distributed=option,
                decisions=dict(draft.decisions),
                fallbacks=list(draft.fallbacks),
            )
            self.shrink(trial, ctx)
            peaks.append(f"{option} {self.peak_gb(trial, ctx):.1f} GB")
            if self.fits(trial, ctx) or option == options[-1]:
                break
        self._decide(
            trial,
            "distributed",
            trial.distributed,
            f"{ctx.world_size} GPUs: the first of DDP, ZeRO-2, ZeRO-3 whose per-GPU peak fits "
            f"({', '.join(peaks)})",
        )
        return trial

    def check_user_values(self, draft: _Draft) -> None:
        """Fallbacks that changed a value set in the spec are reported loudly, or refused with --strict."""
        spec_set = {
            "micro_batch_size": self.tc.batch_size,
            "gradient_checkpointing": self.tc.gradient_checkpointing,
            "method": self.tc.method,
            "cpu_offload": self.tc.cpu_offload,
        }
        for fallback in draft.fallbacks:
            if spec_set.get(fallback.setting) is None:
                continue
            message = (
                f"training_config.{fallback.setting if fallback.setting != 'micro_batch_size' else 'batch_size'} "
                f"changed from {fallback.from_} to {fallback.to} ({fallback.action}): {fallback.why}; "
                f"estimated peak {fallback.memory_before_gb} -> {fallback.memory_after_gb} GB"
            )
            if self.strict:
                raise NoFitError(f"--strict: the spec's values do not fit; {message}")
            self.warn(
                "spec value changed by a fallback", message, f"training_config.{fallback.setting}"
            )

    def finish(self, ctx: Context, draft: _Draft, data: DatasetPlan) -> Plan:
        peak = self.peak_gb(draft, ctx)
        if peak > ctx.usable:
            raise self.no_fit_error(ctx, draft, peak)
        lora = ctx.lora_for(draft.method)
        trainable = self.trainable(draft.method, lora, ctx.virtual_tokens, ctx.freeze)
        quant = None
        if draft.method == "qlora":
            sharded = DISTRIBUTIONS[draft.distributed].shards_weights
            compute = "bfloat16" if ctx.precision == "bf16" else "float16"
            quant = QuantizationPlan(
                bits=4,
                quant_type="nf4",
                double_quant=True,
                compute_dtype=compute,
                # ZeRO-3/FSDP can only shard the packed 4-bit weights stored as a float dtype.
                storage_dtype=compute if sharded else "uint8",
            )
        world = ctx.world_size
        effective = draft.micro_batch * draft.accumulation * world
        train_sequences = self.train_sequences(ctx, data)
        steps_per_epoch = max(1, math.ceil(train_sequences / effective))
        total_steps = max(1, math.ceil(steps_per_epoch * ctx.epochs))
        logging_steps = max(1, min(10, math.ceil(total_steps / 50)))
        self.check_combinations(ctx, draft, data)
        decisions = dict(ctx.decisions)
        decisions.update(draft.decisions)
        self._decide_final(decisions, draft, ctx, effective)
        run_schedule, padding = self.plan_schedule(
            decisions, draft, ctx, data, total_steps, train_sequences, trainable
        )
        eval_steps = decisions["eval_steps"].value
        guards, guard_decisions, guard_warnings = plan_guards(
            self.tc,
            method=draft.method,
            world_size=world,
            distributed=draft.distributed,
            gradient_checkpointing=draft.gradient_checkpointing,
            cpu_offload=draft.cpu_offload,
            max_seq_length=ctx.seq_len,
            eval_steps=eval_steps,
        )
        decisions.update((d.setting, d) for d in guard_decisions)
        for header, detail, path in guard_warnings:
            self.warn(header, detail, path)
        if self.spec.trust_remote_code:
            self.warn(
                "trust_remote_code runs the model's own Python code",
                f"{self.spec.base_model} loads with code from its repository (the auto_map entries "
                "of its config.json, which train.py prints before loading); read that code first",
                "trust_remote_code",
            )
        self._decide_result(decisions, draft, ctx, data, train_sequences, eval_steps)
        collation, collation_fallback, use_liger = self._decide_kernels(decisions, ctx)
        return Plan(
            num_labels=self.num_labels,
            generator_version=__version__,
            spec_name=self.spec_name,
            base_model=self.spec.base_model,
            model_source=self.model.source,
            model_type=self.arch.model_type,
            trust_remote_code=self.spec.trust_remote_code,
            task_type=self.spec.task_type.value,
            dataset=data,
            prompt_format=ctx.prompt_format,
            chat_template_family=self.arch.chat_template_family,
            method=draft.method,
            quantization=quant,
            lora=lora,
            num_virtual_tokens=(
                ctx.virtual_tokens if METHODS[draft.method].trains_virtual_tokens else None
            ),
            freeze_trainable_layers=ctx.freeze if METHODS[draft.method].kind == "freeze" else None,
            distributed=draft.distributed,
            cpu_offload=draft.cpu_offload,
            precision=ctx.precision,
            micro_batch_size=draft.micro_batch,
            gradient_accumulation_steps=draft.accumulation,
            effective_batch_size=effective,
            gradient_checkpointing=draft.gradient_checkpointing,
            optimizer=draft.optimizer,
            learning_rate=ctx.learning_rate_for(draft.method),
            lr_scheduler=ctx.lr_scheduler,
            warmup_ratio=ctx.warmup_ratio,
            weight_decay=ctx.weight_decay_for(draft.method),
            max_grad_norm=ctx.max_grad_norm,
            epochs=ctx.epochs,
            max_seq_length=ctx.seq_len,
            packing=ctx.packing,
            collation=collation,
            collation_fallback=collation_fallback,
            use_liger_kernel=use_liger,
            seed=self.tc.seed,
            save_total_limit=ctx.save_total_limit,
            logging_steps=logging_steps,
            eval_steps=eval_steps,
            schedule=run_schedule,
            padding=padding,
            train_sequences=train_sequences,
            load_best_model_at_end=decisions["load_best_model_at_end"].value,
            early_stopping_patience=decisions["early_stopping_patience"].value,
            fp32_master_weights=bool(full_master_weights(draft, ctx.precision)),
            output_dir=self.spec.output_dir,
            run_name=self.spec.run_name
            or f"{self.spec.base_model.rstrip('/').split('/')[-1]}-{draft.method}",
            decoder_layer_class=self.arch.decoder_layer_class,
            guards=guards,
            hardware=ctx.hardware,
            launch=LaunchPlan.for_distribution(draft.distributed, ctx.world_size),
            total_params=self.counts.total,
            trainable_params=trainable,
            decisions=sorted(decisions.values(), key=lambda d: d.setting),
            fallbacks_applied=draft.fallbacks,
            warnings=list(self.warnings),
            report_to=trackers(self.tc.report_to, self.tc.wandb_project),
            wandb_project=self.tc.wandb_project or "",
        )

    def check_combinations(self, ctx: Context, draft: _Draft, data: DatasetPlan) -> None:
        """Known-bad combinations, reported at plan time with their fix instead of at run time."""
        eval_rows = round(data.num_examples * data.eval_split)
        if ctx.packing and data.eval_split > 0 and eval_rows < 10:
            self.warn(
                "packing with a tiny eval split",
                f"{eval_rows} evaluation rows pack into one or two sequences, so eval_loss is noise; "
                "raise dataset.eval_split or turn packing off",
                "dataset.eval_split",
            )
        if data.eval_split > 0 and eval_rows < ctx.world_size:
            self.warn(
                "the eval split leaves some GPUs without an eval batch",
                f"{eval_rows} evaluation rows for {ctx.world_size} GPUs; raise dataset.eval_split",
                "dataset.eval_split",
            )
        self.check_system_role(ctx, data)
        sharded = DISTRIBUTIONS[draft.distributed].shards_weights
        if draft.method == "qlora" and sharded:
            self.warn(
                "QLoRA with sharded weights",
                "4-bit weights are stored as bf16/fp16 (bnb_4bit_quant_storage) so ZeRO-3/FSDP can shard "
                "them; with the default uint8 storage the run fails at start-up",
                "training_config.distributed",
            )
        if sharded and draft.method != "full":
            self.warn(
                "adapters from sharded checkpoints",
                "intermediate checkpoints hold sharded states; merge the final adapter saved in "
                f"{self.spec.output_dir}/ (gathered at save time), not a checkpoint-* folder",
                "training_config.distributed",
            )
        if draft.method in ("prefix_tuning", "prompt_tuning") and draft.gradient_checkpointing:
            self.warn(
                f"{draft.method} with gradient checkpointing",
                "virtual tokens live in the attention cache, which checkpointing disables in some "
                "models; if training fails, turn gradient_checkpointing off and lower the micro-batch",
                "training_config.gradient_checkpointing",
            )

    def check_system_role(self, ctx: Context, data: DatasetPlan) -> None:
        """A local model's chat template without a system role, said at plan time."""
        if not PROMPT_FORMATS[ctx.prompt_format].uses_model_template or self.model.path is None:
            return
        template = local_chat_template(self.model.path)
        if template is None or template_system_role(template) != "refused":
            return
        action = {
            "merge": "train.py merges system messages into the first user turn",
            "drop": "train.py drops system messages",
            "error": "train.py stops on any row with a system message",
        }[data.system_message]
        self.warn(
            "the chat template has no system role",
            f"it raises on system messages; {action} (dataset.system_message: {data.system_message})",
            "dataset.system_message",
        )

    def _decide_final(
        self, decisions: dict[str, Decision], draft: _Draft, ctx: Context, effective: int
    ) -> None:
        def put(setting: str, value: Any, why: str, source: str = "planner") -> None:
            if setting not in decisions:
                decisions[setting] = Decision(setting=setting, value=value, why=why, source=source)

        fell_back = {f.setting for f in draft.fallbacks}
        put(
            "micro_batch_size",
            draft.micro_batch,
            (
                "fallback: halved until the run fits"
                if "micro_batch_size" in fell_back
                else ctx.batch_why
            )
            + self.liger_batch_note(draft, ctx),
            "fallback" if "micro_batch_size" in fell_back else ctx.batch_source,
        )
        put(
            "gradient_accumulation_steps",
            draft.accumulation,
            f"keeps the effective batch at {effective} sequences per optimizer step",
        )
        put(
            "gradient_checkpointing",
            draft.gradient_checkpointing,
            (
                "fallback: activations did not fit"
                if "gradient_checkpointing" in fell_back
                else ctx.gc_why
            ),
            "fallback" if "gradient_checkpointing" in fell_back else ctx.gc_source,
        )
        if "method" in fell_back and self.tc.optimizer is None:
            put(
                "optimizer",
                draft.optimizer,
                "fallback: " + ctx.optimizer_why(draft.method),
                "fallback",
            )
        put("optimizer", draft.optimizer, ctx.optimizer_why(draft.method), ctx.optimizer_source)
        put(
            "distributed",
            draft.distributed,
            "one GPU: no distribution" if ctx.world_size == 1 else "set in the spec",
        )
        put(
            "cpu_offload",
            draft.cpu_offload,
            (
                "fallback: nothing else fits"
                if "cpu_offload" in fell_back
                else "not needed: the run fits on the GPU"
            ),
        )
        put(
            "learning_rate",
            ctx.learning_rate_for(draft.method),
            ctx.lr_why(draft.method),
            ctx.lr_source,
        )

    def liger_batch_note(self, draft: _Draft, ctx: Context) -> str:
        """What Liger's fused cross-entropy buys at the planned micro-batch ("" when nothing)."""
        if not self.collation_and_liger(ctx)[1] or self.task != "causal_lm":
            return ""
        with_liger = self.peak_gb(draft, ctx)
        without = self.peak_gb(draft, ctx, liger=False)
        note = (
            f"; with Liger's fused linear cross-entropy (no fp32 logits) the peak is "
            f"{with_liger:.1f} GB instead of {without:.1f} GB"
        )
        if without <= ctx.usable:
            return note
        smaller = replace(draft, decisions={}, fallbacks=[])
        while smaller.micro_batch > 1 and self.peak_gb(smaller, ctx, liger=False) > ctx.usable:
            smaller.micro_batch //= 2
        return (
            note + f": without it micro-batch {smaller.micro_batch} would be the largest that fits"
        )

    def _decide_kernels(
        self, decisions: dict[str, Decision], ctx: Context
    ) -> tuple[str, str, bool]:
        """The collation expected on the target GPU, its fallback, and Liger, with reasons."""
        _, fallback, why, _, liger_why = self.kernel_choice(ctx)
        collation, use_liger = self.collation_and_liger(ctx)  # what every estimate planned with
        decisions["collation"] = Decision(setting="collation", value=collation, why=why)
        decisions["collation_fallback"] = Decision(
            setting="collation_fallback",
            value=fallback,
            why="what train.py uses when the expected kernel is not there at start-up (it prints which)",
        )
        decisions["use_liger_kernel"] = Decision(
            setting="use_liger_kernel", value=use_liger, why=liger_why
        )
        return collation, fallback, use_liger

    def train_sequences(self, ctx: Context, data: DatasetPlan) -> int:
        """Sequences per epoch: one per row, or packed blocks of max_seq_length tokens."""
        train_rows = data.train_rows  # this dataset's training share + dataset.mix rows
        if not ctx.packing and self.collation_and_liger(ctx)[0] != "packing":
            return train_rows
        tokens = data.train_tokens() + train_rows  # + the EOS between documents
        return max(1, math.ceil(tokens / ctx.seq_len))

    def plan_schedule(
        self,
        decisions: dict[str, Decision],
        draft: _Draft,
        ctx: Context,
        data: DatasetPlan,
        total_steps: int,
        train_sequences: int,
        trainable: int,
    ) -> tuple[SchedulePlan, PaddingPlan]:
        """Eval cadence, eval subset and batch, save cadence, and the padding they all process."""
        tc = self.tc
        has_eval = data.eval_split > 0
        patience = tc.early_stopping_patience or 0
        best = (
            tc.load_best_model_at_end if tc.load_best_model_at_end is not None else bool(patience)
        )
        collation, _ = self.collation_and_liger(ctx)
        shape = self.shape_of(draft, ctx)
        train_peak = estimate_memory(self.arch, self.counts, shape).peak_gb
        # The split as train.py makes it: at least one eval row when eval_split > 0.
        eval_rows = max(1, round(data.num_examples * data.eval_split)) if has_eval else 0
        train_rows = max(1, round(data.num_examples * data.train_split))

        cadence = schedule.eval_cadence(total_steps, early_stopping=bool(patience))
        unit = "packed sequences" if (ctx.packing or collation == "packing") else "rows"
        estimated = (
            f" (estimated: {data.avg_tokens_per_example} tokens per row, {ctx.seq_len}-token blocks)"
            if unit == "packed sequences"
            else ""
        )
        decisions["eval_steps"] = Decision(
            setting="eval_steps",
            value=cadence.value,
            why=f"{cadence.why}; {train_sequences} training {unit} per epoch{estimated}",
        )
        evaluations = schedule.evaluations_in_run(total_steps, cadence.value, has_eval)
        ratio = flops_per_token(self.arch, self.counts, shape) / eval_flops_per_token(
            self.arch, self.counts, shape
        )
        subset = schedule.eval_subset(
            eval_rows,
            train_rows=train_sequences if unit == "packed sequences" else train_rows,
            epochs=ctx.epochs,
            flops_ratio=ratio,
            evaluations=evaluations,
        )
        decisions["eval_examples"] = Decision(
            setting="eval_examples", value=subset.value, why=subset.why
        )
        batch = schedule.eval_batch(
            draft.micro_batch,
            eval_examples=subset.value,
            world_size=ctx.world_size,
            eval_peak_gb=lambda size: estimate_eval_memory(self.arch, self.counts, shape, size),
            train_peak_gb=train_peak,
        )
        decisions["eval_batch_size"] = Decision(
            setting="eval_batch_size", value=batch.value, why=batch.why
        )

        lengths = self.stats.token_lengths if self.stats else None
        fraction = {
            name: useful_fraction(
                name,
                lengths,
                micro_batch=draft.micro_batch,
                sampler_batch=draft.micro_batch * draft.accumulation,
                max_length=ctx.seq_len,
                seed=tc.seed,
            )
            for name in COLLATIONS
        }
        eval_fraction = {
            name: useful_fraction(
                name, lengths, micro_batch=batch.value, max_length=ctx.seq_len, seed=tc.seed
            )[0]
            for name in COLLATIONS
        }
        padding = PaddingPlan(
            train={name: round(value[0], 4) for name, value in fraction.items()},
            eval={name: round(value, 4) for name, value in eval_fraction.items()},
            source=fraction["group_by_length"][1],
        )

        gpu = get_gpu(ctx.hardware.gpu_type)
        tokens = train_rows * min(data.avg_tokens_per_example, ctx.seq_len)
        time = estimate_time(
            self.arch,
            self.counts,
            shape,
            gpu,
            tokens_per_epoch=tokens,
            epochs=ctx.epochs,
            useful_fraction=padding.train[collation],
            collation=collation,
        )
        step_seconds = time.train_hours * 3600 / total_steps
        one_checkpoint = estimate_storage(
            self.arch, self.counts, shape, save_total_limit=1, dataset_bytes=0, tokens_per_epoch=0
        ).checkpoints_gb
        saves, checkpoints = schedule.save_cadence(
            total_steps,
            cadence.value,
            best_is_result=best,
            save_seconds=one_checkpoint * 1e9 / CHECKPOINT_WRITE_BYTES_PER_S,
            step_seconds=step_seconds,
            checkpoint_gb=one_checkpoint,
        )
        decisions["save_steps"] = Decision(setting="save_steps", value=saves.value, why=saves.why)
        return (
            SchedulePlan(
                total_steps=total_steps,
                eval_split_rows=eval_rows,
                eval_examples=subset.value,
                eval_batch_size=batch.value,
                evaluations=evaluations,
                save_steps=saves.value,
                checkpoints=checkpoints,
            ),
            padding,
        )

    def _decide_result(
        self,
        decisions: dict[str, Decision],
        draft: _Draft,
        ctx: Context,
        data: DatasetPlan,
        train_sequences: int,
        eval_steps: int,
    ) -> None:
        """Which model is the result, early stopping, master weights, and the step cadence."""
        tc = self.tc
        has_eval = data.eval_split > 0
        patience = tc.early_stopping_patience or 0
        for setting, asked in (
            ("early_stopping_patience", patience),
            ("load_best_model_at_end", tc.load_best_model_at_end),
        ):
            if asked and not has_eval:
                raise SpecError(
                    f"training_config.{setting} needs an eval split",
                    problems=[f"dataset.eval_split: set it above 0, or drop {setting}"],
                )
        decisions["early_stopping_patience"] = Decision(
            setting="early_stopping_patience",
            value=patience,
            why=(
                f"set in the spec: stop after {patience} evaluations (every {eval_steps} steps) "
                "without a lower eval_loss (EarlyStoppingCallback)"
                if patience
                else "off (opt in with training_config.early_stopping_patience): the run trains "
                "for every planned step"
            ),
            source="spec" if patience else "planner",
        )
        if tc.load_best_model_at_end is not None:
            best, source = tc.load_best_model_at_end, "spec"
            why = (
                "set in the spec: the result is the checkpoint with the lowest eval_loss"
                if best
                else "set in the spec: the result is the last model trained"
            )
        elif patience:
            best, source = True, "planner"
            why = (
                "early stopping is on: the result is the checkpoint with the lowest eval_loss, "
                "not the last `patience` evaluations that did not improve"
            )
        else:
            best, source = False, "planner"
            why = (
                "the result is the last model trained (opt in to the best-by-eval_loss checkpoint)"
            )
        decisions["load_best_model_at_end"] = Decision(
            setting="load_best_model_at_end", value=best, why=why, source=source
        )
        master = full_master_weights(draft, ctx.precision)
        if master is not None:
            decisions["fp32_master_weights"] = Decision(
                setting="fp32_master_weights",
                value=master,
                why=(
                    "fp32 weights and optimizer states with bf16/fp16 autocast (16-18 B/param): "
                    "updates at small learning rates are not rounded away"
                    if master
                    else "fallback: pure bf16 (see fallbacks_applied)"
                ),
                source="planner" if master else "fallback",
            )

    def no_fit_error(self, ctx: Context, draft: _Draft, peak: float) -> NoFitError:
        """The error for a plan that does not fit; planning.plan adds what would fit."""
        head = (
            f"No plan fits {ctx.world_size} x {ctx.hardware.vram_per_gpu_gb:g} GB: even with "
            f"{draft.method}, micro-batch {draft.micro_batch}, gradient checkpointing "
            f"{'on' if draft.gradient_checkpointing else 'off'} and CPU offload "
            f"'{draft.cpu_offload}', the estimated peak is {peak:.1f} GB per GPU "
            f"(usable: {ctx.usable:.1f} GB)."
        )
        tail = (
            f"Or shorten training_config.max_seq_length (now {ctx.seq_len})."
            if ctx.seq_len > 512
            else ""
        )
        return NoFitError(" ".join(filter(None, [head, tail])), head=head, tail=tail)


def full_master_weights(draft: _Draft, precision: str) -> bool | None:
    """The estimator's regime for full fine-tuning on one GPU or DDP (None: not applicable).

    DeepSpeed and FSDP keep fp32 masters themselves; fp16 always needs them (loss scaling);
    fp32 is its own master copy.
    """
    if METHODS[draft.method].is_peft or DISTRIBUTIONS[draft.distributed].engine_keeps_masters:
        return None
    if precision == "fp32":
        return None
    return draft.fp32_master_weights or precision == "fp16"


def plan_spec(
    spec: Spec, *, spec_name: str = "spec.yaml", strict: bool = False
) -> tuple[Plan, list[Diagnostic]]:
    """Plan a spec that names its hardware (``planning.plan`` is the entry point for any spec)."""
    return Planner(spec, spec_name=spec_name, strict=strict).plan()


def trackers(report_to: list[str] | str | None, wandb_project: str | None) -> list[str]:
    """The trackers to report to: TensorBoard unless the spec names others; wandb with a project."""
    names = [report_to] if isinstance(report_to, str) else list(report_to or ["tensorboard"])
    if wandb_project and "wandb" not in names:
        names.append("wandb")
    names = [name for name in dict.fromkeys(names) if name != "none"] if len(names) > 1 else names
    return names
