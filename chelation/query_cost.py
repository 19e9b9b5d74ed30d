"""What one query costs at serving time: the query-side model's encoding (student plus adapter,
one query at a time, no cache) and one search of the index. Whatever the documents hold, a query
is always encoded by the student, so this is the price side of a run's quality.

The model's part depends on the model, its precision and the machine, not on the job: it is
measured once and kept beside that model's embedding store (`query_cost.json`, with the CPU it was
measured on), and measured again only where it is missing or was measured on another CPU. A job
whose texts are all cached therefore never loads the model to price its queries."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from chelation.adapter import ResidualAdapter, one_thread
from chelation.cpu import cpu_name
from chelation.encoders import CachedEncoder
from chelation.engine import VectorIndex

log = logging.getLogger(__name__)

COST_FILE = "query_cost.json"  # in the model's embedding store folder
REPEATS = 3  # tries per text; the least counts


@dataclass
class QueryCost:
    encode_ms: float  # per query: the model's forward pass and the adapter
    search_ms: float  # per query: one exact search of the index
    n_queries: int


@dataclass(frozen=True)
class ModelTiming:
    """The model's median encode time of one query on its own, and where it was measured."""

    encode_ms: float
    n_texts: int
    cpu: str  # cpu_name(): the model and the logical CPUs; timed on one thread of them
    precision: str
    measured_at: str


def model_timing(encoder: CachedEncoder, texts: Sequence[str]) -> ModelTiming:
    """The model's per-query encode time: read from its store folder when it was measured on this
    CPU, else measured now on `texts` (one at a time, uncached) and kept there."""
    path = Path(encoder.cache.folder) / COST_FILE
    cpu = cpu_name()
    known = read_timing(path)
    if known is not None and known.cpu == cpu:
        return known
    seconds = time_model(encoder, texts)
    timing = ModelTiming(encode_ms=1000 * float(np.median(seconds)), n_texts=len(seconds), cpu=cpu,
                         precision=encoder.precision,
                         measured_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    _write_json(path, asdict(timing))
    log.info("%s: %.2f ms per query to encode on %s (median of %d; kept in %s)", encoder.name,
             timing.encode_ms, cpu, len(seconds), path)
    return timing


def read_timing(path: Path) -> ModelTiming | None:
    """The timing kept at `path`; None when absent or unreadable (it is then measured again)."""
    try:
        return ModelTiming(**json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as err:
        log.warning("query cost file %s is unreadable (%s): measuring again", path, err)
        return None


def time_model(encoder: CachedEncoder, texts: Sequence[str], repeats: int = REPEATS) -> list[float]:
    """The model's encode time of each text on its own, uncached, after one warm-up call, on one
    thread: the least of `repeats` tries, the one least disturbed by other processes. A figure
    kept for every later job must not keep a moment's contention: on 2 busy cores, two intra-op
    threads made one MiniLM query take 0.1-1.4 s, one thread 40-100 ms (measured here)."""
    model = encoder.model()
    seconds = []
    with one_thread(), encoder.precision_context():
        model.encode(list(texts[:1]), show_progress_bar=False)  # warm-up: first allocations
        for text in texts:
            tries = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                model.encode([text], normalize_embeddings=True, convert_to_numpy=True,
                             show_progress_bar=False)
                tries.append(time.perf_counter() - t0)
            seconds.append(min(tries))
    return seconds


def measure_query_cost(encoder: CachedEncoder, adapter: ResidualAdapter, index: VectorIndex,
                       texts: Sequence[str], raw: np.ndarray, depth: int) -> QueryCost:
    """Per-query times over `texts` (whose student embeddings are `raw`): the model's encoding
    (model_timing) plus the median of this job's adapter, and the median of one search of this
    job's index, each timed on its own."""
    if not texts:
        return QueryCost(encode_ms=float("nan"), search_ms=float("nan"), n_queries=0)
    model_ms = model_timing(encoder, texts).encode_ms
    adapt, search = [], []
    for i in range(len(texts)):
        t0 = time.perf_counter()
        query = adapter.apply(raw[i:i + 1])
        t1 = time.perf_counter()
        index.search(query, depth)
        t2 = time.perf_counter()
        adapt.append(t1 - t0)
        search.append(t2 - t1)
    return QueryCost(encode_ms=model_ms + 1000 * float(np.median(adapt)),
                     search_ms=1000 * float(np.median(search)), n_queries=len(texts))


def _write_json(path: Path, payload: dict) -> None:
    """Atomically: jobs measuring at the same time each replace the file whole."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    tmp.replace(path)
