"""Loader for MTEB retrieval tasks, through mteb's own task API.

mteb is an optional dependency (`pip install chelation[mteb]`) and is imported only when
`load_mteb` runs. Two shapes of loaded task are understood:

* mteb 1.x: `task.corpus`, `task.queries` and `task.relevant_docs`, keyed by split, or by
  subset then split for multilingual tasks; corpus values are `{"title", "text"}` dicts or
  strings.
* mteb 2.x: `task.dataset[subset][split]` holding `"corpus"`, `"queries"` (Hugging Face
  datasets with `id`/`title`/`text` columns) and `"relevant_docs"`; single-language
  tasks use the subset `"default"`.
"""

from __future__ import annotations

import logging
import numbers
from collections.abc import Iterable, Mapping
from typing import Any

from chelation.data.dataset import DatasetError, RetrievalDataset, finalise, with_train_queries

__all__ = ["load_mteb"]

log = logging.getLogger(__name__)

_INSTALL_HINT = "pip install chelation[mteb]"


def load_mteb(
    task_name: str, split: str = "test", *, subset: str | None = None,
    train_split: str | None = None,
) -> RetrievalDataset:
    """An MTEB retrieval task (a name `mteb.get_task` accepts, e.g. "SciFact") as a dataset,
    judged on `split`; `subset` picks the language of a multilingual task (optional where there is
    one subset or a "default" one); the judged queries of `train_split` become `train_query_ids`.
    Raises ImportError without mteb, RuntimeError when mteb cannot load the data (the hub is
    unreachable), DatasetError for a split or subset that is absent or has no judged queries."""
    try:
        import mteb
    except ImportError as exc:
        raise ImportError(
            f"load_mteb needs the optional dependency 'mteb'; install it with: {_INSTALL_HINT}"
        ) from exc

    task = mteb.get_task(task_name)
    try:
        task.load_data()
    except Exception as exc:  # network, hub and datasets errors vary across versions
        raise RuntimeError(
            f"mteb could not load the data of task {task_name!r} "
            f"(is the Hugging Face hub reachable?): {exc}"
        ) from exc
    corpus, queries, relevant_docs = _task_parts(task)
    dataset = _from_mteb_dicts(task_name, corpus, queries, relevant_docs, split=split,
                               subset=subset)
    if train_split:
        train = _from_mteb_dicts(task_name, corpus, queries, relevant_docs, split=train_split,
                                 subset=subset)
        dataset = with_train_queries(dataset, train)
    return dataset


def _task_parts(task: Any) -> tuple[Any, Any, Any]:
    """Return `(corpus, queries, relevant_docs)` of a loaded task, in the mteb 1.x nesting."""
    if all(hasattr(task, attr) for attr in ("corpus", "queries", "relevant_docs")):
        return task.corpus, task.queries, task.relevant_docs
    dataset = getattr(task, "dataset", None)
    if isinstance(dataset, Mapping):
        return _split_v2(dataset)
    raise DatasetError(
        f"unrecognised mteb task object {type(task).__name__}: it has neither "
        "corpus/queries/relevant_docs nor a dataset mapping; is it a retrieval task?"
    )


def _split_v2(dataset: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> tuple[Any, Any, Any]:
    """Turn mteb 2.x `dataset[subset][split][part]` into three `part[subset][split]` dicts."""
    parts: dict[str, dict[str, dict[str, Any]]] = {"corpus": {}, "queries": {}, "relevant_docs": {}}
    for subset_name, splits in dataset.items():
        for split_name, split_data in splits.items():
            for part, nested in parts.items():
                nested.setdefault(subset_name, {})[split_name] = split_data[part]
    return parts["corpus"], parts["queries"], parts["relevant_docs"]


def _wrapper_levels(relevant_docs: Any) -> int:
    """How many levels (subset, split) wrap the flat `{query: {doc: score}}` judgments."""
    levels = 0
    node = relevant_docs
    while isinstance(node, Mapping) and node:
        values = list(node.values())
        node = next((v for v in values if not (isinstance(v, Mapping) and not v)), values[0])
        levels += 1
    if isinstance(node, numbers.Number):
        levels -= 2  # query level and document level
    if not 0 <= levels <= 2:
        raise DatasetError(f"unrecognised shape of mteb relevant_docs ({levels} wrapper levels)")
    return levels


def _select(nested: Any, key: str, what: str, part: str) -> Any:
    if not isinstance(nested, Mapping) or key not in nested:
        available = sorted(nested) if isinstance(nested, Mapping) else []
        raise DatasetError(f"{what} {key!r} not found in mteb {part}; available: {available}")
    return nested[key]


def _choose_subset(relevant_docs: Mapping[str, Any], subset: str | None) -> str:
    names = list(relevant_docs)
    if subset is not None:
        return subset
    if len(names) == 1:
        return names[0]
    if "default" in relevant_docs:
        return "default"
    raise DatasetError(f"the task has several subsets {sorted(names)}; pass subset=<name>")


def _unwrap(
    corpus: Any, queries: Any, relevant_docs: Any, split: str, subset: str | None
) -> tuple[Any, Any, Any]:
    levels = _wrapper_levels(relevant_docs)
    if levels == 2:
        chosen = _choose_subset(relevant_docs, subset)
        corpus = _select(corpus, chosen, "subset", "corpus")
        queries = _select(queries, chosen, "subset", "queries")
        relevant_docs = _select(relevant_docs, chosen, "subset", "relevant_docs")
    elif subset is not None:
        log.warning("subset=%r ignored: the task has no subsets", subset)
    if levels >= 1:
        corpus = _select(corpus, split, "split", "corpus")
        queries = _select(queries, split, "split", "queries")
        relevant_docs = _select(relevant_docs, split, "split", "relevant_docs")
    return corpus, queries, relevant_docs


def _records(table: Any, part: str) -> Iterable[tuple[str, Any]]:
    """Yield `(id, value)` from an id-keyed mapping or from rows with an `id`/`_id` column."""
    if isinstance(table, Mapping):
        for key, value in table.items():
            yield str(key), value
        return
    for row in table:
        if not isinstance(row, Mapping):
            raise DatasetError(f"mteb {part} rows must be mappings, got {type(row).__name__}")
        key = row.get("id", row.get("_id"))
        if key is None:
            raise DatasetError(f"an mteb {part} row has no id column: {sorted(row)}")
        yield str(key), row


def _text(value: Any) -> str:
    """Encoding text of a document or query in any of the shapes mteb uses."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, Mapping):
        if "text" not in value and "content" in value:  # one conversation turn
            return _text(value["content"])
        parts = (_text(value.get("title")), _text(value.get("text")))
        return " ".join(p for p in parts if p)
    if isinstance(value, list | tuple):  # conversation: a list of turns
        return " ".join(t for t in (_text(v) for v in value) if t)
    return str(value).strip()


def _judgments(relevant_docs: Any) -> Iterable[tuple[str, str, Any]]:
    if isinstance(relevant_docs, Mapping):
        for query_id, docs in relevant_docs.items():
            for doc_id, score in docs.items():
                yield str(query_id), str(doc_id), score
        return
    for row in relevant_docs:  # a table with query-id / corpus-id / score columns
        yield str(row["query-id"]), str(row["corpus-id"]), row["score"]


def _from_mteb_dicts(
    name: str,
    corpus: Any,
    queries: Any,
    relevant_docs: Any,
    split: str = "test",
    subset: str | None = None,
) -> RetrievalDataset:
    """Build a dataset from mteb's corpus / queries / relevant_docs in any of their nestings.

    Each of the three may be flat (`{id: value}`), keyed by split, or keyed by subset then
    split; corpus and queries may also be tables of rows (`id`, `title`, `text`). Judgments
    naming an unknown query or document are dropped with a warning, and scores become ints.
    """
    corpus, queries, relevant_docs = _unwrap(corpus, queries, relevant_docs, split, subset)
    corpus_texts = {doc_id: _text(value) for doc_id, value in _records(corpus, "corpus")}
    query_texts = {qid: _text(value) for qid, value in _records(queries, "queries")}

    qrels: dict[str, dict[str, int]] = {}
    dropped = 0
    for query_id, doc_id, score in _judgments(relevant_docs):
        if query_id not in query_texts or doc_id not in corpus_texts:
            dropped += 1
            continue
        qrels.setdefault(query_id, {})[doc_id] = round(float(score))
    if dropped:
        log.warning(
            "%s: dropped %d judgments naming an unknown query or document", name, dropped
        )
    dataset = finalise(name, corpus_texts, query_texts, qrels)
    if not dataset.queries:
        raise DatasetError(f"mteb task {name!r}, split {split!r}: no judged queries")
    log.info(
        "loaded mteb task %s (%s split): %d documents, %d judged queries",
        name,
        split,
        len(dataset.corpus),
        len(dataset.queries),
    )
    return dataset
