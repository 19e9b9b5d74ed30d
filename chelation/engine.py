"""The vector index on qdrant-client: embedded local mode (in memory or a folder) by default, a
server by URL. Documents keep their original ids; Qdrant point ids are their positions."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from qdrant_client import QdrantClient, models

from chelation.settings import EngineSettings

log = logging.getLogger(__name__)

_UPSERT_BATCH = 1024


@dataclass
class Hits:
    """Search results for a batch of queries: original doc ids and scores per query, and (when
    asked for) the stored vectors of the hits, shape (n_queries, k, dim)."""

    doc_ids: list[list[str]]
    scores: list[list[float]]
    vectors: np.ndarray | None = None


class VectorIndex:
    def __init__(self, dim: int, settings: EngineSettings | None = None):
        settings = settings or EngineSettings()
        self.dim = dim
        self.collection = settings.collection
        self._owns_collection = bool(settings.url)
        if settings.url:
            # jobs sharing a server must not replace each other's collections
            self.collection = f"{settings.collection}-{uuid.uuid4().hex[:12]}"
            self.client = QdrantClient(url=settings.url)
        elif settings.location == ":memory:":
            self.client = QdrantClient(location=":memory:")
        else:
            self.client = QdrantClient(path=settings.location)
        if self.client.collection_exists(self.collection):
            self.client.delete_collection(self.collection)
        self.client.create_collection(
            self.collection,
            vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE),
        )
        self.doc_ids: list[str] = []

    def index(self, doc_ids: Sequence[str], vectors: np.ndarray) -> None:
        """Store every document (original ids kept in the payload and in order)."""
        self.doc_ids = list(doc_ids)
        self._upsert(vectors, with_payload=True)

    def replace_vectors(self, vectors: np.ndarray) -> None:
        """Overwrite every stored vector, in document order (after an adapter update)."""
        if len(vectors) != len(self.doc_ids):
            raise ValueError(f"got {len(vectors)} vectors for {len(self.doc_ids)} documents")
        self._upsert(vectors, with_payload=False)

    def _upsert(self, vectors: np.ndarray, with_payload: bool) -> None:
        if vectors.shape[1] != self.dim:
            raise ValueError(f"vectors are {vectors.shape[1]} wide, the index {self.dim}")
        for start in range(0, len(vectors), _UPSERT_BATCH):
            stop = min(start + _UPSERT_BATCH, len(vectors))
            ids = list(range(start, stop))
            if with_payload:
                payloads = [{"doc_id": d} for d in self.doc_ids[start:stop]]
                self.client.upsert(self.collection, models.Batch(
                    ids=ids, vectors=vectors[start:stop].tolist(), payloads=payloads))
            else:
                self.client.update_vectors(self.collection, [
                    models.PointVectors(id=i, vector=v)
                    for i, v in zip(ids, vectors[start:stop].tolist(), strict=True)
                ])

    def search(self, queries: np.ndarray, k: int, with_vectors: bool = False) -> Hits:
        requests = [
            models.QueryRequest(query=q, limit=k, with_vector=with_vectors, with_payload=False)
            for q in np.asarray(queries, dtype=np.float32).tolist()
        ]
        responses = self.client.query_batch_points(self.collection, requests=requests)
        doc_ids = [[self.doc_ids[p.id] for p in r.points] for r in responses]
        scores = [[p.score for p in r.points] for r in responses]
        vectors = None
        if with_vectors:
            vectors = np.asarray(
                [[p.vector for p in r.points] for r in responses], dtype=np.float32
            )
        return Hits(doc_ids, scores, vectors)

    def stored_vectors(self) -> np.ndarray:
        """Every stored vector in document order (for consistency checks)."""
        points = self.client.retrieve(
            self.collection, ids=list(range(len(self.doc_ids))), with_vectors=True
        )
        by_id = {p.id: p.vector for p in points}
        return np.asarray([by_id[i] for i in range(len(self.doc_ids))], dtype=np.float32)

    def close(self) -> None:
        if self._owns_collection:
            self.client.delete_collection(self.collection)
        self.client.close()
