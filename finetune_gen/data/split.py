"""Train / eval / test splits, dataset mixing, near duplicates of test rows, and oversampling.

One implementation: the "shared core" below is rendered verbatim into the generated train.py
(:func:`core_source`; that script cannot import finetune_gen), so ``check-data SPEC``, the
planner and the tests compute exactly the split train.py makes. The core uses the standard
library and numpy only (datasketch when near duplicates are removed), and imports inside its
functions so that it stands alone wherever it is pasted.

The split: ``numpy.random.default_rng(seed).permutation(n)`` (what ``Dataset.shuffle(seed)``
draws); the first ``n_train`` shuffled rows train, the last ``n_eval`` evaluate, and the test
rows are the shuffled rows between the two. Stratified splits do the same per class.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path

from finetune_gen.errors import SpecError

NUM_PERM = 128  # MinHash permutations, for check-data and for train.py's test near duplicates

# ---- shared core: rendered verbatim into the generated train.py (standard library, numpy) ----


class SplitError(ValueError):
    """Split, mix or oversampling settings that do not fit the data."""


def split_counts(n, train_split, eval_split, test_split=0.0):
    """(train, eval, test) row counts of n rows: each split at least 1 row when its share is set."""
    n_eval = max(1, round(n * eval_split)) if eval_split > 0 else 0
    n_test = max(1, round(n * test_split)) if test_split > 0 else 0
    n_train = min(n - n_eval, max(1, round(n * train_split)))
    n_test = max(0, min(n_test, n - n_eval - n_train))
    if n_train < 1 or (test_split > 0 and n_test < 1):
        raise SplitError(
            f"{n} rows are too few for train_split {train_split}, eval_split {eval_split}"
            + (f", test_split {test_split}" if test_split else "")
        )
    return n_train, n_eval, n_test


def split_indices(n, train_split, eval_split, test_split, seed):
    """(train, eval, test) positions of n rows, each list in its seeded shuffled order."""
    import numpy as np

    n_train, n_eval, n_test = split_counts(n, train_split, eval_split, test_split)
    order = [int(i) for i in np.random.default_rng(seed).permutation(n)]
    return order[:n_train], order[n - n_eval :] if n_eval else [], order[n_train : n_train + n_test]


def stratified_indices(labels, train_split, eval_split, test_split, seed):
    """Like split_indices, each class split on its own so that every split keeps its share.

    Classes are taken in sorted order and each split is shuffled at the end (seeded), so a
    prefix of the eval or test rows is not one class.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    by_class = {}
    for index, label in enumerate(labels):
        by_class.setdefault(str(label), []).append(index)
    train, evaluation, test = [], [], []
    for label in sorted(by_class):
        members = by_class[label]
        order = [members[int(i)] for i in rng.permutation(len(members))]
        n = len(order)
        n_eval = round(n * eval_split)
        n_test = round(n * test_split)
        n_train = min(n - n_eval - n_test, max(1, round(n * train_split)))
        train += order[:n_train]
        test += order[n_train : n_train + n_test]
        evaluation += order[n - n_eval :] if n_eval else []
    if not train or (eval_split > 0 and not evaluation) or (test_split > 0 and not test):
        raise SplitError(f"{len(labels)} rows are too few for a stratified split with these shares")
    return tuple(
        [part[int(i)] for i in rng.permutation(len(part))] for part in (train, evaluation, test)
    )


def mix_row_counts(train_rows, amounts):
    """Rows drawn from each extra dataset, from (weight, rows) pairs: exactly one of each is set.

    A weight is the share of the mixed training set (this dataset's training rows plus every
    mixed row) drawn from that dataset; a row count is taken as it is.
    """
    weights = sum(w for w, _ in amounts if w is not None)
    if weights >= 1:
        raise SplitError("the mix weights must add up to less than 1")
    fixed = sum(r for w, r in amounts if w is None and r is not None)
    total = (train_rows + fixed) / (1 - weights)
    return [round(w * total) if w is not None else int(r or 0) for w, r in amounts]


def sample_indices(available, count, seed):
    """count positions of a dataset with `available` rows, seeded: without replacement while
    there are enough rows, then every row once plus a sample with replacement."""
    import numpy as np

    if available < 1:
        raise SplitError("a mixed dataset has no rows")
    rng = np.random.default_rng(seed)
    if count <= available:
        return [int(i) for i in rng.choice(available, size=count, replace=False)]
    extra = rng.choice(available, size=count - available, replace=True)
    return list(range(available)) + [int(i) for i in extra]


def oversample_indices(labels, seed):
    """Extra positions (repeats) that bring every class up to the largest class's count, seeded."""
    import numpy as np

    rng = np.random.default_rng(seed)
    by_class = {}
    for index, label in enumerate(labels):
        by_class.setdefault(str(label), []).append(index)
    largest = max((len(members) for members in by_class.values()), default=0)
    extra = []
    for label in sorted(by_class):
        members = by_class[label]
        extra += [
            members[int(i)]
            for i in rng.choice(len(members), size=largest - len(members), replace=True)
        ]
    return extra


def normalize(text):
    """The text duplicates are compared on: NFKC, case-folded, whitespace collapsed."""
    import unicodedata

    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def shingles(text):
    """Word 1- and 2-grams of the normalised text, as bytes (MinHash input)."""
    import itertools
    import re

    words = re.findall(r"\w+", normalize(text))
    grams = set(words)
    grams.update(f"{a} {b}" for a, b in itertools.pairwise(words))
    return {g.encode() for g in grams}


def row_text(value):
    """Every text (and number) in a row, nested messages included, joined by newlines."""
    if isinstance(value, dict):
        return "\n".join(row_text(v) for k, v in value.items() if not str(k).startswith("__"))
    if isinstance(value, (list, tuple)):
        return "\n".join(row_text(v) for v in value)
    return "" if value is None else str(value)


def near_duplicate_indices(test_texts, train_texts, threshold, num_perm=128):
    """Positions of training texts whose MinHash Jaccard with some test text is >= threshold
    (datasketch's LSH finds the candidates; each is confirmed on the signatures)."""
    import zlib

    from datasketch import MinHash, MinHashLSH

    def signature(grams):
        minhash = MinHash(num_perm=num_perm, seed=1, hashfunc=zlib.crc32)
        minhash.update_batch(list(grams))
        return minhash

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    signatures = {}
    for index, text in enumerate(test_texts):
        grams = shingles(text)
        if grams:
            signatures[index] = signature(grams)
            lsh.insert(index, signatures[index])
    dropped = []
    for index, text in enumerate(train_texts):
        grams = shingles(text)
        if grams:
            mine = signature(grams)
            if any(mine.jaccard(signatures[key]) >= threshold for key in lsh.query(mine)):
                dropped.append(index)
    return dropped


# ---- end of the shared core ----

_CORE_START = "# ---- shared core: rendered verbatim"
_CORE_END = "# ---- end of the shared core ----"


def core_source(*names: str) -> str:
    """The shared core's source for the generated train.py: the named definitions (all when
    none are named), in the core's order, so a run folder carries only what it uses."""
    import ast

    text = Path(__file__).read_text(encoding="utf-8")
    start = text.index("\n", text.index(_CORE_START)) + 1
    core = text[start : text.index(_CORE_END)]
    lines = core.splitlines()
    parts = []
    for node in ast.parse(core).body:
        name = getattr(node, "name", None)
        if name is not None and (not names or name in names):
            parts.append("\n".join(lines[node.lineno - 1 : node.end_lineno]))
    unknown = set(names) - {getattr(n, "name", None) for n in ast.parse(core).body}
    if unknown:
        raise KeyError(f"not in the shared core: {', '.join(sorted(unknown))}")
    return "\n\n\n".join(parts) + "\n"


@dataclass(frozen=True)
class Splits:
    """0-based row indices in file order (row number - 1), each list sorted."""

    train: list[int]
    eval: list[int]
    test: list[int]

    def to_dict(self) -> dict[str, list[int]]:
        return {"train": self.train, "eval": self.eval, "test": self.test}


def _spec_error(error: SplitError, where: str = "dataset") -> SpecError:
    return SpecError(f"{where}: {error}")


def split_rows(
    n: int, *, train_split: float, eval_split: float, test_split: float = 0.0, seed: int = 42
) -> Splits:
    try:
        parts = split_indices(n, train_split, eval_split, test_split, seed)
    except SplitError as error:
        raise _spec_error(error) from None
    return Splits(*(sorted(part) for part in parts))


def stratified_split(
    labels: Sequence[Hashable],
    *,
    train_split: float,
    eval_split: float,
    test_split: float = 0.0,
    seed: int = 42,
) -> Splits:
    """Each class split on its own (same rounding), so every split keeps the class shares."""
    try:
        parts = stratified_indices(labels, train_split, eval_split, test_split, seed)
    except SplitError as error:
        raise _spec_error(error) from None
    return Splits(*(sorted(part) for part in parts))


def near_duplicates_of(
    test_texts: Sequence[str], train_texts: Sequence[str], threshold: float
) -> list[int]:
    """Indices of training texts that are near duplicates of a test text (datasketch MinHash LSH)."""
    return near_duplicate_indices(test_texts, train_texts, threshold, NUM_PERM)


def mix_counts(train_rows: int, mixes: Sequence[tuple[float | None, int | None]]) -> list[int]:
    try:
        return mix_row_counts(train_rows, mixes)
    except SplitError as error:
        raise _spec_error(error, "dataset.mix") from None


def sample_mix(available: int, count: int, seed: int) -> list[int]:
    try:
        return sorted(sample_indices(available, count, seed))
    except SplitError as error:
        raise _spec_error(error, "dataset.mix") from None


def planned_train_rows(rows: int, train_split: float, eval_split: float, test_split: float) -> int:
    """Training rows of the main dataset as train.py splits them (before mixing or oversampling)."""
    try:
        return split_counts(rows, train_split, eval_split, test_split)[0]
    except SplitError:
        return max(1, round(rows * train_split))
