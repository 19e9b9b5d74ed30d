"""Core container for a retrieval test collection and the error type used by the loaders."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DatasetError", "RetrievalDataset", "natural_key", "natural_sorted"]

_DIGITS = re.compile(r"(\d+)")


class DatasetError(ValueError):
    """A data file is missing or malformed.

    The message names the file and, where one applies, the 1-based line number, in the form
    ``"<path>, line <n>: <problem>"``. Both are also kept as attributes.
    """

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None):
        self.path = None if path is None else str(path)
        self.line = line
        prefix = ""
        if self.path is not None:
            prefix = self.path if line is None else f"{self.path}, line {line}"
            prefix += ": "
        super().__init__(prefix + message)


def natural_key(identifier: str) -> tuple[tuple[int | str, ...], str]:
    """Sort key that orders the digit runs of an id numerically ("q2" before "q10")."""
    parts = _DIGITS.split(identifier)
    # re.split with one capturing group alternates text (even index) and digits (odd index),
    # so comparing two keys position by position never mixes ints with strings.
    key = tuple(int(p) if i % 2 else p for i, p in enumerate(parts))
    return (key, identifier)


def natural_sorted(identifiers: Iterable[str]) -> list[str]:
    """Return ``identifiers`` sorted with :func:`natural_key`."""
    return sorted(identifiers, key=natural_key)


@dataclass(frozen=True)
class RetrievalDataset:
    """A corpus, its queries and graded relevance judgments (qrels).

    ``queries`` holds only queries with at least one positive judgment and ``qrels`` holds the
    judgments of those queries, zero-score rows included.
    """

    name: str
    corpus: dict[str, str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]

    @property
    def doc_ids(self) -> list[str]:
        """Document ids in corpus (file) order."""
        return list(self.corpus)

    @property
    def judged_query_ids(self) -> list[str]:
        """Ids of queries with at least one positive judgment, in natural order."""
        judged = (q for q, docs in self.qrels.items() if any(s > 0 for s in docs.values()))
        return natural_sorted(judged)

    def subset_qrels(self, query_ids: Iterable[str]) -> dict[str, dict[str, int]]:
        """Copy of the judgments of ``query_ids``; raises ``KeyError`` for an unjudged id."""
        out: dict[str, dict[str, int]] = {}
        for qid in query_ids:
            if qid not in self.qrels:
                raise KeyError(f"query {qid!r} has no judgments in dataset {self.name!r}")
            out[qid] = dict(self.qrels[qid])
        return out

    def __repr__(self) -> str:
        n_judgments = sum(len(d) for d in self.qrels.values())
        return (
            f"RetrievalDataset(name={self.name!r}, docs={len(self.corpus)}, "
            f"queries={len(self.queries)}, judgments={n_judgments})"
        )


def finalise(
    name: str,
    corpus: dict[str, str],
    queries: Mapping[str, str],
    qrels: Mapping[str, Mapping[str, int]],
) -> RetrievalDataset:
    """Keep the queries with a positive judgment, and only their qrels, in natural order."""
    judged = natural_sorted(q for q, docs in qrels.items() if any(s > 0 for s in docs.values()))
    return RetrievalDataset(
        name=name,
        corpus=corpus,
        queries={q: queries[q] for q in judged},
        qrels={q: dict(qrels[q]) for q in judged},
    )
