"""The task types: one entry each, holding the facts every layer reads.

The spec's `task_type` values are this table's keys. The planner reads an entry's column roles
and sequence-length default, the estimator its head (and sequences per example), the renderer
its template partial (templates/train/task_<partial>.py.jinja, templates/eval/task_<partial>.py.jinja),
model classes and the text that says what the loss is computed on, evaluation its metrics.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TaskEntry:
    name: str
    partial: str  # the task partial the templates include
    # The model head the estimator and the parameter counts size: "causal_lm" (the language
    # model head) or "sequence_classification" (a new num_labels-way head, always trained).
    head: str
    # The column roles a row must give, as alternatives: any one set is enough.
    roles: tuple[tuple[str, ...], ...]
    # What train.py's docstring says the loss is computed on.
    loss_on: str
    # Examples become this many sequences in one training step (2 for preference pairs).
    sequences_per_example: int = 1
    # The planner's max_seq_length when the data is not at hand and the spec gives none
    # (None: the model-and-data rule of hyperparams.py).
    default_seq_len: int | None = None
    # eval.py generates text and scores it against references (ROUGE-L needs rouge-score).
    scores_generations: bool = False
    # The prompt format (prompts.PROMPT_FORMATS) for a model with a chat template, and without.
    prompt_formats: tuple[str, str] = ("none", "none")
    # The loss is on every token of raw text (packed into blocks when the plan packs).
    raw_text: bool = False
    # What eval.py's samples hold.
    samples: str = (
        "the first prompts with the reference, the base model's and the fine-tuned model's "
        "generations side by side"
    )

    def text_fields(self, columns: dict[str, str]) -> list[tuple[str, bool]]:
        """The (role, required) fields joined into one text, for tasks that read rows as text
        (classification, generation); empty when rows are conversations."""
        if "messages" in columns:
            return []
        if self.classifies:
            return [("text" if "text" in columns else "prompt", True), ("input", False)]
        if self.raw_text:
            if "text" in columns:
                return [("text", True)]
            # prompt/response data read as raw text: prompt, input and response joined
            return [("prompt", True), ("input", False), ("response", True)]
        return []

    @property
    def classifies(self) -> bool:
        return self.head == "sequence_classification"

    @property
    def auto_model_class(self) -> str:
        return "AutoModelForSequenceClassification" if self.classifies else "AutoModelForCausalLM"

    @property
    def auto_peft_class(self) -> str:
        return (
            "AutoPeftModelForSequenceClassification"
            if self.classifies
            else "AutoPeftModelForCausalLM"
        )

    @property
    def peft_task_type(self) -> str:
        return "SEQ_CLS" if self.classifies else "CAUSAL_LM"

    @property
    def perplexity(self) -> bool:
        """eval_loss is a per-token language-model loss, so perplexity means something."""
        return not self.classifies


CONVERSATION_ROLES = (("prompt", "response"), ("messages",))
TASKS: dict[str, TaskEntry] = {
    t.name: t
    for t in (
        TaskEntry(
            "instruction",
            "sft",
            "causal_lm",
            CONVERSATION_ROLES,
            "the response tokens only (the prompt is masked)",
            scores_generations=True,
            prompt_formats=("chat_template", "alpaca"),
        ),
        TaskEntry(
            "chat",
            "sft",
            "causal_lm",
            CONVERSATION_ROLES,
            "assistant turns only (system and user turns are masked)",
            scores_generations=True,
            prompt_formats=("chat_template", "chatml_default"),
        ),
        TaskEntry(
            "classification",
            "classification",
            "sequence_classification",
            (("text", "label"),),
            "the label (a sequence-classification head)",
            default_seq_len=512,
            samples="the first texts with their true and predicted class",
        ),
        TaskEntry(
            "generation",
            "generation",
            "causal_lm",
            (("text",), *CONVERSATION_ROLES),
            "every token of the raw text",
            raw_text=True,
        ),
    )
}
TASK_NAMES: tuple[str, ...] = tuple(TASKS)


def task(name: str) -> TaskEntry:
    return TASKS[name]
