"""Loader for collections in the BEIR folder layout.

::

    <folder>/corpus.jsonl       {"_id": ..., "title": ..., "text": ...} per line
    <folder>/queries.jsonl      {"_id": ..., "text": ...} per line
    <folder>/qrels/<split>.tsv  header "query-id<TAB>corpus-id<TAB>score", then one row per judgment
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from chelation.data.dataset import DatasetError, RetrievalDataset, finalise, with_train_queries

__all__ = ["load_beir"]

log = logging.getLogger(__name__)

_QRELS_HEADER = ("query-id", "corpus-id", "score")



def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield `(line number, text)` for the non-blank lines of a UTF-8 file."""
    if not path.is_file():
        raise DatasetError("file not found", path)
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                text = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise DatasetError(f"not valid UTF-8 ({exc.reason})", path, lineno) from None
            text = text.rstrip("\r\n")
            if text.strip():
                yield lineno, text


def _string_field(record: dict[str, Any], key: str, path: Path, lineno: int) -> str:
    value = record.get(key, "")
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise DatasetError(
            f'field "{key}" must be a string, got {type(value).__name__}', path, lineno
        )
    return str(value).strip()


def _read_jsonl(path: Path) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """Yield `(line number, id, record)`; ids are strings and unique within the file."""
    seen: dict[str, int] = {}
    for lineno, text in _lines(path):
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"invalid JSON ({exc.msg})", path, lineno) from None
        if not isinstance(record, dict):
            raise DatasetError("expected a JSON object", path, lineno)
        if "_id" not in record:
            raise DatasetError('missing "_id"', path, lineno)
        raw_id = record["_id"]
        if isinstance(raw_id, bool) or not isinstance(raw_id, str | int):
            raise DatasetError(f'"_id" must be a string, got {raw_id!r}', path, lineno)
        doc_id = str(raw_id).strip()
        if not doc_id:
            raise DatasetError('empty "_id"', path, lineno)
        if doc_id in seen:
            raise DatasetError(
                f"duplicate id {doc_id!r} (first seen on line {seen[doc_id]})", path, lineno
            )
        seen[doc_id] = lineno
        yield lineno, doc_id, record


def _read_corpus(path: Path, strict: bool = False) -> dict[str, str]:
    """Documents as `title text`. A line without a "text" field is said (file and line), or with
    `strict` refused; a document with neither title nor text is kept and said by line."""
    corpus: dict[str, str] = {}
    no_text: list[int] = []
    empty: list[tuple[int, str]] = []
    for lineno, doc_id, record in _read_jsonl(path):
        if "text" not in record:
            if strict:
                raise DatasetError('no "text" field (dataset.strict=true refuses it)', path,
                                   lineno)
            no_text.append(lineno)
        title = _string_field(record, "title", path, lineno)
        text = _string_field(record, "text", path, lineno)
        corpus[doc_id] = " ".join(part for part in (title, text) if part)
        if not corpus[doc_id]:
            empty.append((lineno, doc_id))
    if not corpus:
        raise DatasetError("no documents", path)
    if no_text:
        log.warning('%s, %s: %d document(s) with no "text" field, encoded from their title '
                    "alone (dataset.strict=true refuses them)", path, _line_list(no_text),
                    len(no_text))
    if empty:
        # kept (their judgments stay valid), but every model embeds them alike
        log.warning("%s, %s: %d document(s) with no title and no text, indexed empty (ids %s)",
                    path, _line_list([n for n, _ in empty]), len(empty),
                    ", ".join(d for _, d in empty[:20]) + (" ..." if len(empty) > 20 else ""))
    return corpus


def _line_list(lines: list[int], shown: int = 20) -> str:
    """`line 3` / `lines 3, 7, 9 ...`: the lines a warning names."""
    head = ", ".join(str(n) for n in lines[:shown]) + (" ..." if len(lines) > shown else "")
    return f"line {head}" if len(lines) == 1 else f"lines {head}"


def _read_queries(path: Path) -> dict[str, str]:
    queries: dict[str, str] = {}
    for lineno, query_id, record in _read_jsonl(path):
        queries[query_id] = _string_field(record, "text", path, lineno)
    return queries


def _read_qrels(
    path: Path, corpus: dict[str, str], queries: dict[str, str]
) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    first = True
    for lineno, text in _lines(path):
        fields = [f.strip() for f in text.split("\t")]
        if first:
            first = False
            if tuple(f.lower() for f in fields) == _QRELS_HEADER:
                continue
        if len(fields) != 3:
            raise DatasetError(
                f"expected 3 tab-separated columns (query-id, corpus-id, score), got {len(fields)}",
                path,
                lineno,
            )
        query_id, doc_id, score_text = fields
        try:
            score = int(score_text)
        except ValueError:
            raise DatasetError(f"score {score_text!r} is not an integer", path, lineno) from None
        if query_id not in queries:
            raise DatasetError(f"unknown query id {query_id!r}", path, lineno)
        if doc_id not in corpus:
            raise DatasetError(f"unknown document id {doc_id!r}", path, lineno)
        judged = qrels.setdefault(query_id, {})
        if doc_id in judged:
            if judged[doc_id] != score:
                raise DatasetError(
                    f"conflicting judgment for query {query_id!r}, document {doc_id!r}: "
                    f"{judged[doc_id]} then {score}",
                    path,
                    lineno,
                )
            log.warning("%s, line %d: repeated judgment ignored", path, lineno)
            continue
        judged[doc_id] = score
    if not any(s > 0 for docs in qrels.values() for s in docs.values()):
        raise DatasetError("no judged queries (no judgment with a positive score)", path)
    return qrels


def load_beir(folder: str | Path, split: str = "test", name: str | None = None,
              train_split: str | None = None, strict: bool = False) -> RetrievalDataset:
    """The BEIR collection in `folder` (`corpus.jsonl`, `queries.jsonl`, `qrels/<split>.tsv`),
    keeping the queries with a positive judgment in `split`; `name` defaults to the folder's name.
    The judged queries of `qrels/<train_split>.tsv`, if given, become `train_query_ids`. A missing
    or malformed file raises DatasetError naming the file and line; with `strict`, so does a
    corpus line without a "text" field (else a warning names it)."""
    root = Path(folder)
    corpus = _read_corpus(root / "corpus.jsonl", strict)
    queries = _read_queries(root / "queries.jsonl")
    qrels = _read_qrels(root / "qrels" / f"{split}.tsv", corpus, queries)
    dataset = finalise(name or root.resolve().name, corpus, queries, qrels)
    if train_split:
        train_path = root / "qrels" / f"{train_split}.tsv"
        train = finalise(dataset.name, corpus, queries, _read_qrels(train_path, corpus, queries))
        dataset = with_train_queries(dataset, train, train_path)
    log.info(
        "loaded %s (%s split): %d documents, %d judged queries (%d train), %d judgments",
        dataset.name,
        split,
        len(dataset.corpus),
        len(dataset.queries),
        len(dataset.train_query_ids),
        sum(len(d) for d in dataset.qrels.values()),
    )
    return dataset
