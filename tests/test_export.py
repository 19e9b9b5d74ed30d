"""Export: a real split-protocol run (real MiniLM, real engine, real MLflow store) exported as a
sentence-transformers folder, loaded back with SentenceTransformer, reproduces the run's final
test NDCG@10 by exact search and pytrec_eval."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from chelation.data import make_synthetic
from chelation.export import AdapterModule, ExportError, export_run, log_exported_model
from chelation.job import run_tracked_job
from chelation.metrics import per_query_scores
from chelation.protocol import make_folds
from chelation_harness.train import job_config
from tests.test_harness import compose_with

pytestmark = pytest.mark.slow


def _run(tmp_path: Path, *overrides: str) -> tuple[str, str, dict]:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    cfg = compose_with("protocol=split", "cycles=2", "queries_per_cycle=20", "seed=3",
                       f"cache_dir={os.environ['CHELATION_TEST_CACHE']}", "show_progress=false",
                       f"tracking.uri={uri}", "tracking.experiment=export", *overrides)
    config = job_config(cfg)
    summary = run_tracked_job(config, tmp_path / "job")
    return summary.run_id, uri, {"settings": config, "summary": summary}


def test_exported_model_reproduces_the_runs_final_ndcg(tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    run_id, uri, job = _run(tmp_path, "mode=baseline", "training.push=0.5", "training.lr=0.01",
                            "chelation.trigger=always", "training.guard_tolerance=1.0")
    out = export_run(run_id, tmp_path / "exported", uri)
    assert json.loads((out / "modules.json").read_text())[-1]["type"] == \
        "chelation.export.AdapterModule"
    model = SentenceTransformer(str(out), device="cpu", trust_remote_code=True)

    dataset = make_synthetic(0)
    test = make_folds(dataset.judged_query_ids, job["settings"])[0].test
    docs = model.encode([dataset.corpus[d] for d in dataset.doc_ids], batch_size=64)
    queries = model.encode([dataset.queries[q] for q in test], batch_size=64)
    scores = queries @ docs.T
    run = {}
    for q, row in zip(test, scores, strict=True):
        top = np.argsort(-row)[:100]
        run[q] = {dataset.doc_ids[j]: float(row[j]) for j in top}
    ndcg = np.mean([s["ndcg_at_10"] for s in per_query_scores(
        dataset.subset_qrels(test), run).values()])
    final = job["summary"].final_ndcg_at_10
    assert job["summary"].cycles[-1]["ndcg_at_10"] != job["summary"].cycles[0]["ndcg_at_10"]
    assert abs(ndcg - final) < 1e-4, (ndcg, final)

    # the same model logged to the run with MLflow's flavour loads back and encodes the same
    import mlflow

    uri_of_model = log_exported_model(run_id, out, uri)
    loaded = mlflow.sentence_transformers.load_model(uri_of_model)
    sample = [dataset.queries[q] for q in test[:5]]
    np.testing.assert_allclose(loaded.encode(sample), model.encode(sample), atol=1e-6)
    assert isinstance(loaded[-1], AdapterModule)
    assert mlflow.MlflowClient(uri).get_run(run_id).info.status == "FINISHED"


def test_a_run_with_teacher_documents_is_refused(tmp_path: Path, teacher768_path: str) -> None:
    run_id, uri, _ = _run(tmp_path, "mode=frozen", "index.documents=blend",
                          "index.teacher_weight=0.5", f"teacher.model={teacher768_path}")
    with pytest.raises(ExportError, match="teacher"):
        export_run(run_id, tmp_path / "exported", uri)
