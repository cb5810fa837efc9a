"""`check-data`: every row against its format, duplicates, lengths, labels and quality flags.

One streaming pass (:class:`DataChecker`) keeps per row only fixed-size numbers (a 64-bit hash of
the normalised text, a MinHash signature, a length), so a 1,000,000-row file is checked in a few
hundred MB whatever its row sizes; duplicates and near duplicates are grouped once at the end.

Thresholds (documented in the README, reported in the JSON under ``thresholds``):

* exact duplicates: equal after Unicode NFKC, case folding and collapsing whitespace;
* near duplicates: estimated Jaccard similarity of word 1- and 2-gram shingle sets at or above
  ``near_dup_threshold`` (0.4: two or three words changed in a 15-word row), found with
  datasketch's MinHash (128 permutations) and LSH
  banding (datasketch's band/row choice for the threshold), candidates confirmed on the
  signatures; reported as clusters, the first row of each is the one kept;
* ``short_response``: a learned response shorter than ``SHORT_RESPONSE_CHARS`` characters;
* ``repeats_prompt``: the response equals the prompt, or ``REPEAT_SHARE`` of its word 3-grams are
  in the prompt;
* ``repetitive``: a text of at least ``REPETITIVE_MIN_CHARS`` characters that zlib compresses
  more than ``REPETITIVE_RATIO`` times (natural text: 2-3.5x);
* ``refusal``: the response matches refusal boilerplate (``REFUSAL_PATTERNS``);
* ``non_text``: at least ``NON_TEXT_MIN_CHARS`` characters of which under ``NON_TEXT_LETTER_SHARE``
  are letters or spaces, or a run of ``NON_TEXT_RUN`` characters without a space (base64, hex).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import zlib
from array import array
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from finetune_gen.data import split as _split_core
from finetune_gen.data.read import OversizedNumber, Record

CHARS_PER_TOKEN = 4.0

SHORT_RESPONSE_CHARS = 5
REPEAT_SHARE = 0.8
REPETITIVE_MIN_CHARS = 200
REPETITIVE_RATIO = 6.0
NON_TEXT_MIN_CHARS = 40
NON_TEXT_LETTER_SHARE = 0.5
NON_TEXT_RUN = 200
REFUSAL_PATTERNS = (
    r"\bas an ai(?: language)? model\b",
    r"\bas an ai (?:assistant|developed by)\b",
    r"\bi(?:'m| am) (?:sorry|afraid),? but i (?:can(?:'t|not)|am unable|won't|will not)\b",
    r"\bi can(?:'t|not) (?:help|assist) (?:you )?with (?:that|this)\b",
    r"\bi(?:'m| am) (?:not able|unable) to (?:help|assist|provide|comply)\b",
)
_REFUSAL = re.compile("|".join(REFUSAL_PATTERNS))
QUALITY_FLAGS = {
    "short_response": f"learned response under {SHORT_RESPONSE_CHARS} characters",
    "repeats_prompt": f"response equals the prompt or {REPEAT_SHARE:.0%} of its word 3-grams are in it",
    "repetitive": f"text of {REPETITIVE_MIN_CHARS}+ characters compressing over {REPETITIVE_RATIO:g}x (zlib)",
    "refusal": 'response matches refusal boilerplate ("as an AI language model", "I\'m sorry, but I can\'t", ...)',
    "non_text": (
        f"{NON_TEXT_MIN_CHARS}+ characters with under {NON_TEXT_LETTER_SHARE:.0%} letters/spaces, "
        f"or {NON_TEXT_RUN}+ characters without a space"
    ),
}

NEAR_DUP_THRESHOLD = 0.4
NUM_PERM = _split_core.NUM_PERM
SIGNATURE_BLOCK = 4096  # signatures are stored in numpy blocks of this many rows
MIN_PER_CLASS = 10
MAX_LISTED = 200  # problems / clusters / flagged rows listed in the report (all are counted)

SHAREGPT_ROLES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
}
CHATML_ROLES = ("system", "user", "assistant", "tool")  # as train.py reads them
_NAN_STRINGS = {"nan", "-nan", "inf", "-inf", "+inf", "infinity", "-infinity", "+infinity"}


@dataclass(frozen=True)
class Problem:
    row: int
    line: int
    kind: str
    message: str
    field: str | None = None

    def text(self) -> str:
        where = f"row {self.row}" + (
            f" (line {self.line})" if self.line and self.line != self.row else ""
        )
        return f"{where}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "row": self.row,
            "line": self.line,
            "kind": self.kind,
            "field": self.field,
            "message": self.text(),
        }


@dataclass
class Example:
    """A row's text split into what the model reads (prompt) and what it learns (learned)."""

    prompt: list[str] = field(default_factory=list)
    learned: list[str] = field(default_factory=list)
    label: str | None = None
    system: list[str] = field(default_factory=list)  # read, not learned; shared by many rows

    def key_text(self) -> str:
        return "\x1f".join(
            ["S", *self.system, "P", *self.prompt, "L", *self.learned, "C", self.label or ""]
        )

    def content_text(self) -> str:
        """What near duplicates are compared on: a system prompt shared by every row is left out."""
        return "\n".join([*self.prompt, *self.learned, self.label or ""])


# Normalisation and shingles: one implementation with the split code that train.py carries
# (finetune_gen/data/split.py's shared core), so check-data and train.py see the same duplicates.
normalize = _split_core.normalize
shingles = _split_core.shingles


# 32-bit shingle hash for MinHash: CRC-32, in C and deterministic across runs (datasketch's
# default SHA-1 wrapper cost 10x more per shingle and dominated the check's time).
shingle_hash = zlib.crc32


def _typename(value: Any) -> str:
    if isinstance(value, OversizedNumber):
        return f"a {len(value.lstrip('-'))}-digit number"
    names = {
        dict: "an object",
        list: "a list",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
    }
    return "null" if value is None else names.get(type(value), type(value).__name__)


class _RowChecker:
    """The format checks of one row (the same rules train.py applies, and some it does not)."""

    def __init__(self, task_type: str, data_format: str, columns: dict[str, str]):
        self.task_type, self.data_format, self.columns = task_type, data_format, columns

    def check(self, record: Record) -> tuple[Example | None, list[Problem]]:
        problems: list[Problem] = []

        def problem(kind: str, message: str, field_name: str | None = None) -> None:
            problems.append(Problem(record.row, record.line, kind, message, field_name))

        row = record.value
        if not isinstance(row, dict):
            problem("not_object", f"expected an object with fields, got {_typename(row)}")
            return None, problems
        example = Example()
        if "messages" in self.columns:
            self._messages(row, example, problem)
        else:
            self._fields(row, example, problem)
        return (None if problems else example), problems

    def _text(self, row: dict, role: str, problem, required: bool = True) -> str | None:
        name = self.columns[role]
        value = row.get(name)
        if value is None:
            if required:
                kind = "label_missing" if role == "label" else "missing_field"
                found = "is null" if name in row else f"is missing; found {sorted(row)[:10]}"
                problem(kind, f"field {name!r} ({role}) {found}", name)
            return None
        if role == "label":
            return self._label(value, name, problem)
        if (
            isinstance(value, (int, float))
            and not isinstance(value, (bool, OversizedNumber))
            and math.isfinite(value)
        ):
            value = str(value)  # a number in a text column is its text, as train.py reads it
        if not isinstance(value, str) or isinstance(value, OversizedNumber):
            problem(
                "mistyped_field",
                f"field {name!r} ({role}) must be a string, got {_typename(value)}",
                name,
            )
            return None
        if required and not value.strip():
            problem("empty_field", f"field {name!r} ({role}) is empty or whitespace-only", name)
            return None
        return value

    def _label(self, value: Any, name: str, problem) -> str | None:
        if isinstance(value, OversizedNumber):
            problem("mistyped_field", f"label field {name!r} is {_typename(value)}", name)
            return None
        if isinstance(value, float) and not math.isfinite(value):
            problem("nan_or_inf", f"label field {name!r} is {value} (NaN/Inf is not a class)", name)
            return None
        if isinstance(value, str):
            if not value.strip():
                problem("label_missing", f"label field {name!r} is empty", name)
                return None
            if value.strip().lower() in _NAN_STRINGS:
                problem(
                    "nan_or_inf",
                    f"label field {name!r} is {value.strip()!r} (read as NaN/Inf, not a class)",
                    name,
                )
                return None
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            problem(
                "mistyped_field",
                f"label field {name!r} must be a string or an integer, got {_typename(value)}",
                name,
            )
            return None
        if isinstance(value, float) and not value.is_integer():
            problem("mistyped_field", f"label field {name!r} is {value}, not a whole number", name)
            return None
        return str(int(value))

    def _fields(self, row: dict, example: Example, problem) -> None:
        for role in ("system", "prompt", "input", "text"):
            if role in self.columns:
                text = self._text(row, role, problem, required=role in ("prompt", "text"))
                if text:
                    (example.system if role == "system" else example.prompt).append(text)
        if "response" in self.columns:
            text = self._text(row, "response", problem)
            if text:
                example.learned.append(text)
        if "label" in self.columns:
            example.label = self._text(row, "label", problem)
        elif self.task_type == "generation" and "text" in self.columns:
            example.learned, example.prompt = example.prompt, []

    def _messages(self, row: dict, example: Example, problem) -> None:
        name = self.columns["messages"]
        turns = row.get(name)
        sharegpt = self.data_format == "sharegpt"
        role_key, content_key = ("from", "value") if sharegpt else ("role", "content")
        if turns is None:
            problem(
                "missing_field",
                f"field {name!r} (messages) is missing; found {sorted(row)[:10]}",
                name,
            )
            return
        if not isinstance(turns, list):
            problem(
                "mistyped_field",
                f"field {name!r} (messages) must be a list of turns, got {_typename(turns)}",
                name,
            )
            return
        if not turns:
            problem("empty_field", f"field {name!r} (messages) is an empty list", name)
            return
        roles: list[str] = []
        for number, turn in enumerate(turns):
            where = f"turn {number}"
            if not isinstance(turn, dict) or role_key not in turn or content_key not in turn:
                problem(
                    "missing_field",
                    f"{where}: expected keys {role_key!r} and {content_key!r}",
                    name,
                )
                return
            speaker, content = turn[role_key], turn[content_key]
            role = (
                SHAREGPT_ROLES.get(speaker)
                if sharegpt
                else (speaker if speaker in CHATML_ROLES else None)
            )
            if role is None:
                known = sorted(SHAREGPT_ROLES) if sharegpt else list(CHATML_ROLES)
                problem(
                    "unknown_role",
                    f"{where}: unknown role {str(speaker)[:40]!r} (expected one of {known})",
                    name,
                )
                return
            calls = turn.get("tool_calls") if role == "assistant" and not sharegpt else None
            if (
                calls
                and isinstance(calls, list)
                and not (isinstance(content, str) and content.strip())
            ):
                # A turn that only calls tools: what is learned is the rendered calls.
                if content is not None and not isinstance(content, str):
                    problem(
                        "mistyped_field",
                        f"{where}: {content_key!r} must be a string or null, got {_typename(content)}",
                        name,
                    )
                    return
                roles.append(role)
                example.learned.append(json.dumps(calls, ensure_ascii=False, default=str))
                continue
            if not isinstance(content, str) or isinstance(content, OversizedNumber):
                problem(
                    "mistyped_field",
                    f"{where}: {content_key!r} must be a string, got {_typename(content)}",
                    name,
                )
                return
            if not content.strip():
                problem(
                    "empty_field", f"{where}: {content_key!r} is empty or whitespace-only", name
                )
                return
            roles.append(role)
            {"assistant": example.learned, "system": example.system}.get(
                role, example.prompt
            ).append(content)
        order = _role_order_problem(roles)
        if order:
            problem("roles_out_of_order", order, name)
        elif "assistant" not in roles:
            problem("no_assistant_turn", "no assistant turn: nothing to learn", name)


def _role_order_problem(roles: list[str]) -> str | None:
    """System first (if at all), then user and assistant taking turns, starting with the user."""
    for number, role in enumerate(roles):
        if role == "system" and number > 0:
            return f"turn {number}: a system turn after the conversation started"
    talk = [r for r in roles if r != "system"]
    for number, (before, now) in enumerate(pairwise(talk), 1):
        if now == "tool" and before not in ("assistant", "tool"):
            offset = len(roles) - len(talk)
            return f"turn {number + offset}: a tool result that no assistant turn called for (roles out of order)"
        if before == now and now != "tool":  # parallel tool calls return several results
            offset = len(roles) - len(talk)
            return f"turn {number + offset}: two {now} turns in a row (roles out of order)"
    if talk and talk[0] == "assistant":
        return f"turn {len(roles) - len(talk)}: the conversation starts with the assistant (roles out of order)"
    return None


def quality_flags(example: Example) -> list[str]:
    flags = []
    response = "\n".join(example.learned)
    prompt = "\n".join(example.prompt)
    if example.learned and example.prompt and example.label is None:
        if len(response.strip()) < SHORT_RESPONSE_CHARS:
            flags.append("short_response")
        if _repeats(prompt, response):
            flags.append("repeats_prompt")
    if example.learned and _REFUSAL.search(normalize(response).replace("\u2019", "'")):
        flags.append("refusal")
    text = prompt + "\n" + response
    if len(text) >= REPETITIVE_MIN_CHARS:
        raw = text.encode()
        if len(raw) / max(1, len(zlib.compress(raw))) > REPETITIVE_RATIO:
            flags.append("repetitive")
    if _non_text(response) or _non_text(prompt):
        flags.append("non_text")
    return flags


def _repeats(prompt: str, response: str) -> bool:
    a, b = normalize(prompt), normalize(response)
    if not b:
        return False
    if a == b:
        return True
    words_a, words_b = a.split(), b.split()
    grams_b = list(zip(words_b, words_b[1:], words_b[2:]))
    if len(grams_b) < 2:
        return False
    grams_a = set(zip(words_a, words_a[1:], words_a[2:]))
    return sum(g in grams_a for g in grams_b) >= REPEAT_SHARE * len(grams_b)


_LONG_RUN = re.compile(rf"\S{{{NON_TEXT_RUN},}}")


_NOT_LETTER_OR_SPACE = re.compile(r"[^\w\s]|[\d_]")


def _non_text(text: str) -> bool:
    if len(text) < NON_TEXT_MIN_CHARS:
        return False
    wordy = len(text) - len(_NOT_LETTER_OR_SPACE.findall(text))  # letters and spaces
    return wordy < NON_TEXT_LETTER_SHARE * len(text) or _LONG_RUN.search(text) is not None


def _hash64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


class DataChecker:
    """Feed records with :meth:`add`; :meth:`finish` returns the report (a plain dict)."""

    def __init__(
        self,
        task_type: str,
        data_format: str,
        columns: dict[str, str],
        *,
        near_dup_threshold: float = NEAR_DUP_THRESHOLD,
        near_dups: bool = True,
        max_seq_length: int | None = None,
        min_per_class: int = MIN_PER_CLASS,
        tokenizer: Any = None,
        tokenizer_name: str | None = None,
    ):
        self.rows = _RowChecker(task_type, data_format, columns)
        self.task_type, self.data_format, self.columns = task_type, data_format, columns
        self.near_dup_threshold = near_dup_threshold
        self.max_seq_length = max_seq_length
        self.min_per_class = min_per_class
        self.tokenizer, self.tokenizer_name = tokenizer, tokenizer_name
        self.count = 0
        self.problem_count = 0
        self.problem_kinds: Counter[str] = Counter()
        self.problems: list[Problem] = []
        self.bad_rows: dict[int, str] = {}  # row -> first problem kind (for --write-clean)
        self.flagged: dict[str, list[int]] = {name: [] for name in QUALITY_FLAGS}
        self.flag_rows: dict[int, list[str]] = {}  # every flagged row (for --write-clean)
        self.flag_counts: Counter[str] = Counter()
        self.labels: Counter[str] = Counter()
        # Per valid row, fixed-size numbers only (parallel arrays).
        self.row_numbers = array("I")
        self.hashes = array("Q")
        self.lengths = array("I")
        self.learned_tokens = 0
        self.total_tokens = 0
        self.near_dups = near_dups
        self._signatures: list[Any] = []  # numpy uint32 blocks of NUM_PERM columns
        self._pending: list[tuple[int, Example]] = []  # for batched tokenization
        if near_dups:
            from datasketch import MinHash

            self._minhash = MinHash(
                num_perm=NUM_PERM, seed=1, hashfunc=shingle_hash
            )  # reused: clear()
            self._block: list[Any] = []

    # ------------------------------------------------------------------ streaming

    def add(self, record: Record) -> list[str]:
        """Check one row; returns its problem kinds and flags (empty when clean)."""
        self.count += 1
        if record.problem is not None:
            self._problem(
                Problem(record.row, record.line, record.kind or "unreadable", record.problem)
            )
            return [record.kind or "unreadable"]
        example, problems = self.rows.check(record)
        for item in problems:
            self._problem(item)
        if example is None:
            return [p.kind for p in problems]
        flags = quality_flags(example)
        if flags:
            self.flag_rows[record.row] = flags
        for name in flags:
            self.flag_counts[name] += 1
            if len(self.flagged[name]) < MAX_LISTED:
                self.flagged[name].append(record.row)
        if example.label is not None and (
            example.label in self.labels or len(self.labels) < 10_000
        ):
            self.labels[example.label] += 1
        self.row_numbers.append(record.row)
        key = example.key_text()
        self.hashes.append(_hash64(normalize(key)))
        if self.near_dups:
            self._add_signature(example.content_text())
        if self.tokenizer is not None:
            self._pending.append((len(self.lengths), example))
            self.lengths.append(0)
            if len(self._pending) >= 256:
                self._tokenize_pending()
        else:
            prompt = sum(len(t) for t in example.prompt + example.system)
            learned = sum(len(t) for t in example.learned)
            self._add_length(
                math.ceil(prompt / CHARS_PER_TOKEN), math.ceil(learned / CHARS_PER_TOKEN)
            )
        return flags

    def _problem(self, item: Problem) -> None:
        self.problem_count += 1
        self.problem_kinds[item.kind] += 1
        self.bad_rows.setdefault(item.row, item.kind)
        if len(self.problems) < MAX_LISTED:
            self.problems.append(item)

    def _add_length(
        self, prompt_tokens: int, learned_tokens: int, index: int | None = None
    ) -> None:
        total = max(1, prompt_tokens + learned_tokens)
        if index is None:
            self.lengths.append(total)
        else:
            self.lengths[index] = total
        self.total_tokens += total
        self.learned_tokens += learned_tokens

    def _tokenize_pending(self) -> None:
        if not self._pending:
            return
        prompts = ["\n".join(ex.system + ex.prompt) for _, ex in self._pending]
        learned = ["\n".join(ex.learned) for _, ex in self._pending]
        encode = lambda texts: self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        for (index, _), p_ids, l_ids in zip(self._pending, encode(prompts), encode(learned)):
            self._add_length(len(p_ids), len(l_ids), index)
        self._pending.clear()

    def _add_signature(self, key: str) -> None:
        import numpy as np

        grams = shingles(key)
        minhash = self._minhash
        minhash.clear()
        if grams:
            minhash.update_batch(list(grams))
        self._block.append(minhash.hashvalues.astype(np.uint32))
        if len(self._block) >= SIGNATURE_BLOCK:
            self._signatures.append(np.stack(self._block))
            self._block = []

    # ------------------------------------------------------------------ results

    def finish(self) -> dict[str, Any]:
        if self.tokenizer is not None:
            self._tokenize_pending()
        self.exact_clusters = self._exact_clusters()
        self.near_clusters = self._near_clusters() if self.near_dups else []
        return self._report(self.exact_clusters, self.near_clusters)

    def _exact_clusters(self) -> list[list[int]]:
        """Rows whose normalised text is equal, found by sorting the 64-bit hashes."""
        import numpy as np

        hashes = (
            np.frombuffer(self.hashes, dtype=np.uint64)
            if len(self.hashes)
            else np.zeros(0, np.uint64)
        )
        order = np.argsort(hashes, kind="stable")
        ordered = hashes[order]
        starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]]) if len(ordered) else []
        ends = np.r_[starts[1:], len(ordered)] if len(ordered) else []
        return sorted(
            sorted(self.row_numbers[int(i)] for i in order[start:stop])
            for start, stop in zip(starts, ends)
            if stop - start > 1
        )

    def _near_clusters(self) -> list[list[int]]:
        import numpy as np
        from datasketch import MinHashLSH

        blocks = self._signatures + ([np.stack(self._block)] if self._block else [])
        self._signatures, self._block = blocks, []
        if not blocks:
            return []
        n = sum(len(block) for block in blocks)

        def signature(i: int) -> Any:  # blocks are kept apart: no second copy of every signature
            return blocks[i // SIGNATURE_BLOCK][i % SIGNATURE_BLOCK]

        lsh = MinHashLSH(threshold=self.near_dup_threshold, num_perm=NUM_PERM)  # for its b and r
        bands, rows_per_band = lsh.b, lsh.r
        empty = np.concatenate([(block == np.iinfo(np.uint32).max).all(axis=1) for block in blocks])
        pairs: set[tuple[int, int]] = set()
        for band in range(bands):
            keys = []
            for block in blocks:
                columns = block[:, band * rows_per_band : (band + 1) * rows_per_band].astype(
                    np.uint64
                )
                key = np.zeros(len(block), dtype=np.uint64)
                for column in columns.T:
                    key = (key ^ column) * np.uint64(0x100000001B3)
                keys.append(key)
            key = np.concatenate(keys)
            key[empty] = np.arange(n, dtype=np.uint64)[empty] + np.uint64(1 << 63)  # never equal
            order = np.argsort(key, kind="stable")  # equal keys stay in row order
            ordered = key[order]
            starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
            ends = np.r_[starts[1:], n]
            for start, stop in zip(starts[ends - starts > 1], ends[ends - starts > 1]):
                first = int(order[start])
                pairs.update((first, int(other)) for other in order[start + 1 : stop])
        # Star clusters: a row joins the cluster of an earlier row only if it is similar to that
        # cluster's first row, so chains of slightly different rows do not merge into one.
        representative: dict[int, int] = {}
        for a, b in sorted(pairs):
            head = representative.get(a, a)
            if b in representative or b == head:
                continue
            if float(np.mean(signature(head) == signature(b))) >= self.near_dup_threshold:
                representative[b] = head
        members: dict[int, list[int]] = {}
        for row, head in representative.items():
            members.setdefault(head, [head]).append(row)
        return sorted(
            sorted(self.row_numbers[i] for i in group)
            for group in members.values()
            # A cluster of exact copies of one row is reported as exact duplicates only.
            if len({self.hashes[i] for i in group}) > 1
        )

    def _length_stats(self) -> dict[str, Any]:
        ordered = sorted(self.lengths)

        def pct(q: float) -> int:
            return (
                ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]
                if ordered
                else 0
            )

        stats: dict[str, Any] = {
            "tokenizer": self.tokenizer_name
            or f"estimate (~{CHARS_PER_TOKEN:g} characters per token; no tokenizer given)",
            "estimated": self.tokenizer is None,
            "mean": round(sum(ordered) / len(ordered), 1) if ordered else 0,
            "p50": pct(0.5),
            "p90": pct(0.9),
            "p99": pct(0.99),
            "max": ordered[-1] if ordered else 0,
            "total_tokens": self.total_tokens,
            "learned_token_share": (
                round(self.learned_tokens / self.total_tokens, 4) if self.total_tokens else 0.0
            ),
            "max_seq_length": self.max_seq_length,
            "over_max_seq_length": (
                sum(1 for v in ordered if v > self.max_seq_length) if self.max_seq_length else None
            ),
        }
        return stats

    def _report(self, exact: list[list[int]], near: list[list[int]]) -> dict[str, Any]:
        labels: dict[str, Any] | None = None
        if "label" in self.columns:
            below = sorted(name for name, n in self.labels.items() if n < self.min_per_class)
            labels = {
                "counts": dict(sorted(self.labels.items())),
                "classes": len(self.labels),
                "min_per_class": self.min_per_class,
                "below_minimum": below,
            }
        warnings = []
        if labels and labels["below_minimum"]:
            warnings.append(
                f"{len(labels['below_minimum'])} classes have fewer than {self.min_per_class} rows: "
                + ", ".join(labels["below_minimum"][:10])
            )
        if labels and labels["classes"] == 1:
            warnings.append("only one class: a classifier cannot learn anything")
        lengths = self._length_stats()
        if lengths["over_max_seq_length"]:
            warnings.append(
                f"{lengths['over_max_seq_length']} rows are longer than max_seq_length "
                f"{self.max_seq_length} and will be truncated"
            )
        return {
            "rows": self.count,
            "valid_rows": len(self.row_numbers),
            "task_type": self.task_type,
            "format": self.data_format,
            "columns": self.columns,
            "problems": {
                "count": self.problem_count,
                "rows": len(self.bad_rows),
                "by_kind": dict(sorted(self.problem_kinds.items())),
                "items": [p.to_dict() for p in self.problems],
            },
            "duplicates": {
                "exact": {
                    "clusters": len(exact),
                    "extra_rows": sum(len(c) - 1 for c in exact),
                    "listed": exact[:MAX_LISTED],
                },
                "near": {
                    "checked": self.near_dups,
                    "threshold": self.near_dup_threshold,
                    "clusters": len(near),
                    "extra_rows": sum(len(c) - 1 for c in near),
                    "listed": near[:MAX_LISTED],
                },
            },
            "lengths": lengths,
            "labels": labels,
            "quality": {
                name: {
                    "rule": QUALITY_FLAGS[name],
                    "count": self.flag_counts[name],
                    "rows": self.flagged[name],
                }
                for name in QUALITY_FLAGS
            },
            "warnings": warnings,
            "thresholds": {
                "near_dup_threshold": self.near_dup_threshold,
                "num_perm": NUM_PERM,
                "shingles": "word 1- and 2-grams of the normalised text",
                "min_per_class": self.min_per_class,
                **{name: rule for name, rule in QUALITY_FLAGS.items()},
            },
        }


def check_records(records: Iterable[Record], checker: DataChecker) -> dict[str, Any]:
    for record in records:
        checker.add(record)
    return checker.finish()
