"""Clustered unit vectors at any scale, with queries and judgments: embeddings that no model
encoded, for measuring how the cycle's cost grows with the corpus. Documents sit around cluster
centres (some clusters tight, so chelation finds dense neighbourhoods); each query lies near one
centre and its relevant documents are the members of that cluster nearest to the query's
intent, of which the query is a noisy copy."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from chelation.data.dataset import RetrievalDataset

_CHUNK = 65_536  # rows generated at a time: bounds the temporaries at any N


@dataclass
class ClusteredVectors:
    dataset: RetrievalDataset  # ids and judgments; texts are empty (nothing is encoded)
    docs: np.ndarray           # (n_docs, dim) float32, unit rows
    queries: np.ndarray        # (n_queries, dim) float32, unit rows, in dataset query order


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def clustered_vectors(n_docs: int, n_queries: int = 225, dim: int = 384, seed: int = 0,
                      docs_per_cluster: int = 100, relevant_per_query: int = 10
                      ) -> ClusteredVectors:
    """The same arguments always give the same vectors."""
    rng = np.random.default_rng(seed)
    n_clusters = max(1, n_docs // docs_per_cluster)
    centres = _unit(rng.standard_normal((n_clusters, dim), dtype=np.float32))
    # per-cluster spread: a third of the clusters are tight (cosine to centre ~0.9), the rest
    # looser (~0.7)
    spread = np.where(rng.random(n_clusters) < 1 / 3, 0.025, 0.05).astype(np.float32)
    labels = rng.integers(0, n_clusters, size=n_docs)
    docs = np.empty((n_docs, dim), dtype=np.float32)
    for start in range(0, n_docs, _CHUNK):
        stop = min(start + _CHUNK, n_docs)
        lab = labels[start:stop]
        noise = rng.standard_normal((stop - start, dim), dtype=np.float32)
        docs[start:stop] = _unit(centres[lab] + spread[lab, None] * noise)

    query_clusters = rng.choice(np.unique(labels), size=n_queries, replace=True)
    # what the searcher means, and what the query says of it: the judgments follow the intent,
    # so the query finds them only in part
    intents = _unit(centres[query_clusters]
                    + 0.04 * rng.standard_normal((n_queries, dim), dtype=np.float32))
    queries = _unit(intents + 0.06 * rng.standard_normal((n_queries, dim), dtype=np.float32))
    members = {c: np.flatnonzero(labels == c) for c in np.unique(query_clusters)}

    doc_ids = [f"d{i}" for i in range(n_docs)]
    query_ids = [f"q{i}" for i in range(n_queries)]
    qrels: dict[str, dict[str, int]] = {}
    for qid, q, c in zip(query_ids, intents, query_clusters, strict=True):
        cand = members[c]
        best = cand[np.argsort(-(docs[cand] @ q))[:relevant_per_query]]
        qrels[qid] = {doc_ids[d]: 1 for d in best}
    dataset = RetrievalDataset(name=f"clustered-{n_docs}", corpus=dict.fromkeys(doc_ids, ""),
                               queries=dict.fromkeys(query_ids, ""), qrels=qrels)
    return ClusteredVectors(dataset=dataset, docs=docs, queries=queries)
