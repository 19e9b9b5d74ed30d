"""The homeostatic event log: for each document, how often its neighbourhood collapsed and the
centres it collapsed into."""

from __future__ import annotations

import numpy as np


class CollapseLog:
    def __init__(self, n_docs: int, dim: int):
        self.counts = np.zeros(n_docs, dtype=np.int64)
        self.centre_sums = np.zeros((n_docs, dim), dtype=np.float64)

    def record(self, doc_positions: np.ndarray, centre: np.ndarray) -> None:
        """Log one chelation event: `centre` against every document in the neighbourhood."""
        np.add.at(self.counts, doc_positions, 1)
        np.add.at(self.centre_sums, doc_positions, centre.astype(np.float64))

    @property
    def n_events(self) -> int:
        return int(self.counts.sum())

    def frequent(self, min_count: int) -> np.ndarray:
        """Positions of documents logged at least `min_count` times."""
        return np.flatnonzero(self.counts >= min_count)

    def mean_centres(self, positions: np.ndarray) -> np.ndarray:
        counts = np.maximum(self.counts[positions], 1)[:, None]
        return (self.centre_sums[positions] / counts).astype(np.float32)

    def clear(self) -> None:
        self.counts[:] = 0
        self.centre_sums[:] = 0.0
