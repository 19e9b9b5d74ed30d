"""The mteb referee's task: a local BEIR folder read into mteb's retrieval format, no hub.
(Scoring a real model through it is in tests/test_export.py, on an exported blended model.)"""

from __future__ import annotations

import json
from pathlib import Path

from chelation.mteb_eval import MAIN_SCORE, local_beir_task, read_beir_folder


def _folder(root: Path) -> Path:
    (root / "qrels").mkdir(parents=True)
    docs = [{"_id": "d1", "title": "Wings ", "text": " lift in a slipstream"},
            {"_id": 2, "text": "boundary layers"}]
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs) + "\n")
    queries = [{"_id": "q1", "text": "slipstream lift"}, {"_id": "q2", "text": "unjudged"}]
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\t2\t0\n")
    return root


def test_the_folder_reads_as_mteb_retrieval_data(tmp_path: Path) -> None:
    data = read_beir_folder(_folder(tmp_path / "beir"))
    assert data["corpus"]["id"] == ["d1", "2"]
    assert data["corpus"]["title"] == ["Wings", ""]
    assert data["corpus"]["text"] == ["lift in a slipstream", "boundary layers"]
    assert data["queries"]["id"] == ["q1", "q2"]  # mteb itself drops the unjudged one
    assert data["relevant_docs"] == {"q1": {"d1": 2, "2": 0}}
    assert data["top_ranked"] is None


def test_the_task_loads_the_folder_without_the_hub(tmp_path: Path) -> None:
    task = local_beir_task(_folder(tmp_path / "beir"), split="test", name="Tiny")
    task.load_data()
    assert task.metadata.name == "Tiny" and task.metadata.main_score == MAIN_SCORE
    assert task.dataset["default"]["test"]["relevant_docs"] == {"q1": {"d1": 2, "2": 0}}
