"""Clustered vectors at any scale, and the real cycle on them through `run_encoded` (the path the
scale benchmark times), with Qdrant's embedded engine."""

from __future__ import annotations

import numpy as np

from chelation.data.clustered import clustered_vectors
from chelation.protocol import run_encoded
from chelation.retriever import EncodedDataset
from chelation.scale import growth
from chelation.settings import RunSettings, TrainingSettings


def test_clustered_vectors_are_seeded_unit_rows_with_judgments_in_their_cluster() -> None:
    a, b = clustered_vectors(3000, n_queries=20, dim=32, seed=4), \
        clustered_vectors(3000, n_queries=20, dim=32, seed=4)
    np.testing.assert_array_equal(a.docs, b.docs)
    assert not np.array_equal(a.docs, clustered_vectors(3000, 20, 32, seed=5).docs)
    assert a.docs.shape == (3000, 32) and a.docs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a.docs, axis=1), 1.0, atol=1e-5)
    assert a.dataset.judged_query_ids == [f"q{i}" for i in range(20)]
    position = {d: i for i, d in enumerate(a.dataset.doc_ids)}
    for qid, q in zip(a.dataset.judged_query_ids, a.queries, strict=True):
        relevant = [position[d] for d in a.dataset.qrels[qid]]
        assert len(relevant) == 10
        # judged documents are close to their query, far closer than a random document
        assert (a.docs[relevant] @ q).mean() > (a.docs @ q).mean() + 0.3


def test_the_real_cycle_runs_on_given_vectors_and_reports_each_phase() -> None:
    made = clustered_vectors(2000, n_queries=60, dim=48, seed=1)
    ids = made.dataset.judged_query_ids
    encoded = EncodedDataset(made.dataset, made.docs, dict(zip(ids, made.queries, strict=True)))
    settings = RunSettings(cycles=1, queries_per_cycle=20, protocol="kfold", folds=3,
                           query_cost_sample=0,
                           training=TrainingSettings(mode="baseline")).validate()
    result = run_encoded(encoded, settings, show_progress=False)
    before, after = result.cycles
    assert 0.0 < before.ndcg_at_10 < 1.0  # neither trivial nor hopeless
    assert len(after.per_query) == 60  # the folds' test sets cover every query
    assert after.n_chelated > 0 and after.n_targets > 0
    assert after.query_time_s > 0 and after.sediment_time_s > 0 and after.eval_time_s > 0
    assert result.query_cost is None  # no student model was given to price queries with


def test_growth_exponent_is_one_for_linear_cost_per_fold() -> None:
    rows = [{"n_docs": 1000, "folds": 5, "setup_s": 5.0, "cycle_s": 1.0},
            {"n_docs": 10000, "folds": 1, "setup_s": 10.0, "cycle_s": 2.0}]
    exps = growth([{**r, **{p: r.get(p, 1.0) for p in
                            ("scout_s", "sediment_s", "reindex_s", "evaluate_s")}} for r in rows])
    assert np.isclose(exps["setup_s"][0], 1.0)  # 1 s per fold -> 10 s per fold
    assert np.isclose(exps["cycle_s"][0], 1.0)  # 0.2 -> 2.0 per fold over 10x the documents
