"""The collection a DatasetSpec names, loaded once per process and spec, and a short digest of
what it holds (the MLflow dataset input a job's run records)."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chelation.data.beir import load_beir
from chelation.data.dataset import RetrievalDataset
from chelation.data.mteb_loader import load_mteb
from chelation.data.synthetic import make_synthetic_variant
from chelation.kinds import DatasetKind

if TYPE_CHECKING:
    from chelation.settings import DatasetSpec

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=8)
def _load(kind: str, name: str, path: str | None, split: str, task: str | None, seed: int,
          train_split: str | None, strict: bool = False) -> RetrievalDataset:
    if kind == DatasetKind.SYNTHETIC:
        return make_synthetic_variant(name, seed)
    if kind == DatasetKind.BEIR:
        if task and not Path(path).expanduser().is_dir():
            log.info("no BEIR folder at %s: loading the MTEB task %s", path, task)
            return load_mteb(task, split, train_split=train_split)
        return load_beir(Path(path).expanduser(), split, name=name, train_split=train_split,
                         strict=strict)
    return load_mteb(task or name, split, train_split=train_split)


def load_dataset(spec: DatasetSpec) -> RetrievalDataset:
    """The collection a spec names (once per process and spec)."""
    spec.validate()
    return _load(**asdict(spec))


@functools.lru_cache(maxsize=8)
def _digest(**spec: Any) -> str:
    dataset = _load(**spec)
    blob = json.dumps([list(dataset.corpus), dataset.queries, dataset.qrels,
                       list(dataset.train_query_ids)], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def dataset_digest(spec: DatasetSpec) -> str:
    """A short digest of what a spec loads: document ids, queries and judgments."""
    return _digest(**asdict(spec))
