"""Query-time chelation maths: neighbourhood entropy, the trigger, and centred reranking."""

from __future__ import annotations

import numpy as np

from chelation.kinds import Trigger, names


def neighbourhood_entropy(neighbours: np.ndarray) -> np.ndarray:
    """Mean per-dimension variance of each neighbourhood. `neighbours` is (n_queries, k, dim)
    or (k, dim); returns one value per neighbourhood."""
    return np.asarray(neighbours).var(axis=-2).mean(axis=-1)


def adaptive_threshold(history: np.ndarray, quantile: float) -> float:
    """Entropy above which a neighbourhood counts as dense enough to chelate: the given quantile of
    every entropy seen so far."""
    if not 0.0 <= quantile <= 1.0:
        raise ValueError(f"threshold_quantile={quantile} is outside [0, 1]")
    if len(history) == 0:
        return float("inf")
    return float(np.quantile(history, quantile))


def should_chelate(entropies: np.ndarray, trigger: str, threshold: float) -> np.ndarray:
    """Boolean mask of neighbourhoods to chelate for trigger `adaptive`, `always` or `never`."""
    entropies = np.asarray(entropies)
    if trigger == Trigger.ALWAYS:
        return np.ones(entropies.shape, dtype=bool)
    if trigger == Trigger.NEVER:
        return np.zeros(entropies.shape, dtype=bool)
    if trigger == Trigger.ADAPTIVE:
        return entropies >= threshold
    raise ValueError(f"trigger={trigger!r} is not one of {names(Trigger)}")


def centred_rerank(query: np.ndarray, neighbours: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Spectral centering: subtract the neighbourhood's centre of mass from the query and the
    neighbours, then order the neighbours by cosine in that centred frame.

    Returns (order, centre): indices into `neighbours`, best first, and the centre."""
    centre = neighbours.mean(axis=0)
    q = query - centre
    n = neighbours - centre
    scores = (n @ q) / (np.linalg.norm(n, axis=1) * np.linalg.norm(q) + 1e-12)
    return np.argsort(-scores, kind="stable"), centre
