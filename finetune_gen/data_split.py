"""Train / eval / test splits and dataset mixing, as pure functions of row counts and a seed.

:func:`split_rows` reproduces the split the generated train.py makes (``Dataset.shuffle(seed)``,
which draws ``numpy.random.default_rng(seed).permutation(n)``; the first ``n_train`` shuffled
rows train, the last ``n_eval`` evaluate). The test rows are taken from the shuffled rows
between the two, so the current train.py never trains on them, and their file indices can be
written out beside the run. :func:`stratified_split` keeps each class's share in every split.
:func:`mix_counts` / :func:`sample_mix` turn ``dataset.mix`` weights into seeded row samples.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from .errors import SpecError


@dataclass(frozen=True)
class Splits:
    """0-based row indices in file order (row number - 1), each list sorted."""

    train: list[int]
    eval: list[int]
    test: list[int]

    def to_dict(self) -> dict[str, list[int]]:
        return {"train": self.train, "eval": self.eval, "test": self.test}


def split_counts(
    n: int, train_split: float, eval_split: float, test_split: float = 0.0
) -> tuple[int, int, int]:
    """(train, eval, test) row counts, rounded as train.py rounds them."""
    n_eval = max(1, round(n * eval_split)) if eval_split > 0 else 0
    n_test = max(1, round(n * test_split)) if test_split > 0 else 0
    n_train = min(n - n_eval, max(1, round(n * train_split)))
    n_test = max(0, min(n_test, n - n_eval - n_train))
    if n_train < 1 or (test_split > 0 and n_test < 1):
        raise SpecError(
            f"dataset: {n} rows are too few for train_split {train_split}, eval_split {eval_split}"
            + (f", test_split {test_split}" if test_split else "")
        )
    return n_train, n_eval, n_test


def _permutation(n: int, seed: int) -> list[int]:
    import numpy as np

    return [int(i) for i in np.random.default_rng(seed).permutation(n)]


def split_rows(
    n: int, *, train_split: float, eval_split: float, test_split: float = 0.0, seed: int = 42
) -> Splits:
    n_train, n_eval, n_test = split_counts(n, train_split, eval_split, test_split)
    order = _permutation(n, seed)
    return Splits(
        train=sorted(order[:n_train]),
        eval=sorted(order[n - n_eval :]) if n_eval else [],
        test=sorted(order[n_train : n_train + n_test]),
    )


def stratified_split(
    labels: Sequence[Hashable],
    *,
    train_split: float,
    eval_split: float,
    test_split: float = 0.0,
    seed: int = 42,
) -> Splits:
    """Each class split on its own (same rounding), so every split keeps the class shares."""
    import numpy as np

    rng = np.random.default_rng(seed)
    by_class: dict[Hashable, list[int]] = {}
    for index, label in enumerate(labels):
        by_class.setdefault(label, []).append(index)
    train: list[int] = []
    evaluation: list[int] = []
    test: list[int] = []
    for label in sorted(by_class, key=str):
        members = by_class[label]
        order = [members[int(i)] for i in rng.permutation(len(members))]
        n = len(order)
        n_eval = round(n * eval_split)
        n_test = round(n * test_split)
        n_train = min(n - n_eval - n_test, max(1, round(n * train_split)))
        train += order[:n_train]
        test += order[n_train : n_train + n_test]
        evaluation += order[n - n_eval :] if n_eval else []
    if not train:
        raise SpecError("dataset: no rows left for training after the stratified split")
    return Splits(sorted(train), sorted(evaluation), sorted(test))


def near_duplicates_of(
    test_texts: Sequence[str], train_texts: Sequence[str], threshold: float
) -> list[int]:
    """Indices of training texts that are near duplicates of a test text (datasketch MinHash LSH)."""
    from datasketch import MinHash, MinHashLSH

    from .data_check import NUM_PERM, shingle_hash, shingles

    def signature(text: str) -> MinHash:
        minhash = MinHash(num_perm=NUM_PERM, seed=1, hashfunc=shingle_hash)
        minhash.update_batch(list(shingles(text)))
        return minhash

    lsh = MinHashLSH(threshold=threshold, num_perm=NUM_PERM)
    test_signatures = {}
    for index, text in enumerate(test_texts):
        if shingles(text):
            test_signatures[index] = signature(text)
            lsh.insert(index, test_signatures[index])
    dropped = []
    for index, text in enumerate(train_texts):
        if not shingles(text):
            continue
        mine = signature(text)
        if any(mine.jaccard(test_signatures[key]) >= threshold for key in lsh.query(mine)):
            dropped.append(index)
    return dropped


def mix_counts(train_rows: int, mixes: Sequence[tuple[float | None, int | None]]) -> list[int]:
    """Rows drawn from each extra dataset: ``(weight, rows)`` pairs, exactly one of each set.

    A weight is the share of the mixed training set (this dataset's rows plus all mixed rows)
    drawn from that dataset; a row count is taken as it is.
    """
    weights = sum(w for w, _ in mixes if w is not None)
    if weights >= 1:
        raise SpecError("dataset.mix: the weights must add up to less than 1")
    fixed = sum(r for w, r in mixes if w is None and r is not None)
    total = (train_rows + fixed) / (1 - weights)
    return [round(w * total) if w is not None else int(r or 0) for w, r in mixes]


def sample_mix(available: int, count: int, seed: int) -> list[int]:
    """``count`` row indices of a dataset with ``available`` rows: without replacement while
    there are enough rows, then each row once plus a seeded sample with replacement."""
    import numpy as np

    if available < 1:
        raise SpecError("dataset.mix: a mixed dataset has no rows")
    rng = np.random.default_rng(seed)
    if count <= available:
        return sorted(int(i) for i in rng.choice(available, size=count, replace=False))
    extra = rng.choice(available, size=count - available, replace=True)
    return sorted(list(range(available)) + [int(i) for i in extra])
