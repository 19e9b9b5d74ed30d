"""Faults through the real CLI: a user's mistake is one line on stderr and leaves no run; a store
that vanishes mid-sweep costs no result (chelation-import brings them back); a sweep's workers die
with its process."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from filelock import FileLock
from mlflow.tracking import MlflowClient

from chelation import tracking

pytestmark = pytest.mark.slow

SMALL = ("cycles=1", "queries_per_cycle=10", "query_cost_sample=0", "show_progress=false")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def _cli(tmp: Path, *overrides: str, uri: str | None = None) -> list[str]:
    flags = [o for o in overrides if o.startswith("-")]
    rest = [o for o in overrides if not o.startswith("-")]
    return [sys.executable, "-m", "experiments.train", *flags, *SMALL,
            f"cache_dir={os.environ['CHELATION_TEST_CACHE']}",
            f"tracking.uri={uri or f'sqlite:///{tmp}/mlflow.db'}", *rest]


def _job_runs(uri: str, experiment: str) -> list:
    # under the store's lock, as a job opens it: a poller opening a fresh store beside the sweep's
    # first open would run MLflow's migrations at the same time ("table ... already exists")
    with FileLock(f"{tracking.sqlite_path(uri)}.lock", timeout=300):
        client = MlflowClient(uri)
        exp = client.get_experiment_by_name(experiment)
    return [] if exp is None else [r for r in client.search_runs([exp.experiment_id])
                                   if r.data.tags.get("chelation.role") == "job"]


def test_a_student_that_cannot_be_found_is_one_line_naming_it_and_no_run(tmp_path) -> None:
    out = subprocess.run(_cli(tmp_path, "student.model=/nonexistent/model",
                              "tracking.experiment=model", f"hydra.run.dir={tmp_path}/run"),
                         cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    errors = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(errors) == 1, out.stderr[-3000:]
    assert "student.model='/nonexistent/model'" in errors[0] and "Traceback" not in out.stdout
    # found at start-up: before the model loads, the data are encoded or any run exists
    assert "loading embedding model" not in out.stdout
    assert _job_runs(f"sqlite:///{tmp_path}/mlflow.db", "model") == []
    assert MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").search_runs(
        [e.experiment_id for e in MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
         .search_experiments()]) == []


def test_a_sweep_whose_student_cannot_be_found_leaves_no_run(tmp_path) -> None:
    out = subprocess.run(_cli(tmp_path, "-m", "mode=frozen,baseline",
                              "student.model=/nonexistent/model", "tracking.experiment=model",
                              f"hydra.sweep.dir={tmp_path}/sweep"),
                         cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    errors = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(errors) == 1, out.stderr[-3000:]
    assert "student.model='/nonexistent/model'" in errors[0]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []


def test_a_tracking_uri_of_no_known_scheme_is_one_line_on_stderr(tmp_path) -> None:
    out = subprocess.run(_cli(tmp_path, f"hydra.run.dir={tmp_path}/run", uri="garbage://x"),
                         cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert out.stderr.startswith("error: tracking.uri='garbage://x'")


def test_a_store_deleted_mid_sweep_costs_no_result_and_import_brings_them_back(tmp_path) -> None:
    store, sweep = tmp_path / "store", tmp_path / "sweep"
    store.mkdir()
    proc = subprocess.Popen(_cli(tmp_path, "-m", "mode=frozen", "seed=0,1,2",
                                 "tracking.experiment=vanish", f"hydra.sweep.dir={sweep}",
                                 uri=f"sqlite:///{store}/mlflow.db"),
                            cwd=tmp_path, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    first = sweep / "0" / "results.json"

    def delete_after_the_first_job() -> None:
        while proc.poll() is None:
            if first.exists() and "final_ndcg_at_10" in first.read_text():
                shutil.rmtree(store)
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=delete_after_the_first_job)
    watcher.start()
    log, _ = proc.communicate(timeout=600)
    watcher.join()
    assert proc.returncode == 0, log[-4000:]
    assert "Traceback" not in log and "Exception ignored" not in log, log[-4000:]
    results = [json.loads((sweep / str(i) / "results.json").read_text()) for i in range(3)]
    assert all(r.get("final_ndcg_at_10") is not None for r in results)
    untracked = [i for i, r in enumerate(results) if r.get("untracked")]
    assert 2 in untracked, log[-4000:]  # the last job started after the store was gone
    assert "not in the MLflow store" in log and "chelation-import" in log

    fresh = f"sqlite:///{tmp_path}/fresh.db"
    imp = [sys.executable, "-m", "experiments.import_results", str(sweep),
           "--tracking-uri", fresh, "--experiment", "imported"]
    first_import = subprocess.run(imp, env=ENV, capture_output=True, text=True, timeout=300)
    assert first_import.returncode == 0, first_import.stderr[-3000:]
    again = subprocess.run(imp, env=ENV, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and again.stdout.count("already in the store") == 3, again.stdout

    from chelation.analysis.runs import load_per_query, load_runs

    runs = load_runs(fresh, "imported")
    assert sorted(runs["config_hash"]) == sorted(r["config_hash"] for r in results)
    assert sorted(runs["metrics.final_ndcg_at_10"]) == pytest.approx(
        sorted(r["final_ndcg_at_10"] for r in results))
    per_query = load_per_query(fresh, runs)
    assert set(per_query["run_id"]) == set(runs["run_id"]) and len(per_query) > 0


def _alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_killing_a_joblib_sweep_stops_its_workers(tmp_path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    proc = subprocess.Popen(_cli(tmp_path, "-m", "mode=baseline", "seed=0,1", "cycles=200",
                                 "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                                 "tracking.experiment=orphans", f"hydra.sweep.dir={tmp_path}/s"),
                            cwd=tmp_path, env=ENV, stdout=open(tmp_path / "out.log", "w"),  # noqa: SIM115
                            stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and \
            len([r for r in _job_runs(uri, "orphans") if r.info.status == "RUNNING"]) < 2:
        assert proc.poll() is None, (tmp_path / "out.log").read_text()[-3000:]
        time.sleep(0.5)
    workers = psutil.Process(proc.pid).children(recursive=True)
    assert workers, "the sweep started no worker"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(10)
    alive = [p for p in workers if _alive(p)]
    for p in alive:  # leave nothing behind, then fail
        p.kill()
    assert not alive, [" ".join(p.cmdline()[:4]) for p in alive]
    # each worker marked its own run KILLED on its way out
    assert [r.info.status for r in _job_runs(uri, "orphans")] == ["KILLED", "KILLED"]
