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


def measure_query_cost(encoder: CachedEncoder, adapter: ResidualAdapter, index: VectorIndex,
                       texts: Sequence[str], depth: int) -> QueryCost:
    """Median per-query times over `texts`, each encoded and searched on its own."""
    model = encoder.model()
    model.encode(list(texts[:1]), show_progress_bar=False)  # warm-up: first-call allocations
    encode, search = [], []
    for text in texts:
        t0 = time.perf_counter()
        raw = model.encode([text], normalize_embeddings=True, convert_to_numpy=True,
                           show_progress_bar=False)
        query = adapter.apply(np.asarray(raw, dtype=np.float32))
        t1 = time.perf_counter()
        index.search(query, depth)
        t2 = time.perf_counter()
        encode.append(t1 - t0)
        search.append(t2 - t1)
    if not texts:
        return QueryCost(float("nan"), float("nan"), 0)
    return QueryCost(1000 * float(np.median(encode)), 1000 * float(np.median(search)), len(texts))
