"""Retrieval metrics by pytrec_eval, the evaluator MTEB and BEIR use (never hand-rolled NDCG)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytrec_eval

Run = Mapping[str, Mapping[str, float]]
Qrels = Mapping[str, Mapping[str, int]]

_MEASURES = {"ndcg_cut.10": "ndcg_at_10", "recall.100": "recall_at_100"}


def per_query_scores(qrels: Qrels, run: Run) -> dict[str, dict[str, float]]:
    """{query id: {"ndcg_at_10": .., "recall_at_100": ..}} for every query in `qrels`.
    A query the run retrieved nothing for scores 0 (pytrec_eval would silently drop it)."""
    evaluator = pytrec_eval.RelevanceEvaluator(
        {q: dict(d) for q, d in qrels.items()}, set(_MEASURES)
    )
    scored = evaluator.evaluate({q: dict(run.get(q, {})) for q in qrels if run.get(q)})
    zero = {name: 0.0 for name in _MEASURES.values()}
    out: dict[str, dict[str, float]] = {}
    for q in qrels:
        got = scored.get(q)
        out[q] = {name: float(got[key.replace(".", "_")]) for key, name in _MEASURES.items()} \
            if got else dict(zero)
    return out


def mean_and_std(values: list[float] | np.ndarray) -> tuple[float, float]:
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return float("nan"), float("nan")
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0
