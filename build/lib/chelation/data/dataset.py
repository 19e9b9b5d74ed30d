"""Core container for a retrieval test collection and the error type used by the loaders."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

__all__ = ["DatasetError", "RetrievalDataset", "natural_key", "natural_sorted",
           "with_train_queries"]

_DIGITS = re.compile(r"(\d+)")


class DatasetError(ValueError):
    """A data file is missing or malformed.

    The message names the file and, where one applies, the 1-based line number, in the form
    `"<path>, line <n>: <problem>"`. Both are also kept as attributes.
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
    """Return `identifiers` sorted with `natural_key`."""
    return sorted(identifiers, key=natural_key)


@dataclass(frozen=True)
class RetrievalDataset:
    """A corpus, its queries and graded relevance judgments (qrels).

    `queries` holds only queries with at least one positive judgment and `qrels` holds the
    judgments of those queries, zero-score rows included. Where the collection has its own
    training queries (SciFact's train claims), they are in `queries` and `qrels` too and
    `train_query_ids` names them; `judged_query_ids` are then the evaluation split's only.
    """

    name: str
    corpus: dict[str, str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    train_query_ids: tuple[str, ...] = ()

    @property
    def doc_ids(self) -> list[str]:
        """Document ids in corpus (file) order."""
        return list(self.corpus)

    @property
    def judged_query_ids(self) -> list[str]:
        """Ids of the evaluation split's queries with a positive judgment, in natural order."""
        train = set(self.train_query_ids)
        judged = (q for q, docs in self.qrels.items()
                  if q not in train and any(s > 0 for s in docs.values()))
        return natural_sorted(judged)

    @property
    def all_query_ids(self) -> list[str]:
        """Every query the dataset holds: the evaluation split's, then the training split's."""
        return self.judged_query_ids + list(self.train_query_ids)

    def subset_qrels(self, query_ids: Iterable[str]) -> dict[str, dict[str, int]]:
        """Copy of the judgments of `query_ids`; raises `KeyError` for an unjudged id."""
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


def with_train_queries(evaluation: RetrievalDataset, train: RetrievalDataset,
                       source: str | Path | None = None) -> RetrievalDataset:
    """The evaluation dataset with the training split's judged queries added as
    `train_query_ids`. Both must share one corpus and no query may be in both splits."""
    if evaluation.corpus.keys() != train.corpus.keys():
        raise DatasetError("the train and evaluation splits do not share one corpus", source)
    overlap = set(evaluation.queries) & set(train.queries)
    if overlap:
        raise DatasetError(f"{len(overlap)} queries are in both the train and the evaluation "
                           f"split, e.g. {natural_sorted(overlap)[:3]}", source)
    return replace(
        evaluation,
        queries={**evaluation.queries, **train.queries},
        qrels={**evaluation.qrels, **train.qrels},
        train_query_ids=tuple(train.judged_query_ids),
    )
