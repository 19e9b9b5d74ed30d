"""Small helpers several test modules share."""

from __future__ import annotations

import numpy as np
import torch


def unit_rows(rng: np.random.Generator | int, n: int, dim: int = 16) -> np.ndarray:
    """`n` random unit vectors of width `dim` (float32), from a generator or a seed."""
    rng = np.random.default_rng(rng) if isinstance(rng, int) else rng
    x = rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def states_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """Two adapter state dicts hold exactly the same tensors."""
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
