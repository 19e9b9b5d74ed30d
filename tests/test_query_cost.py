"""What a query costs at serving time, measured with the real MiniLM student and the real index."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from chelation.adapter import ResidualAdapter
from chelation.encoders import CachedEncoder
from chelation.engine import open_index
from chelation.query_cost import _model_seconds, measure_query_cost

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
DOCS = [f"document number {i} about wings, shells and heat" for i in range(40)]
QUERIES = ["heat transfer to wings", "buckling of shells", "which wing is best"]


def test_model_is_timed_once_per_process_then_each_job_times_its_adapter_and_search(
        cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _model_seconds.clear()
    encoder = CachedEncoder(MINILM, cache_dir, show_progress=False)
    docs, queries = encoder.encode(DOCS), encoder.encode(QUERIES)
    index = open_index(docs.shape[1])
    try:
        index.index([str(i) for i in range(len(DOCS))], docs)
        adapter = ResidualAdapter(docs.shape[1], hidden_dim=8, seed=0)
        first = measure_query_cost(encoder, adapter, index, QUERIES, queries, depth=10)
        assert first.n_queries == 3
        assert first.encode_ms > 0.5  # a transformer forward pass, not a cache hit
        assert 0 < first.search_ms < first.encode_ms
        # a second job in this process: the model is not asked again
        monkeypatch.setattr(CachedEncoder, "model", lambda self: pytest.fail("model reloaded"))
        second = measure_query_cost(encoder, adapter, index, QUERIES, queries, depth=10)
        assert second.encode_ms == pytest.approx(first.encode_ms, rel=0.5)
        assert np.isnan(measure_query_cost(encoder, adapter, index, [], queries[:0], 10).encode_ms)
    finally:
        index.close()
