"""Resume and models that are missing: a missing teacher fails once and fast, a run that fell back
for it is run again once it is installed, and the analysis then reads one run per configuration."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from chelation import models, resume
from chelation.kinds import Fallback
from chelation.tags import Tag


def _run(run_id: str, fallback: str) -> SimpleNamespace:
    return SimpleNamespace(info=SimpleNamespace(run_id=run_id),
                           data=SimpleNamespace(tags={Tag.FALLBACK: fallback}))


@pytest.mark.parametrize("models_ready", [True, False])
def test_a_complete_run_is_done_whatever_fell_back_before(models_ready: bool) -> None:
    runs = [_run("new", "baseline"), _run("old", Fallback.NONE)]
    assert resume.decide(runs, models_ready) == resume.ResumeDecision(done=runs[1])
    assert resume.decide([], models_ready) == resume.ResumeDecision()


def test_a_run_that_fell_back_is_run_again_only_once_its_model_is_back() -> None:
    runs = [_run("newer", "baseline,no_update"), _run("older", "student_documents")]
    assert resume.decide(runs, True) == resume.ResumeDecision(rerun_of=runs[0])
    assert resume.decide(runs, False) == resume.ResumeDecision(done=runs[0])


def test_degraded_means_a_recorded_fallback() -> None:
    assert not Fallback.degraded(Fallback.NONE) and not Fallback.degraded(Fallback.PENDING)
    assert not Fallback.degraded(None)
    assert Fallback.degraded("baseline") and Fallback.degraded("baseline,no_update")
    assert not Fallback.degraded("a note that names no missing model")


def test_a_missing_model_fails_at_once_naming_where_it_looked(tmp_path: Path,
                                                              monkeypatch) -> None:
    monkeypatch.setenv("CHELATION_MODELS", str(tmp_path))
    started = time.perf_counter()
    with pytest.raises(models.ModelUnavailable) as err:
        models.load_model(models.resolve_model("some-org/absent-model"))
    assert str(tmp_path / "absent-model") in str(err.value)
    assert models.INSTALL_COMMAND in str(err.value)
    # remembered for the process: the second attempt does not look again
    with pytest.raises(models.ModelUnavailable, match="absent-model"):
        models.load_model("some-org/absent-model")
    assert time.perf_counter() - started < 5


@pytest.mark.slow
def test_a_job_that_fell_back_trains_with_its_teacher_once_installed(tmp_path: Path,
                                                                      monkeypatch,
                                                                      caplog) -> None:
    """The real job twice (real MiniLM as the teacher, real engine, real MLflow store): first
    without its teacher (it falls back, one warning), then with the teacher in the models folder:
    the same configuration runs again, trains with the teacher, replaces the first run, and the
    analysis reads one run for it."""
    from chelation.analysis.runs import load_runs
    from chelation.job import run_tracked_job
    from experiments.train import job_config
    from tests.test_harness import compose_with

    monkeypatch.setenv("CHELATION_MODELS", str(tmp_path / "models"))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    cfg = compose_with("mode=offline", "teacher.model=acme/all-MiniLM-L6-v2", "cycles=1",
                       "queries_per_cycle=20", "show_progress=false", "query_cost_sample=0",
                       f"cache_dir={os.environ['CHELATION_TEST_CACHE']}", f"tracking.uri={uri}",
                       "tracking.experiment=resume")
    with caplog.at_level("WARNING"):
        first = run_tracked_job(job_config(cfg), tmp_path / "first")
    assert Fallback.degraded(first.totals["fallback"])
    assert sum("acme/all-MiniLM-L6-v2" in r.getMessage() for r in caplog.records
               if r.levelname == "WARNING") == 1

    shipped = models.resolve_model("sentence-transformers/all-MiniLM-L6-v2")
    shutil.copytree(shipped, tmp_path / "models" / "all-MiniLM-L6-v2")
    again = run_tracked_job(job_config(cfg), tmp_path / "again")
    assert not again.skipped and again.run_id != first.run_id
    assert again.totals["fallback"] == Fallback.NONE
    assert again.rerun_of == {"run_id": first.run_id, "fallback": first.totals["fallback"]}

    runs = load_runs(uri, "resume")
    assert list(runs["run_id"]) == [again.run_id]
    assert runs.loc[0, "config_hash"] == first.config_hash
    third = run_tracked_job(job_config(cfg), tmp_path / "third")
    assert third.skipped and third.run_id == again.run_id
