"""Plan the run-time guards of the generated train.py, each with the reason for its value.

The seed's error patterns ("CUDA out of memory", "Loss is NaN") and its `memory_pressure` and
`training_instability` ladders become settings the script applies by itself:

- a non-finite loss or gradient norm, or a loss spike: stop and keep the last good checkpoint,
  or (``on_nan: rollback``) restart from it with the learning rate x 0.1 and warmup added;
- CUDA out of memory: halve the micro-batch and double the accumulation (the effective batch is
  unchanged), then gradient checkpointing; past the ladder, say what the planner would change.

Pure: returns the plan, the decisions and the warnings; prints nothing.
"""

from __future__ import annotations

from finetune_gen.models.plan import Decision, GuardsPlan
from finetune_gen.models.spec import TrainingConfig
from finetune_gen.variants.methods import METHODS

# The seed's training_instability ladder: reduce_learning_rate factor 0.1, add_warmup_steps ratio 0.03.
ROLLBACK_LR_FACTOR = 0.1
ROLLBACK_WARMUP_RATIO = 0.03
DEFAULT_MAX_ROLLBACKS = 2
# A step loss 5x its running median (and at least 1 nat above it) is a divergence, not a hard
# batch: ordinary batch-to-batch noise in fine-tuning stays well within 2x.
DEFAULT_LOSS_SPIKE_FACTOR = 5.0
SPIKE_WINDOW = 20


def plan_guards(
    tc: TrainingConfig,
    *,
    method: str,
    world_size: int,
    distributed: str,
    gradient_checkpointing: bool,
    cpu_offload: str,
    max_seq_length: int,
    eval_steps: int,
) -> tuple[GuardsPlan, list[Decision], list[tuple[str, str, str]]]:
    """The guards' settings, one Decision each, and (header, detail, spec path) warnings."""
    decisions: list[Decision] = []
    warnings: list[tuple[str, str, str]] = []

    def decide(setting: str, spec_value, default, why: str):
        value = default if spec_value is None else spec_value
        decisions.append(
            Decision(
                setting=f"guards.{setting}",
                value=value,
                why="set in the spec" if spec_value is not None else why,
                source="spec" if spec_value is not None else "planner",
            )
        )
        return value

    on_nan = decide(
        "on_nan",
        tc.on_nan,
        "stop",
        "a non-finite loss usually means a learning rate or data problem a person should look "
        "at; stopping keeps the last good checkpoint and prints the remedies "
        "(on_nan: rollback restarts from it by itself)",
    )
    max_rollbacks = decide(
        "max_rollbacks",
        tc.max_rollbacks,
        DEFAULT_MAX_ROLLBACKS,
        f"each rollback lowers the learning rate x{ROLLBACK_LR_FACTOR:g} again; two tries "
        "reach 1% of it, below which the run is not worth continuing unattended",
    )
    spike = decide(
        "loss_spike_factor",
        tc.loss_spike_factor,
        DEFAULT_LOSS_SPIKE_FACTOR,
        f"a step loss over {DEFAULT_LOSS_SPIKE_FACTOR:g}x the median of the last "
        f"{SPIKE_WINDOW} steps is a divergence that precedes NaN; normal noise stays within 2x",
    )

    # Every kind of allocation (forward, backward, optimizer states, evaluation, saving) has
    # happened once by the first checkpoint; an OOM later is rare and data-dependent.
    first_steps = max(10, eval_steps)
    single_process = world_size == 1 and distributed == "none"
    default_scope = "first_steps" if single_process else "off"
    scope_why = (
        f"the first {first_steps} steps (at least 10, and up to the first checkpoint) allocate "
        "everything the run needs (activations, optimizer states, evaluation, saving); an OOM "
        "there is retried with the seed's memory_pressure ladder"
        if single_process
        else f"{world_size} processes: one rank's OOM leaves the others waiting in a collective "
        "operation, so the run cannot retry in place; bash launch.sh --probe measures first"
    )
    oom_guard = decide("oom_guard", tc.oom_guard, default_scope, scope_why)
    if oom_guard != "off" and not single_process:
        warnings.append(
            (
                "oom_guard needs a single process",
                (
                    f"with {world_size} process(es) and distributed {distributed} an out-of-memory "
                    "error stops the run instead of retrying; lower the micro-batch in the spec"
                ),
                "training_config.oom_guard",
            )
        )

    ladder = ["reduce_batch_size"]
    # peft refuses prefix tuning with checkpointing; a run that already checkpoints has no rung.
    if not gradient_checkpointing and method != "prefix_tuning":
        ladder.append("enable_gradient_checkpointing")
    guards = GuardsPlan(
        on_nan=on_nan,
        max_rollbacks=max_rollbacks,
        rollback_lr_factor=ROLLBACK_LR_FACTOR,
        rollback_warmup_ratio=ROLLBACK_WARMUP_RATIO,
        loss_spike_factor=spike,
        spike_window=SPIKE_WINDOW,
        oom_guard=oom_guard,
        oom_first_steps=first_steps,
        oom_ladder=ladder,
        oom_advice=oom_advice(method, cpu_offload, max_seq_length),
    )
    return guards, decisions, warnings


def oom_advice(method: str, cpu_offload: str, max_seq_length: int) -> list[str]:
    """The rest of the seed's memory_pressure ladder, as spec changes for `finetune-gen plan`."""
    advice = []
    if METHODS[method].base_bits == 16 and (METHODS[method].adapter in ("", "lora")):
        advice.append("training_config.method: qlora (a 4-bit base model: about half the memory)")
    if cpu_offload == "none":
        advice.append(
            "training_config.cpu_offload: optimizer (DeepSpeed ZeRO moves optimizer states to CPU RAM)"
        )
    if max_seq_length > 256:
        advice.append(
            f"training_config.max_seq_length: {max_seq_length // 2} (activations shrink in proportion)"
        )
    advice.append("hardware: a GPU with more memory (finetune-gen plan shows what fits)")
    return advice
