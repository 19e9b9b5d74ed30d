"""Encoding with an on-disk embedding cache keyed by model identity and text, so a second run on
the same data encodes nothing."""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from chelation.models import load_model, model_fingerprint, resolve_model

log = logging.getLogger(__name__)

SHARD_SIZE = 256  # texts per cache shard: the most an interrupted encode can lose


def text_key(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


class EmbeddingCache:
    """Append-only store of unit embeddings for one model: shards of (keys, vectors) in .npz files,
    each written atomically, so a run killed mid-way loses at most the shard it was writing."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder).expanduser()
        self.folder.mkdir(parents=True, exist_ok=True)
        self._vectors: dict[str, np.ndarray] = {}
        for shard in sorted(self.folder.glob("shard-*.npz")):
            with np.load(shard) as data:
                for key, vec in zip(data["keys"], data["vectors"], strict=True):
                    self._vectors[str(key)] = vec

    def __len__(self) -> int:
        return len(self._vectors)

    def get(self, key: str) -> np.ndarray | None:
        return self._vectors.get(key)

    def add(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        if len(keys) == 0:
            return
        fd, tmp = tempfile.mkstemp(dir=self.folder, suffix=".npz.tmp")
        os.close(fd)
        with open(tmp, "wb") as fh:
            np.savez(fh, keys=np.asarray(keys), vectors=vectors.astype(np.float32))
        name = f"shard-{time.time_ns()}-{os.getpid()}.npz"
        os.replace(tmp, self.folder / name)
        self._vectors.update(zip(keys, vectors.astype(np.float32), strict=True))


class CachedEncoder:
    """A sentence-embedding model behind a disk cache. The model itself loads only when a text is
    missing from the cache, at most once per process."""

    def __init__(
        self,
        model: str,
        cache_dir: str | Path,
        batch_size: int = 64,
        max_seq_length: int | None = None,
        show_progress: bool = True,
    ):
        self.name = model
        self.resolved = resolve_model(model)
        self.max_seq_length = max_seq_length
        self.batch_size = batch_size
        self.show_progress = show_progress
        self.fingerprint = model_fingerprint(self.resolved, max_seq_length, display_name=model)
        self.cache = EmbeddingCache(Path(cache_dir).expanduser() / self.fingerprint)
        self.n_encoded = 0
        self.n_cached = 0
        self.encode_seconds = 0.0

    def model(self):  # -> SentenceTransformer
        """The model itself (loaded once per process), for work the cache cannot serve."""
        return load_model(self.resolved, self.max_seq_length)

    @property
    def dim(self) -> int:
        model = self.model()
        get_dim = getattr(model, "get_embedding_dimension", None) \
            or model.get_sentence_embedding_dimension
        return int(get_dim())

    def encode(self, texts: Sequence[str], desc: str | None = None) -> np.ndarray:
        """Unit-length embeddings, one row per text, in input order."""
        keys = [text_key(t) for t in texts]
        missing: dict[str, str] = {}
        for key, text in zip(keys, texts, strict=True):
            if self.cache.get(key) is None:
                missing.setdefault(key, text)
        self.n_cached += len(keys) - len(missing)
        if missing:
            self._encode_missing(list(missing), list(missing.values()), desc)
        if not keys:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([self.cache.get(k) for k in keys])

    def _encode_missing(self, keys: list[str], texts: list[str], desc: str | None) -> None:
        """Encode in chunks, each saved as a cache shard as soon as it is done, so an interrupted
        encode resumes where it stopped."""
        started = time.perf_counter()
        model = self.model()
        log.info("encoding %d texts with %s", len(texts), self.name)
        with tqdm(total=len(texts), desc=f"encoding {desc or 'texts'} ({self.name})",
                  unit="text", disable=not self.show_progress) as bar:
            for start in range(0, len(texts), SHARD_SIZE):
                chunk = texts[start:start + SHARD_SIZE]
                vectors = model.encode(chunk, batch_size=self.batch_size,
                                       normalize_embeddings=True, convert_to_numpy=True,
                                       show_progress_bar=False)
                self.cache.add(keys[start:start + SHARD_SIZE],
                               np.asarray(vectors, dtype=np.float32))
                self.n_encoded += len(chunk)
                bar.update(len(chunk))
        self.encode_seconds += time.perf_counter() - started
