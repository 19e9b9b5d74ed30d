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
from chelation.export import AdapterModule, export_run, log_exported_model
from chelation.job import run_tracked_job
from chelation.metrics import per_query_scores
from chelation.protocol import make_folds
from experiments.train import job_config
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


def _write_beir(dataset, query_ids, out: Path) -> Path:
    """`dataset` as a BEIR folder whose judgments are those of `query_ids` only."""
    (out / "qrels").mkdir(parents=True)
    with open(out / "corpus.jsonl", "w") as fh:
        for doc_id in dataset.doc_ids:
            record = {"_id": doc_id, "title": "", "text": dataset.corpus[doc_id]}
            fh.write(json.dumps(record) + "\n")
    with open(out / "queries.jsonl", "w") as fh:
        for query_id, text in dataset.queries.items():
            fh.write(json.dumps({"_id": query_id, "text": text}) + "\n")
    with open(out / "qrels" / "test.tsv", "w") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        for query_id, docs in dataset.subset_qrels(query_ids).items():
            for doc_id, score in docs.items():
                fh.write(f"{query_id}\t{doc_id}\t{score}\n")
    return out


def test_a_blended_run_exports_as_one_query_document_model(
        tmp_path: Path, teacher768_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The run's index held normalize(0.5 student + 0.5 P teacher) with a trained adapter on
    top: the exported model's encode_document gives those index vectors, its encode_query the
    adapted student's, and mteb's own evaluator scores it at the run's final NDCG@10."""
    import subprocess
    import sys

    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Router

    from chelation.adapter import ResidualAdapter
    from chelation.documents import document_vectors
    from chelation.encoders import CachedEncoder
    from chelation.export import BlendedDocuments
    from chelation.protocol import build_teacher, encode_dataset

    run_id, uri, job = _run(tmp_path, "mode=baseline", "training.push=0.5", "training.lr=0.01",
                            "chelation.trigger=always", "training.guard_tolerance=1.0",
                            "index.documents=blend", "index.teacher_weight=0.5",
                            f"teacher.model={teacher768_path}")
    summary, settings = job["summary"], job["settings"]
    assert summary.cycles[-1]["ndcg_at_10"] != summary.cycles[0]["ndcg_at_10"]  # it trained
    out = export_run(run_id, tmp_path / "exported", uri)
    assert json.loads((out / "modules.json").read_text())[0]["type"].endswith("Router")
    model = SentenceTransformer(str(out), device="cpu", trust_remote_code=True)
    assert isinstance(model[0], Router) and isinstance(model[-1], AdapterModule)
    assert isinstance(model[0].sub_modules["document"][0], BlendedDocuments)

    # the run's own vectors, rebuilt by the code that built its index (cache, teacher,
    # projection, blend) and its saved adapter
    dataset = make_synthetic(0)
    encoded = encode_dataset(dataset, CachedEncoder(settings.student.model, settings.cache_dir,
                                                    show_progress=False))
    choice = document_vectors(encoded.student_docs, settings.index, build_teacher(settings, False),
                              [dataset.corpus[d] for d in dataset.doc_ids])
    np.testing.assert_array_equal(
        choice.projection, np.load(tmp_path / "job" / "projections" / "fold_0.npy"))
    adapter = ResidualAdapter(encoded.student_docs.shape[1], settings.adapter.hidden_dim)
    adapter.load_state_dict(torch_load(tmp_path / "job" / "adapters" / "fold_0.pt"))
    index_vectors = adapter.apply(choice.vectors)
    assert np.abs(index_vectors - adapter.apply(encoded.student_docs)).max() > 1e-2  # blended
    test = make_folds(dataset.judged_query_ids, settings)[0].test

    docs = model.encode_document([dataset.corpus[d] for d in dataset.doc_ids], batch_size=64)
    queries = model.encode_query([dataset.queries[q] for q in test], batch_size=64)
    np.testing.assert_allclose(docs, index_vectors, atol=1e-6)
    np.testing.assert_allclose(queries, adapter.apply(encoded.query_matrix(test)), atol=1e-6)

    # mteb, through the command, scores the run's test queries at the run's final NDCG@10
    folder = _write_beir(dataset, test, tmp_path / "beir")
    report = tmp_path / "mteb.json"
    subprocess.run([sys.executable, "-m", "experiments.mteb_eval", str(out), str(folder),
                    "--json", str(report)], check=True, cwd=tmp_path)
    referee = json.loads(report.read_text())["main_score"]
    assert abs(referee - summary.final_ndcg_at_10) < 1e-4, (referee, summary.final_ndcg_at_10)

    # logged with MLflow's sentence_transformers flavour, it loads back and encodes the same
    import mlflow

    monkeypatch.chdir(tmp_path)  # the logged model's artifacts land in ./mlruns: the test's own
    loaded = mlflow.sentence_transformers.load_model(log_exported_model(run_id, out, uri))
    sample = [dataset.queries[q] for q in test[:5]]
    np.testing.assert_allclose(loaded.encode_query(sample), queries[:5], atol=1e-6)
    np.testing.assert_allclose(loaded.encode_document(sample), model.encode_document(sample),
                               atol=1e-6)


def torch_load(path: Path) -> dict:
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)
