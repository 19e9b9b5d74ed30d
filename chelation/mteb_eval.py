"""MTEB as referee: a sentence-transformers model folder (an export of this harness or a stock
model) scored on a local BEIR folder by mteb's own retrieval evaluation, so a figure the harness
reports can be checked by code the harness did not write.

The task reads the folder (`corpus.jsonl`, `queries.jsonl`, `qrels/<split>.tsv`) into mteb's own
retrieval format and hands everything else to mteb: it joins title and text, picks
`encode_query` / `encode_document` (a model with a query/document Router routes them), searches
by the model's similarity and scores with its evaluator (queries without a judgment dropped as
mteb drops them). No hub is asked for anything.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MAIN_SCORE = "ndcg_at_10"


def read_beir_folder(folder: str | Path, split: str = "test") -> dict[str, Any]:
    """The folder as mteb's retrieval split data: `corpus` (id, title, text) and `queries`
    (id, text) as `datasets.Dataset`, `relevant_docs` {query: {doc: score}} from
    `qrels/<split>.tsv` as written (a header row is skipped), `top_ranked` None."""
    from datasets import Dataset

    root = Path(folder)
    corpus: dict[str, list[str]] = {"id": [], "title": [], "text": []}
    for record in _jsonl(root / "corpus.jsonl"):
        corpus["id"].append(str(record["_id"]))
        corpus["title"].append(str(record.get("title") or "").strip())
        corpus["text"].append(str(record.get("text") or "").strip())
    queries: dict[str, list[str]] = {"id": [], "text": []}
    for record in _jsonl(root / "queries.jsonl"):
        queries["id"].append(str(record["_id"]))
        queries["text"].append(str(record.get("text") or "").strip())
    relevant: dict[str, dict[str, int]] = {}
    with (root / "qrels" / f"{split}.tsv").open(encoding="utf-8") as handle:
        for row in csv.reader(handle, delimiter="\t"):
            if len(row) != 3 or not row[2].strip().lstrip("-").isdigit():
                continue  # the header row (or a blank line)
            relevant.setdefault(row[0].strip(), {})[row[1].strip()] = int(row[2])
    return {"corpus": Dataset.from_dict(corpus), "queries": Dataset.from_dict(queries),
            "relevant_docs": relevant, "top_ranked": None}


def _jsonl(path: Path):
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


def local_beir_task(folder: str | Path, split: str = "test", name: str | None = None):
    """An mteb retrieval task over a local BEIR folder (nothing fetched)."""
    from mteb.abstasks.retrieval import AbsTaskRetrieval
    from mteb.abstasks.task_metadata import TaskMetadata

    root = Path(folder).expanduser().resolve()
    task_name = name or f"LocalBEIR-{root.name}"

    class LocalBeirRetrieval(AbsTaskRetrieval):
        metadata = TaskMetadata(
            name=task_name,
            description=f"The BEIR folder {root} ({split} judgments), read locally.",
            dataset={"path": str(root), "revision": "local"},
            type="Retrieval",
            category="t2t",
            modalities=["text"],
            eval_splits=[split],
            eval_langs=["eng-Latn"],
            main_score=MAIN_SCORE,
        )

        def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
            if self.data_loaded:
                return
            self.dataset = {"default": {split: read_beir_folder(root, split)}}
            self.data_loaded = True

    return LocalBeirRetrieval()


@dataclass
class MtebScore:
    """What mteb reported for one model on one folder."""

    model: str
    folder: str
    split: str
    main_score: float
    scores: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        return (f"mteb {MAIN_SCORE} {self.main_score:.4f} ({self.model} on {self.folder}, "
                f"{self.split} split)")


def score_model(model_path: str, folder: str | Path, split: str = "test",
                batch_size: int = 32, trust_remote_code: bool = True,
                show_progress: bool = False) -> MtebScore:
    """Score `model_path` (a folder or a name `chelation.models.resolve_model` resolves) on the
    local BEIR `folder` with `mteb.evaluate`; no result cache is read or written."""
    import mteb
    from sentence_transformers import SentenceTransformer

    from chelation.models import resolve_model

    resolved = resolve_model(model_path)
    model = SentenceTransformer(resolved, device="cpu", trust_remote_code=trust_remote_code)
    task = local_beir_task(folder, split)
    result = mteb.evaluate(model, task, cache=None, overwrite_strategy="always",
                           encode_kwargs={"batch_size": batch_size},
                           show_progress_bar=show_progress)
    task_result = result.task_results[0]
    scores = task_result.scores[split][0]
    log.info("mteb scored %s on %s (%s): %s %.6f", model_path, folder, split, MAIN_SCORE,
             scores["main_score"])
    return MtebScore(model=model_path, folder=str(folder), split=split,
                     main_score=float(scores["main_score"]), scores=dict(scores))
