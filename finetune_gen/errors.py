"""The error hierarchy the CLI maps to exit codes (contract section 2)."""

from __future__ import annotations

from typing import Any


class FinetuneGenError(Exception):
    """Base class: a message meant for the user, and the exit code that goes with it."""

    exit_code = 1

    def __init__(self, message: str, *, problems: list[str] | None = None):
        super().__init__(message)
        self.message = message
        self.problems = problems or []


class SpecError(FinetuneGenError):
    """Invalid input or usage: a bad spec, an unknown model, an unreadable file (exit 2)."""

    exit_code = 2


class NoFitError(FinetuneGenError):
    """No plan fits the hardware (exit 3); the message says what would.

    ``head`` and ``tail`` are the planner's sentences around the place where planning adds
    "What would fit: ..." (empty for refusals that have no such place, like --strict's).
    """

    exit_code = 3

    def __init__(
        self, message: str, *, head: str = "", tail: str = "", problems: list[str] | None = None
    ):
        super().__init__(message, problems=problems)
        self.head = head
        self.tail = tail

    def with_suggestion(self, suggestion: str) -> "NoFitError":
        if not (self.head and suggestion):
            return self
        return NoFitError(
            " ".join(filter(None, [self.head, f"What would fit: {suggestion}.", self.tail]))
        )


def short_repr(value: Any, limit: int = 60) -> str:
    """A value quoted for a message, cut short: messages never reprint a huge input."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"
