"""Retrieval datasets: BEIR folders, MTEB tasks, a synthetic collection, and query splits."""

from chelation.data.beir import load_beir
from chelation.data.dataset import DatasetError, RetrievalDataset, with_train_queries
from chelation.data.loading import dataset_digest, load_dataset
from chelation.data.mteb_loader import load_mteb
from chelation.data.splits import (
    inner_folds,
    kfold_queries,
    selection_slice,
    split_queries,
    validation_slice,
)
from chelation.data.synthetic import SYNTHETIC_VARIANTS, make_synthetic, make_synthetic_variant

__all__ = [
    "DatasetError",
    "RetrievalDataset",
    "dataset_digest",
    "inner_folds",
    "kfold_queries",
    "load_beir",
    "load_dataset",
    "load_mteb",
    "make_synthetic",
    "make_synthetic_variant",
    "SYNTHETIC_VARIANTS",
    "selection_slice",
    "split_queries",
    "validation_slice",
    "with_train_queries",
]
