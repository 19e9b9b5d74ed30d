"""The homeostatic event log: for each document, how often its neighbourhood collapsed and the
centres it collapsed into. Only documents that took part in a collapse take memory (a cycle
touches a few thousand at most), so a corpus of a million documents costs nothing here."""

from __future__ import annotations

import numpy as np


class CollapseLog:
    def __init__(self, n_docs: int, dim: int):
        self.n_docs, self.dim = n_docs, dim
        self.clear()

    def record(self, doc_positions: np.ndarray, centre: np.ndarray) -> None:
        """Log one chelation event: `centre` against every document in the neighbourhood."""
        rows = np.array([self._rows.setdefault(int(p), len(self._rows)) for p in doc_positions],
                        dtype=np.int64)
        if len(self._rows) > len(self._counts):
            grow = max(len(self._rows), 2 * len(self._counts)) - len(self._counts)
            self._counts = np.concatenate([self._counts, np.zeros(grow, dtype=np.int64)])
            self._sums = np.concatenate([self._sums, np.zeros((grow, self.dim))])
        np.add.at(self._counts, rows, 1)
        np.add.at(self._sums, rows, centre.astype(np.float64))

    @property
    def counts(self) -> np.ndarray:
        """Events per document, for every document (dense; for inspection and tests)."""
        dense = np.zeros(self.n_docs, dtype=np.int64)
        positions = np.fromiter(self._rows, dtype=np.int64, count=len(self._rows))
        dense[positions] = self._counts[list(self._rows.values())]
        return dense

    @property
    def n_events(self) -> int:
        return int(self._counts.sum())

    def frequent(self, min_count: int) -> np.ndarray:
        """Positions of documents logged at least `min_count` times, ascending."""
        positions = np.fromiter(self._rows, dtype=np.int64, count=len(self._rows))
        rows = np.fromiter(self._rows.values(), dtype=np.int64, count=len(self._rows))
        return np.sort(positions[self._counts[rows] >= min_count])

    def mean_centres(self, positions: np.ndarray) -> np.ndarray:
        rows = [self._rows.get(int(p), -1) for p in positions]
        sums = np.stack([self._sums[r] if r >= 0 else np.zeros(self.dim) for r in rows]) \
            if rows else np.zeros((0, self.dim))
        counts = np.array([max(self._counts[r], 1) if r >= 0 else 1 for r in rows])[:, None]
        return (sums / counts).astype(np.float32)

    def clear(self) -> None:
        self._rows: dict[int, int] = {}
        self._counts = np.zeros(0, dtype=np.int64)
        self._sums = np.zeros((0, self.dim), dtype=np.float64)
