"""The frozen student on the real Cranfield collection, searched through the engine's Qdrant
index, reproduces the published reference figure; the corpus is encoded once per session."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from chelation.data import RetrievalDataset, load_beir
from chelation.encoders import CachedEncoder
from chelation.metrics import per_query_scores
from chelation.protocol import encode_dataset
from chelation.retriever import ChelatedRetriever, EncodedDataset
from chelation.settings import RunSettings, TrainingSettings

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
CRANFIELD = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cranfield"
REFERENCE_NDCG10 = 0.3736  # shared/datasets/README.md: frozen all-MiniLM-L6-v2, all 225 queries

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not CRANFIELD.is_dir(),
                                                  reason="shared Cranfield copy not present")]


@pytest.fixture(scope="module")
def cranfield() -> RetrievalDataset:
    return load_beir(CRANFIELD)


@pytest.fixture(scope="module")
def encoded_cranfield(cranfield: RetrievalDataset, cache_dir: Path) -> EncodedDataset:
    return encode_dataset(cranfield, CachedEncoder(MINILM, cache_dir, show_progress=False))


def test_frozen_minilm_reproduces_reference_ndcg(
    cranfield: RetrievalDataset, encoded_cranfield: EncodedDataset, cache_dir: Path
) -> None:
    settings = RunSettings(cache_dir=str(cache_dir), training=TrainingSettings(mode="frozen"))
    queries = cranfield.judged_query_ids
    assert len(queries) == 225
    r = ChelatedRetriever(encoded_cranfield, settings)
    try:
        result = r.evaluate(queries)
    finally:
        r.close()
    assert len(result.per_query) == 225
    assert result.ndcg_at_10 == pytest.approx(REFERENCE_NDCG10, abs=0.002)
    assert 0.0 < result.recall_at_100 <= 1.0

    # the index search agrees with exact numpy cosine search scored the same way
    q = encoded_cranfield.query_matrix(queries)
    scores = q @ encoded_cranfield.docs.T
    top = np.argsort(-scores, axis=1)[:, :100]
    run = {
        qid: {cranfield.doc_ids[j]: float(scores[i, j]) for j in top[i]}
        for i, qid in enumerate(queries)
    }
    exact = per_query_scores(cranfield.subset_qrels(queries), run)
    exact_mean = float(np.mean([s["ndcg_at_10"] for s in exact.values()]))
    assert result.ndcg_at_10 == pytest.approx(exact_mean, abs=1e-4)


def test_second_encode_of_cranfield_is_all_cache_hits(
    cranfield: RetrievalDataset, encoded_cranfield: EncodedDataset, cache_dir: Path
) -> None:
    encoder = CachedEncoder(MINILM, cache_dir, show_progress=False)
    again = encode_dataset(cranfield, encoder)
    assert encoder.n_encoded == 0
    assert encoder.n_cached == len(cranfield.corpus) + len(cranfield.judged_query_ids) == 1625
    assert encoder.encode_seconds == 0.0
    np.testing.assert_array_equal(again.docs, encoded_cranfield.docs)
    assert again.queries.keys() == encoded_cranfield.queries.keys()
    for qid, vec in encoded_cranfield.queries.items():
        np.testing.assert_array_equal(again.queries[qid], vec)
