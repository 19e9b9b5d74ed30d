"""What one query costs at serving time: the query-side model's encoding (student plus adapter,
one query at a time, no cache) and one search of the index. Whatever the documents hold, a query
is always encoded by the student, so this is the price side of a run's quality."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from chelation.adapter import ResidualAdapter
from chelation.encoders import CachedEncoder
from chelation.engine import VectorIndex


@dataclass
class QueryCost:
    encode_ms: float  # per query: the model's forward pass and the adapter
    search_ms: float  # per query: one exact search of the index
    n_queries: int


_model_seconds: dict[tuple[str, tuple[str, ...]], list[float]] = {}


def model_encode_seconds(encoder: CachedEncoder, texts: Sequence[str]) -> list[float]:
    """The student model's encode time for each text on its own, uncached. It depends on the
    model and the texts only, not on the job, so it is measured once per process and reused by
    every job of a multirun that runs there."""
    key = (encoder.fingerprint, tuple(texts))
    if key not in _model_seconds:
        model = encoder.model()
        seconds = []
        with encoder.precision_context():
            model.encode(list(texts[:1]), show_progress_bar=False)  # warm-up: first allocations
            for text in texts:
                t0 = time.perf_counter()
                model.encode([text], normalize_embeddings=True, convert_to_numpy=True,
                             show_progress_bar=False)
                seconds.append(time.perf_counter() - t0)
        _model_seconds[key] = seconds
    return _model_seconds[key]


def measure_query_cost(encoder: CachedEncoder, adapter: ResidualAdapter, index: VectorIndex,
                       texts: Sequence[str], raw: np.ndarray, depth: int) -> QueryCost:
    """Median per-query times over `texts` (whose student embeddings are `raw`): the model's
    encoding plus this job's adapter, and one search of this job's index, each on its own."""
    if not texts:
        return QueryCost(float("nan"), float("nan"), 0)
    model_seconds = model_encode_seconds(encoder, texts)
    encode, search = [], []
    for i, model_s in enumerate(model_seconds):
        t0 = time.perf_counter()
        query = adapter.apply(raw[i:i + 1])
        t1 = time.perf_counter()
        index.search(query, depth)
        t2 = time.perf_counter()
        encode.append(model_s + t1 - t0)
        search.append(t2 - t1)
    return QueryCost(1000 * float(np.median(encode)), 1000 * float(np.median(search)), len(texts))
