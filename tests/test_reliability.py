"""Reliability through the real CLI and a real SQLite MLflow store: sweeps started together,
the same sweep twice at once, a job stopped by SIGTERM, and bad inputs that must fail early,
naming what is wrong, without leaving a run RUNNING."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from filelock import FileLock
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow

SMALL = ("cycles=1", "queries_per_cycle=10", "query_cost_sample=0", "show_progress=false")


def _cli(tmp: Path, *overrides: str, log: str | None = None,
         uri: str | None = None) -> subprocess.Popen:
    """The CLI in a subprocess, small, logging to `uri` (default: a SQLite store in `tmp`)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    out = open(tmp / (log or "out.log"), "w")  # noqa: SIM115 - closed by the caller's wait
    flags = [o for o in overrides if o.startswith("-")]  # argparse wants them first
    overrides = tuple(o for o in overrides if not o.startswith("-"))
    return subprocess.Popen([sys.executable, "-m", "experiments.train", *flags, *SMALL,
                             f"cache_dir={os.environ['CHELATION_TEST_CACHE']}",
                             f"tracking.uri={uri or f'sqlite:///{tmp}/mlflow.db'}", *overrides],
                            cwd=tmp, env=env, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)


def _finish(proc: subprocess.Popen, timeout: float = 600) -> int:
    return proc.wait(timeout=timeout)


def _runs(tmp: Path, experiment: str, role: str = "job", status: str | None = None) -> list:
    # under the store's lock, as a job opens it: a poller that opened a fresh store beside the
    # job's first open would run MLflow's migrations at the same time ("table ... already exists")
    with FileLock(f"{tmp}/mlflow.db.lock", timeout=300):
        client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
        exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    runs = client.search_runs([exp.experiment_id])
    return [r for r in runs if r.data.tags.get("chelation.role") == role
            and (status is None or r.info.status == status)]


def test_four_sweeps_started_together_on_a_fresh_store_all_record(tmp_path: Path) -> None:
    procs = [_cli(tmp_path, "-m", "mode=baseline", "seed=0,1", f"tracking.experiment=e{i}",
                  f"hydra.sweep.dir={tmp_path}/s{i}", log=f"s{i}.log") for i in range(4)]
    assert [_finish(p) for p in procs] == [0, 0, 0, 0]
    for i in range(4):
        log = (tmp_path / f"s{i}.log").read_text()
        assert "Traceback" not in log and "ERROR" not in log, log[-2000:]
        assert len(_runs(tmp_path, f"e{i}", status="FINISHED")) == 2
        assert len(_runs(tmp_path, f"e{i}", role="sweep", status="FINISHED")) == 1


def test_the_same_sweep_launched_twice_at_once_runs_each_config_once(tmp_path: Path) -> None:
    sweep = ("-m", "mode=baseline,frozen", "seed=0,1", "tracking.experiment=twice")
    procs = [_cli(tmp_path, *sweep, f"hydra.sweep.dir={tmp_path}/s{i}", log=f"s{i}.log")
             for i in range(2)]
    assert [_finish(p) for p in procs] == [0, 0]
    finished = Counter(r.data.tags["config_hash"] for r in _runs(tmp_path, "twice", "job",
                                                                 "FINISHED"))
    assert len(finished) == 4 and set(finished.values()) == {1}, finished
    assert not _runs(tmp_path, "twice", "job", "RUNNING")
    assert not _runs(tmp_path, "twice", "sweep", "RUNNING")


def test_sigterm_marks_a_single_job_killed(tmp_path: Path) -> None:
    proc = _cli(tmp_path, "mode=baseline", "cycles=50", "tracking.experiment=term",
                f"hydra.run.dir={tmp_path}/run")
    deadline = time.time() + 300
    while time.time() < deadline and not _runs(tmp_path, "term", status="RUNNING"):
        assert proc.poll() is None, (tmp_path / "out.log").read_text()[-2000:]
        time.sleep(0.3)
    time.sleep(1.0)  # inside the cycles
    os.kill(proc.pid, signal.SIGTERM)
    assert _finish(proc, 120) != 0
    runs = _runs(tmp_path, "term")
    assert [r.info.status for r in runs] == ["KILLED"]


@pytest.mark.parametrize(("overrides", "says"), [
    (("+unknown=1",), "unknown setting(s) ['unknown']"),
    (("+training.epoch=5",), "unknown setting(s) ['training.epoch']"),
    (("tracking.uri=garbage://x",), "tracking.uri='garbage://x'"),
    (("engine.url=http://127.0.0.1:1",), "engine.url=http://127.0.0.1:1: cannot open"),
])
def test_bad_inputs_fail_early_naming_the_key(tmp_path: Path, overrides, says: str) -> None:
    proc = _cli(tmp_path, "tracking.experiment=bad", f"hydra.run.dir={tmp_path}/run",
                *overrides)
    assert _finish(proc, 300) != 0
    log = (tmp_path / "out.log").read_text()
    assert says in log, log[-3000:]
    assert not _runs(tmp_path, "bad", status="RUNNING")


def test_a_rejected_data_file_leaves_no_run_behind(tmp_path: Path) -> None:
    folder = tmp_path / "broken"
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text(json.dumps({"_id": "d1", "text": "a"}) + "\n{oops\n")
    (folder / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "b"}) + "\n")
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    proc = _cli(tmp_path, "dataset.kind=beir", "dataset.name=broken", f"dataset.path={folder}",
                "tracking.experiment=data", f"hydra.run.dir={tmp_path}/run")
    assert _finish(proc, 300) != 0
    log = (tmp_path / "out.log").read_text()
    assert "corpus.jsonl, line 2: invalid JSON" in log, log[-3000:]
    assert _runs(tmp_path, "data") == []
