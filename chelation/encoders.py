"""Encoding behind an on-disk embedding store per model identity, keyed by text, so a second run
on the same data encodes nothing."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from chelation.cpu import cpu_name, native_bfloat16
from chelation.embedding_store import EmbeddingStore, text_keys
from chelation.kinds import Precision
from chelation.models import load_model, model_fingerprint, resolve_model
from chelation.settings import DEFAULT_PRECISION

log = logging.getLogger(__name__)

CHUNK_SIZE = 256  # texts per committed chunk: the most an interrupted encode can lose


def effective_precision(requested: str, force: bool = False) -> str:
    """The precision an encoder runs in: bfloat16 only on a CPU that has it in hardware (emulated,
    it is several times slower than float32), unless `force`d; float32 otherwise."""
    if requested == Precision.BFLOAT16 and not force and not native_bfloat16():
        return Precision.FLOAT32.value
    return requested


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
        precision: str = DEFAULT_PRECISION,
        force_precision: bool = False,
    ):
        self.name = model
        self.resolved = resolve_model(model)
        self.max_seq_length = max_seq_length
        self.batch_size = batch_size
        self.show_progress = show_progress
        self.requested_precision = precision
        # what it runs in, which also names its cache: a fallback to float32 reads float32's
        self.precision = effective_precision(precision, force_precision)
        if self.precision_fell_back:
            log.warning("%s: %s asked, but this CPU (%s) has no native bfloat16 (AVX-512 BF16 or "
                        "AMX): encoding in float32 instead (force_precision=true forces it)",
                        model, precision, cpu_name())
        self.fingerprint = model_fingerprint(self.resolved, max_seq_length, display_name=model,
                                             precision=self.precision)
        self.cache = EmbeddingStore(Path(cache_dir).expanduser() / self.fingerprint)
        self.n_encoded = 0
        self.n_cached = 0
        self.encode_seconds = 0.0

    @property
    def precision_fell_back(self) -> bool:
        """The precision asked for is not the one it runs in (see effective_precision)."""
        return self.precision != self.requested_precision

    def model(self):  # -> SentenceTransformer
        """The model itself (loaded once per process), for work the cache cannot serve."""
        return load_model(self.resolved, self.max_seq_length)

    def precision_context(self) -> contextlib.AbstractContextManager:
        """Where the model's forward passes run: bfloat16 is CPU autocast, float32 as loaded."""
        if self.precision == Precision.BFLOAT16:
            import torch

            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @property
    def dim(self) -> int:
        model = self.model()
        get_dim = getattr(model, "get_embedding_dimension", None) \
            or model.get_sentence_embedding_dimension
        return int(get_dim())

    def encode(self, texts: Sequence[str], desc: str | None = None) -> np.ndarray:
        """Unit-length embeddings, one row per text, in input order."""
        if len(texts) == 0:
            return np.zeros((0, 0), dtype=np.float32)
        keys = text_keys(texts)
        rows = self.cache.lookup(keys)
        absent = np.flatnonzero(rows < 0)
        # a text that appears twice is encoded once
        _, first = np.unique(keys[absent], return_index=True)
        todo = np.sort(absent[first])
        self.n_cached += len(texts) - len(todo)
        if len(todo):
            self._encode_missing(keys[todo], [texts[i] for i in todo], desc)
            rows = self.cache.lookup(keys)
        return self.cache.vectors(rows)

    def _encode_missing(self, keys: np.ndarray, texts: list[str], desc: str | None) -> None:
        """Encode in chunks, each committed to the store as soon as it is done, so an
        interrupted encode resumes where it stopped."""
        started = time.perf_counter()
        model = self.model()
        log.info("encoding %d texts with %s", len(texts), self.name)
        with tqdm(total=len(texts), desc=f"encoding {desc or 'texts'} ({self.name})",
                  unit="text", disable=not self.show_progress) as bar:
            for start in range(0, len(texts), CHUNK_SIZE):
                chunk = texts[start:start + CHUNK_SIZE]
                with self.precision_context():
                    vectors = model.encode(chunk, batch_size=self.batch_size,
                                           normalize_embeddings=True, convert_to_numpy=True,
                                           show_progress_bar=False)
                self.cache.append(keys[start:start + CHUNK_SIZE],
                                  np.asarray(vectors, dtype=np.float32))
                self.n_encoded += len(chunk)
                bar.update(len(chunk))
        self.encode_seconds += time.perf_counter() - started
