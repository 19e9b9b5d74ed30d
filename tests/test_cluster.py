"""Sweeps beyond one process: jobs as Ray tasks (hydra/launcher=ray, a local Ray instance) that
log to an `mlflow server` on a real PostgreSQL, both started here by scripts/tracking_server.sh on
loopback and stopped at the end. Everything is read back over HTTP with MLflow's own client."""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.test_harness import _job_runs
from tests.test_reliability import _cli, _finish

REPO = Path(__file__).resolve().parents[1]
SERVER = REPO / "scripts" / "tracking_server.sh"
SWEEP = ("-m", "hydra/launcher=ray", "mode=baseline,frozen", "seed=0,1,2")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("ray") is None
                       or importlib.util.find_spec("psycopg2") is None
                       or importlib.util.find_spec("hydra_plugins.hydra_ray_launcher") is None,
                       reason="needs the [ray] and [server] extras"),
    pytest.mark.skipif(shutil.which("initdb") is None and not list(
        Path("/usr/lib/postgresql").glob("*/bin/initdb")), reason="needs PostgreSQL"),
]


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """An MLflow server on a fresh PostgreSQL cluster, loopback only; stopped however the tests
    end. Ray gets its own token, so nothing is written to the home folder."""
    # not under pytest's 0700 temporary root: PostgreSQL runs as another user when we are root
    folder = Path(tempfile.mkdtemp(prefix="chelation-tracking-"))
    folder.chmod(0o755)
    env = {**os.environ, "PYTHON": sys.executable}
    ray_env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16),
               "RAY_USAGE_STATS_ENABLED": "0", "RAY_DEDUP_LOGS": "0"}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in ray_env.items():
            patch.setenv(key, value)
        try:
            started = subprocess.run(["bash", str(SERVER), "start", str(folder)], env=env,
                                     capture_output=True, text=True, timeout=180)
            assert started.returncode == 0, started.stderr[-3000:]
            yield started.stdout.strip().splitlines()[-1]
        finally:
            subprocess.run(["bash", str(SERVER), "stop", str(folder)], env=env, timeout=120)
            shutil.rmtree(folder, ignore_errors=True)


def _sweep(tmp: Path, uri: str, experiment: str, name: str,
           *overrides: str) -> tuple[int, str, int]:
    """A 2 modes x 3 seeds sweep on Ray: (exit code, its output, the launcher's pid)."""
    proc = _cli(tmp, *SWEEP, f"tracking.experiment={experiment}",
                f"hydra.sweep.dir={tmp}/{name}", *overrides, log=f"{name}.log", uri=uri)
    code = _finish(proc, 600)
    return code, (tmp / f"{name}.log").read_text(), proc.pid


def _all_jobs(client: MlflowClient, experiment: str) -> list:
    exp = client.get_experiment_by_name(experiment)
    return [r for r in client.search_runs([exp.experiment_id])
            if r.data.tags.get("chelation.role") == "job"]


def test_a_ray_sweep_logs_to_the_server(server: str, tmp_path: Path) -> None:
    code, out, launcher = _sweep(tmp_path, server, "ray", "first")
    assert code == 0, out[-3000:]
    assert "Ray Launcher is launching 6 jobs" in out
    client = MlflowClient(server)
    jobs, parents = _job_runs(client, "ray")
    assert len(parents) == 1 and len(jobs) == 6
    assert sorted((r.data.tags["mode"], r.data.tags["seed"]) for r in jobs) == sorted(
        (mode, str(seed)) for mode in ("baseline", "frozen") for seed in range(3))
    for run in jobs:
        run_id = run.info.run_id
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert run.data.params["training.mode"] == run.data.tags["mode"]
        assert run.data.tags["chelation.pid"] != str(launcher)  # ran in a Ray worker
        # one NDCG@10 a cycle (cycles=1: cycle 0 and cycle 1)
        steps = [m.step for m in client.get_metric_history(run_id, "ndcg_at_10")]
        assert sorted(steps) == [0, 1]
        # artifacts live on the server, and come back through it
        assert run.info.artifact_uri.startswith("mlflow-artifacts:")
        assert {"results.json", "config.yaml", "per_query_ndcg.csv", "adapters"} <= {
            a.path for a in client.list_artifacts(run_id)}
        local = client.download_artifacts(run_id, "results.json", str(tmp_path))
        results = json.loads(Path(local).read_text())
        assert results["config_hash"] == run.data.tags["config_hash"]
        assert results["final_ndcg_at_10"] == pytest.approx(
            run.data.metrics["final_ndcg_at_10"])
    assert "(_run_job pid=" in out
    # resume on Ray (a rerun skips what finished) is the killed-worker test's second sweep


def test_a_worker_killed_mid_sweep_is_retired_and_the_rerun_completes(server: str,
                                                                     tmp_path: Path) -> None:
    # no retries: the sweep fails, as it would where the whole node went away
    longer = ("cycles=20", "hydra.launcher.ray.remote.max_retries=0")
    proc = _cli(tmp_path, *SWEEP, *longer, "tracking.experiment=killed",
                f"hydra.sweep.dir={tmp_path}/first", log="first.log", uri=server)
    client = MlflowClient(server)
    victim, deadline = None, time.time() + 300
    while victim is None and time.time() < deadline:
        assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        if client.get_experiment_by_name("killed") is not None:
            running = [r for r in _all_jobs(client, "killed")
                       if r.info.status == "RUNNING" and r.data.tags["mode"] == "baseline"]
            victim = running[0] if running else None
        time.sleep(0.3)
    assert victim is not None
    worker = int(victim.data.tags["chelation.pid"])
    assert worker != proc.pid  # a Ray worker, not the launcher
    time.sleep(1.0)  # inside the cycles
    os.kill(worker, signal.SIGKILL)
    assert _finish(proc, 300) != 0
    done_before = [r for r in _all_jobs(client, "killed") if r.info.status == "FINISHED"]

    code, out, _ = _sweep(tmp_path, server, "killed", "again", *longer)
    assert code == 0, out[-3000:]
    # resume on Ray: what finished before the kill is skipped, not run twice
    job_logs = "".join(p.read_text() for p in (tmp_path / "again").glob("*/*.log"))
    assert job_logs.count("skipping ") == len(done_before), out[-3000:]
    runs = _all_jobs(client, "killed")
    finished = [r.data.tags["config_hash"] for r in runs if r.info.status == "FINISHED"]
    assert len(finished) == len(set(finished)) == 6
    assert not [r for r in runs if r.info.status == "RUNNING"]
    assert client.get_run(victim.info.run_id).info.status == "KILLED"


def test_eight_jobs_at_once_against_the_server(server: str, tmp_path: Path) -> None:
    code, out, _ = _sweep(tmp_path, server, "eight", "sweep", "seed=0,1,2,3",
                       "hydra.launcher.ray.remote.num_cpus=0.25")
    assert code == 0, out[-3000:]
    jobs, parents = _job_runs(MlflowClient(server), "eight")
    assert len(jobs) == 8 and len(parents) == 1
    logs = [out] + [p.read_text() for p in (tmp_path / "sweep").glob("*/*.log")]
    assert len(logs) == 9
    for log in logs:
        assert "ERROR" not in log and "Traceback" not in log, log[-3000:]
    # how many ran at the same time (reported; 2 cores bound it)
    spans = sorted((r.info.start_time, r.info.end_time) for r in jobs)
    overlap = max(sum(s <= start < e for s, e in spans) for start, _ in spans)
    print(f"at most {overlap} of 8 jobs running at once")
    assert overlap >= 2
