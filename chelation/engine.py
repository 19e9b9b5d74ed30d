"""The vector index. By default Qdrant's own engine embedded in the process (qdrant-edge-py: a
shard in a temporary folder, or in `engine.location`); with `engine.url`, a Qdrant server through
qdrant-client. Every search is exact, so no approximate-nearest-neighbour error enters a metric.
Documents keep their original ids; Qdrant point ids are their positions."""

from __future__ import annotations

import logging
import shutil
import tempfile
import uuid
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from chelation.settings import EngineSettings

log = logging.getLogger(__name__)

_UPSERT_BATCH = 8192
IN_MEMORY = ":memory:"


@dataclass
class Hits:
    """Search results for a batch of queries: original doc ids and scores per query, and (when
    asked for) the stored vectors of the hits, shape (n_queries, k, dim)."""

    doc_ids: list[list[str]]
    scores: list[list[float]]
    vectors: np.ndarray | None = None


class VectorIndex(ABC):
    """Cosine index over one set of documents, whose vectors are replaced wholesale after each
    adapter update."""

    def __init__(self, dim: int):
        self.dim = dim
        self.doc_ids: list[str] = []

    def index(self, doc_ids: Sequence[str], vectors: np.ndarray) -> None:
        """Store every document (original ids kept, in order)."""
        self.doc_ids = list(doc_ids)
        self._check(vectors)
        for start, stop in _batches(len(vectors)):
            self._upsert(start, vectors[start:stop], self.doc_ids[start:stop])

    def replace_vectors(self, vectors: np.ndarray) -> None:
        """Overwrite every stored vector, in document order (after an adapter update)."""
        self._check(vectors)
        for start, stop in _batches(len(vectors)):
            self._update(start, vectors[start:stop])

    def _check(self, vectors: np.ndarray) -> None:
        if len(vectors) != len(self.doc_ids):
            raise ValueError(f"got {len(vectors)} vectors for {len(self.doc_ids)} documents")
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"vectors are {vectors.shape[-1]} wide, the index {self.dim}")

    def search(self, queries: np.ndarray, k: int, with_vectors: bool = False) -> Hits:
        """Exact top-k by cosine for each query row."""
        points = self._query(np.asarray(queries, dtype=np.float32), k, with_vectors)
        doc_ids = [[self.doc_ids[p.id] for p in hits] for hits in points]
        scores = [[p.score for p in hits] for hits in points]
        vectors = None
        if with_vectors:
            vectors = np.asarray([[p.vector for p in hits] for hits in points], dtype=np.float32)
            vectors = vectors.reshape(len(points), -1, self.dim)
        return Hits(doc_ids=doc_ids, scores=scores, vectors=vectors)

    @abstractmethod
    def _upsert(self, first_id: int, vectors: np.ndarray, doc_ids: Sequence[str]) -> None: ...

    @abstractmethod
    def _update(self, first_id: int, vectors: np.ndarray) -> None: ...

    @abstractmethod
    def _query(self, queries: np.ndarray, k: int, with_vectors: bool) -> list[list]:
        """Scored points (with .id, .score and, when asked, .vector) per query."""

    def stored_vectors(self) -> np.ndarray:
        """Every stored vector in document order (unit length: cosine normalises on insert)."""
        ids = list(range(len(self.doc_ids)))
        by_id = {r.id: r.vector for r in self._retrieve(ids)}
        return np.asarray([by_id[i] for i in ids], dtype=np.float32).reshape(len(ids), self.dim)

    @abstractmethod
    def _retrieve(self, ids: list[int]) -> list:
        """Stored points (with .id and .vector) of these ids, in any order."""

    @abstractmethod
    def count(self) -> int:
        """Points the engine holds."""

    @abstractmethod
    def close(self) -> None: ...


def _batches(n: int) -> list[tuple[int, int]]:
    return [(s, min(s + _UPSERT_BATCH, n)) for s in range(0, n, _UPSERT_BATCH)]


def _rows(vectors: np.ndarray) -> list[list[float]]:
    # a list of floats per row: the engine takes these about twice as fast as float32 arrays
    # or one whole-matrix tolist (1,400 x 384 replaced in 19 ms against 38-48 ms here); the
    # float32 values come back from the engine unchanged
    return [row.tolist() for row in np.asarray(vectors, dtype=np.float32)]


class EdgeIndex(VectorIndex):
    """Qdrant's engine in process (qdrant-edge-py). `:memory:` puts the shard in a temporary
    folder removed on close; any other location is a folder that is replaced by a fresh shard."""

    def __init__(self, dim: int, location: str = IN_MEMORY):
        super().__init__(dim)
        import qdrant_edge as qe

        self._qe = qe
        self._temporary = location == IN_MEMORY
        if self._temporary:
            self.path = Path(tempfile.mkdtemp(prefix="chelation-shard-"))
        else:
            self.path = Path(location).expanduser()
            if self.path.exists():
                shutil.rmtree(self.path)
            self.path.mkdir(parents=True)
        # no write-ahead log: the index is derived data, rebuilt from the raw embeddings whenever
        # it is opened, so durability would only slow every re-index (by about a quarter here)
        config = qe.EdgeConfig(vectors=qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine),
                               wal_enabled=False)
        self.shard = qe.EdgeShard.create(str(self.path), config)
        self._exact = qe.SearchParams(exact=True)

    def _upsert(self, first_id: int, vectors: np.ndarray, doc_ids: Sequence[str]) -> None:
        qe = self._qe
        # no payload: a point's id is its document's position, and doc_ids map it back
        points = [qe.Point(first_id + i, v) for i, v in enumerate(_rows(vectors))]
        self.shard.update(qe.UpdateOperation.upsert_points(points))

    def _update(self, first_id: int, vectors: np.ndarray) -> None:
        qe = self._qe
        self.shard.update(qe.UpdateOperation.update_vectors(
            [qe.PointVectors(first_id + i, v) for i, v in enumerate(_rows(vectors))]))

    def _query(self, queries: np.ndarray, k: int, with_vectors: bool) -> list[list]:
        qe = self._qe
        requests = [qe.QueryRequest(limit=k, query=qe.Query.Nearest(q), with_vector=with_vectors,
                                    with_payload=False, params=self._exact)
                    for q in _rows(queries)]
        return self.shard.query_batch(qe.QueryBatchRequest(requests))

    def _retrieve(self, ids: list[int]) -> list:
        return self.shard.retrieve(ids, False, True)

    def count(self) -> int:
        return int(self.shard.count(self._qe.CountRequest()))

    def close(self) -> None:
        self.shard.close()
        if self._temporary:
            shutil.rmtree(self.path, ignore_errors=True)


class ServerIndex(VectorIndex):
    """A collection of its own on a Qdrant server (jobs sharing a server must not replace each
    other's collections), searched exactly, deleted on close."""

    def __init__(self, dim: int, url: str, collection: str = "chelation"):
        super().__init__(dim)
        from qdrant_client import QdrantClient, models

        self._models = models
        self.collection = f"{collection}-{uuid.uuid4().hex[:12]}"
        self.client = QdrantClient(url=url)
        self.client.create_collection(
            self.collection,
            vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE),
        )
        self._exact = models.SearchParams(exact=True)

    def _upsert(self, first_id: int, vectors: np.ndarray, doc_ids: Sequence[str]) -> None:
        ids = list(range(first_id, first_id + len(vectors)))
        self.client.upsert(self.collection, self._models.Batch(
            ids=ids, vectors=vectors.tolist(), payloads=[{"doc_id": d} for d in doc_ids]))

    def _update(self, first_id: int, vectors: np.ndarray) -> None:
        self.client.update_vectors(self.collection, [
            self._models.PointVectors(id=first_id + i, vector=v)
            for i, v in enumerate(vectors.tolist())])

    def _query(self, queries: np.ndarray, k: int, with_vectors: bool) -> list[list]:
        requests = [self._models.QueryRequest(query=q, limit=k, with_vector=with_vectors,
                                              with_payload=False, params=self._exact)
                    for q in queries.tolist()]
        responses = self.client.query_batch_points(self.collection, requests=requests)
        return [r.points for r in responses]

    def _retrieve(self, ids: list[int]) -> list:
        return self.client.retrieve(self.collection, ids=ids, with_vectors=True)

    def count(self) -> int:
        return int(self.client.count(self.collection, exact=True).count)

    def close(self) -> None:
        self.client.delete_collection(self.collection)
        self.client.close()


class EngineUnavailable(RuntimeError):
    """The index could not be opened where the settings say: the message names the key."""


def open_index(dim: int, settings: EngineSettings | None = None) -> VectorIndex:
    """The engine the settings name: a server when `url` is set, else Qdrant's embedded engine."""
    settings = settings or EngineSettings()
    key, value = ("engine.url", settings.url) if settings.url else \
        ("engine.location", settings.location)
    try:
        if settings.url:
            return ServerIndex(dim, settings.url, settings.collection)
        return EdgeIndex(dim, settings.location)
    except Exception as err:  # noqa: BLE001 - any cause: say which setting led there
        reason = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        raise EngineUnavailable(f"{key}={value}: cannot open the vector index ({reason})") \
            from None


def check_engine(settings: EngineSettings) -> None:
    """Whether the index the settings name can be opened, asked before a job's run exists: the
    server answers, or the shard's folder can be made. Raises EngineUnavailable naming the key."""
    key, value = ("engine.url", settings.url) if settings.url else \
        ("engine.location", settings.location)
    try:
        if settings.url:
            from qdrant_client import QdrantClient

            client = QdrantClient(url=settings.url, timeout=10)
            try:
                client.get_collections()
            finally:
                client.close()
        elif settings.location != IN_MEMORY:
            Path(settings.location).expanduser().parent.mkdir(parents=True, exist_ok=True)
    except Exception as err:  # noqa: BLE001 - any cause: say which setting led there
        reason = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        raise EngineUnavailable(f"{key}={value}: cannot open the vector index ({reason})") \
            from None
