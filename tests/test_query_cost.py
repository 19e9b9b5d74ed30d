"""What a query costs at serving time, measured with the real MiniLM student and the real index;
the model's part kept beside its embedding store, so a warm job loads no model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from chelation.adapter import ResidualAdapter
from chelation.cpu import cpu_name
from chelation.encoders import CachedEncoder
from chelation.engine import open_index
from chelation.query_cost import COST_FILE, measure_query_cost, model_timing

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
DOCS = [f"document number {i} about wings, shells and heat" for i in range(40)]
QUERIES = ["heat transfer to wings", "buckling of shells", "which wing is best"]
REPO = Path(__file__).resolve().parents[1]


def test_model_is_timed_once_per_machine_and_kept_beside_its_store(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    encoder = CachedEncoder(MINILM, tmp_path, show_progress=False)
    docs, queries = encoder.encode(DOCS), encoder.encode(QUERIES)
    index = open_index(docs.shape[1])
    try:
        index.index([str(i) for i in range(len(DOCS))], docs)
        adapter = ResidualAdapter(docs.shape[1], hidden_dim=8, seed=0)
        first = measure_query_cost(encoder, adapter, index, QUERIES, queries, depth=10)
        assert first.n_queries == 3
        assert first.encode_ms > 0.5  # a transformer forward pass, not a cache hit
        assert 0 < first.search_ms < first.encode_ms
        kept = json.loads((encoder.cache.folder / COST_FILE).read_text())
        assert kept["cpu"] == cpu_name() and kept["n_texts"] == 3
        assert kept["precision"] == "float32"
        assert first.encode_ms >= kept["encode_ms"]  # the model's part, plus the adapter's

        # a later job, in this process or another (a new encoder on the same store): the model
        # is not asked again
        loads = []
        monkeypatch.setattr(CachedEncoder, "model", lambda self: loads.append(1) or pytest.fail(
            "model reloaded"))
        again = CachedEncoder(MINILM, tmp_path, show_progress=False)
        second = measure_query_cost(again, adapter, index, QUERIES, queries, depth=10)
        assert second.encode_ms == pytest.approx(first.encode_ms, rel=0.5)
        assert not loads
        assert np.isnan(measure_query_cost(encoder, adapter, index, [], queries[:0], 10).encode_ms)

        # measured on another CPU: measured again here
        monkeypatch.undo()
        (encoder.cache.folder / COST_FILE).write_text(json.dumps({**kept, "cpu": "another"}))
        assert model_timing(encoder, QUERIES).cpu == cpu_name()
        assert json.loads((encoder.cache.folder / COST_FILE).read_text())["cpu"] == cpu_name()
    finally:
        index.close()


_JOB = """
import runpy, sys
sys.argv = ["experiments.train", *sys.argv[1:]]
try:
    runpy.run_module("experiments.train", run_name="__main__")
except SystemExit as stop:
    if stop.code:
        raise
print("MODEL MODULES", sorted(m for m in ("sentence_transformers", "transformers")
                              if m in sys.modules))
print("COMPILER MODULES", sorted(m for m in ("torch._dynamo", "sympy") if m in sys.modules))
"""


@pytest.mark.slow
def test_a_warm_job_never_imports_sentence_transformers(tmp_path: Path, cache_dir: Path) -> None:
    """Every text cached and the query cost known: the job (a real one, in its own process,
    query cost on by default) runs without importing a model, and trains its adapter without
    importing torch's compiler (chelation/adam.py)."""
    from hydra import compose, initialize_config_dir

    from chelation.data import load_dataset
    from chelation.protocol import encode_dataset
    from experiments.schema import register
    from experiments.train import job_config

    overrides = ["mode=hybrid", "cycles=1", "queries_per_cycle=10", f"cache_dir={cache_dir}"]
    register()
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        config = job_config(compose("config", overrides=overrides))
    assert config.query_cost_sample > 0 and config.teacher.model == config.student.model
    # warm: the collection's texts in the store, the model's query time beside it
    dataset = load_dataset(config.dataset)
    student = CachedEncoder(config.student.model, cache_dir, show_progress=False)
    encode_dataset(dataset, student)
    model_timing(student, [dataset.queries[q] for q in dataset.all_query_ids[:4]])

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", _JOB, *overrides, "show_progress=false",
                           f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
                           f"hydra.run.dir={tmp_path}/job"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "MODEL MODULES []" in done.stdout, done.stdout[-2000:]
    assert "COMPILER MODULES []" in done.stdout, done.stdout[-2000:]
    result = json.loads((tmp_path / "job" / "results.json").read_text())
    assert result["n_encoded"] == 0 and result["n_cached"] > 0
    assert result["query_encode_ms"] > 0 and result["query_search_ms"] > 0
