"""Seeded, order-independent splits of query ids: train/test, k folds and a validation slice."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from chelation.data.dataset import natural_sorted

__all__ = ["inner_folds", "kfold_queries", "selection_slice", "split_queries",
           "validation_slice"]

# Distinct streams so that the same seed does not shuffle the same way in every helper.
_SPLIT_STREAM, _KFOLD_STREAM, _VALIDATION_STREAM, _SELECTION_STREAM, _INNER_STREAM = 1, 2, 3, 4, 5


def _prepare(query_ids: Sequence[str], what: str) -> list[str]:
    if isinstance(query_ids, str):
        raise TypeError(f"{what} must be a sequence of ids, not a single string")
    ids = natural_sorted(str(q) for q in query_ids)
    for a, b in itertools.pairwise(ids):
        if a == b:
            raise ValueError(f"{what} contains the id {a!r} more than once")
    return ids


def _shuffled(ids: list[str], seed: int, stream: int) -> list[str]:
    rng = np.random.default_rng([stream, seed])
    return [ids[int(i)] for i in rng.permutation(len(ids))]


def _held_out_count(n: int, fraction: float) -> int:
    """`round(fraction * n)` kept within `[1, n - 1]`, so both parts are non-empty."""
    return min(max(round(fraction * n), 1), n - 1)


def split_queries(
    query_ids: Sequence[str], test_fraction: float, seed: int
) -> tuple[list[str], list[str]]:
    """Split ids into `(train, test)`, both non-empty and each in natural order.

    The ids are sorted first, so the result depends only on the set of ids, the fraction and
    the seed. `test_fraction` must lie strictly between 0 and 1.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    ids = _prepare(query_ids, "query_ids")
    if len(ids) < 2:
        raise ValueError(f"need at least 2 query ids to split, got {len(ids)}")
    order = _shuffled(ids, seed, _SPLIT_STREAM)
    n_test = _held_out_count(len(ids), test_fraction)
    return natural_sorted(order[n_test:]), natural_sorted(order[:n_test])


def kfold_queries(query_ids: Sequence[str], k: int, seed: int) -> list[tuple[list[str], list[str]]]:
    """Return `k` `(train, test)` pairs whose test parts partition the ids.

    Fold sizes differ by at most one. Requires `2 <= k <= len(query_ids)`.
    """
    return _kfold(query_ids, k, seed, _KFOLD_STREAM)


def inner_folds(train_ids: Sequence[str], k: int, seed: int) -> list[tuple[list[str], list[str]]]:
    """`k` `(train, test)` pairs over a fold's training side (as `kfold_queries`, shuffled
    apart from the outer folds)."""
    return _kfold(train_ids, k, seed, _INNER_STREAM)


def _kfold(query_ids: Sequence[str], k: int, seed: int,
           stream: int) -> list[tuple[list[str], list[str]]]:
    ids = _prepare(query_ids, "query_ids")
    if not 2 <= k <= len(ids):
        raise ValueError(f"k must be between 2 and the number of ids ({len(ids)}), got {k}")
    order = _shuffled(ids, seed, stream)
    folds = [natural_sorted(order[i::k]) for i in range(k)]
    pairs = []
    for i, test in enumerate(folds):
        train = natural_sorted(q for j, fold in enumerate(folds) if j != i for q in fold)
        pairs.append((train, test))
    return pairs


def validation_slice(
    train_ids: Sequence[str], fraction: float, seed: int
) -> tuple[list[str], list[str]]:
    """Hold out a validation slice of training ids: `(fit, val)`, each in natural order.

    `fraction` must lie in `[0, 1)`. With `fraction == 0` or fewer than two ids the slice
    is empty; otherwise both parts are non-empty.
    """
    return _slice(train_ids, fraction, seed, _VALIDATION_STREAM)


def selection_slice(
    train_ids: Sequence[str], fraction: float, seed: int
) -> tuple[list[str], list[str]]:
    """Set apart the queries a fold chooses a configuration on: `(rest, select)`, as
    `validation_slice` but shuffled apart from it. It depends only on the ids, the fraction and
    the seed, so every configuration of a study gets the same selection queries."""
    return _slice(train_ids, fraction, seed, _SELECTION_STREAM)


def _slice(train_ids: Sequence[str], fraction: float, seed: int,
           stream: int) -> tuple[list[str], list[str]]:
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    ids = _prepare(train_ids, "train_ids")
    if fraction == 0.0 or len(ids) < 2:
        return ids, []
    order = _shuffled(ids, seed, stream)
    n_val = _held_out_count(len(ids), fraction)
    return natural_sorted(order[n_val:]), natural_sorted(order[:n_val])
