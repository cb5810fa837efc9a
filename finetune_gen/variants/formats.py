"""The dataset formats: one entry each, holding the facts every layer reads.

The spec's `dataset.format` values are this table's keys. An entry names the fields a row of
that format holds (the default column mapping; `custom` takes the spec's `columns`), the fields
the contamination check reads, and the template partial that turns a row into messages
(templates/train/format_<partial>.py.jinja). `custom` rows are read by the conversation
partial when the columns map `messages`, else by the prompt/response one.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class FormatEntry:
    name: str
    # Role -> field of a row (prompt, input, response, messages); empty for `custom`.
    columns: dict[str, str] = field(default_factory=dict)
    partial: str = ""  # "" : chosen from the columns (custom)

    @property
    def content_fields(self) -> list[str]:
        """The fields that hold a row's text (the contamination check reads only these)."""
        return list(self.columns.values())

    def partial_for(self, columns: dict[str, str]) -> str:
        if self.partial:
            return self.partial
        return "chatml" if "messages" in columns else "alpaca"


FORMATS: dict[str, FormatEntry] = {
    f.name: f
    for f in (
        FormatEntry(
            "alpaca", {"prompt": "instruction", "input": "input", "response": "output"}, "alpaca"
        ),
        FormatEntry("sharegpt", {"messages": "conversations"}, "sharegpt"),
        FormatEntry("chatml", {"messages": "messages"}, "chatml"),
        FormatEntry("custom"),
    )
}
FORMAT_NAMES: tuple[str, ...] = tuple(FORMATS)


def data_format(name: str) -> FormatEntry:
    return FORMATS[name]
