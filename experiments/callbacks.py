"""Hydra callback that brackets a multirun with one MLflow parent run.

It runs once, in the launching process, before any job starts: it creates the store and the
experiment there (so parallel jobs never race on SQLite schema migration or experiment creation),
and leaves the parent's run id in the sweep folder for the jobs to nest under."""

from __future__ import annotations

import atexit
import logging
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from chelation import tracking
from chelation.claims import retire_stale_runs
from chelation.identity import NOT_IDENTITY, identity
from chelation.job import locate_student
from chelation.job_files import CONFIG_FILE, JobSummary
from chelation.kinds import Fallback
from chelation.models import ModelUnavailable
from chelation.run_owner import Heartbeat
from chelation.signals import exit_with_parent
from chelation.tags import SWEEP_DIR_TAG
from experiments.user_errors import exit_for, release_stderr

if TYPE_CHECKING:
    from chelation.analysis.sweep import SweepSummary
    from chelation.settings import TrackingTarget

log = logging.getLogger(__name__)

PARENT_FILE = "mlflow_parent_run_id"
SWEEP_PID_ENV = "CHELATION_SWEEP_PID"


class MlflowSweepCallback(Callback):
    # the open sweep lives in the module, not on the callback: joblib pickles the callback into
    # its workers, and a heartbeat's thread cannot be pickled
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        release_stderr()  # the config is composed: Hydra's errors are behind us

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        release_stderr()
        # inherited by the workers it starts
        os.environ[SWEEP_PID_ENV] = f"{os.getpid()}@{socket.gethostname()}"
        if not config.tracking.get("enabled", True):
            return
        _check_student(config)  # before the parent run: a sweep that cannot start leaves none
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        uri, experiment = config.tracking.uri, config.tracking.experiment
        try:
            experiment_id = tracking.prepare_store(uri, experiment)
        except tracking.TrackingUnavailable as err:  # Hydra would only warn of it
            exit_for(err)
        retire_stale_runs(tracking.client(uri), experiment_id)
        overrides = " ".join(config.hydra.overrides.task)
        name = sweep_name(config.hydra.overrides.task)
        run_id = tracking.start_parent_run(uri, experiment_id, name,
                                           {SWEEP_DIR_TAG: str(sweep_dir),
                                            "overrides": overrides})
        (sweep_dir / PARENT_FILE).write_text(run_id)
        _open_sweep.update(uri=uri, run_id=run_id, experiment_id=experiment_id,
                           heartbeat=Heartbeat(tracking.client(uri), run_id))
        # a sweep stopped by a signal or an error never reaches on_multirun_end
        atexit.register(_end_sweep, "KILLED")
        log.info("MLflow parent run %s (%r) in experiment %r (%s)", run_id, name, experiment, uri)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        # a worker process the sweep's process started (joblib's loky) stops when it dies
        pid, _, host = os.environ.get(SWEEP_PID_ENV, "").partition("@")
        if pid and host == socket.gethostname() and int(pid) != os.getpid():
            exit_with_parent(int(pid))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        jobs = sweep_jobs(config.hydra.sweep.dir)
        table = sweep_table(jobs)
        summary, browse, sweep = None, "", dict(_open_sweep)
        store = tracking.sqlite_path(sweep["uri"]) if sweep else None
        if store is not None and not store.exists():  # said once, not by every call below
            log.error("the MLflow store %s is gone: this sweep's run and summary are not "
                      "recorded", sweep["uri"])
            _open_sweep.clear()
            sweep["heartbeat"].stop()
            sweep = {}
        if sweep:
            browse = (f"to browse: mlflow ui --backend-store-uri {sweep['uri']}, then open "
                      f"{tracking.ui_link(sweep['experiment_id'])}")
            try:  # the parent run carries the sweep's table and its answer
                summary = log_sweep_summary(sweep["uri"], config.tracking.experiment,
                                            sweep["run_id"], jobs, table)
            except Exception as err:  # noqa: BLE001 - the table is also on the console
                log.error("could not log the sweep's summary to MLflow: %s",
                          " ".join(str(err).split())[:200])
        _end_sweep("FINISHED")
        if sweep:
            _retire_killed_jobs(sweep["uri"], sweep["experiment_id"])
        if table:
            log.info("sweep %s:\n%s", config.hydra.sweep.dir, table)
        untracked = [job.folder for job in jobs if job.summary and job.summary.untracked]
        if untracked:
            log.warning("%d job(s) of this sweep are not in the MLflow store (it stopped "
                        "answering); their results are on disk: %s; to bring them into a store: "
                        "chelation-import %s", len(untracked),
                        ", ".join(str(p) for p in untracked), config.hydra.sweep.dir)
        if summary is not None:
            log.info("%s", summary.line())
        if browse:
            log.info("%s", browse)


def _check_student(config: DictConfig) -> None:
    """Exit on one line, naming `student.model`, when the sweep's one student cannot be found
    (every job would fail alike); a sweep over students leaves each job to check its own."""
    swept = "student.model" in (config.hydra.sweeper.get("params") or {}) or any(
        str(o).startswith("student.model=") and "," in str(o) for o in config.hydra.overrides.task)
    if swept:
        return
    try:
        locate_student(config.student.model)
    except ModelUnavailable as err:
        exit_for(err)


def log_sweep_summary(uri: str, experiment: str, run_id: str, jobs: Sequence[SweepJob],
                      table: str) -> SweepSummary:
    """Log on the parent run the table of the sweep's jobs (`sweep_table.txt`) and its summary
    (`chelation.analysis.sweep`): the configuration each fold chose on its training-side
    queries, their agreement as tags; the procedure's pooled test NDCG@10, interval, difference
    from the frozen student with its p-value, and regret as metrics."""
    from mlflow.entities import Metric, RunTag

    from chelation.analysis.sweep import sweep_summary  # scipy: only once the sweep is over

    # a progress bar per downloaded per-query table would bury the summary on the console
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    client = tracking.client(uri)
    if table:
        client.log_text(run_id, table, "sweep_table.txt")
    # the config hashes of the sweep's jobs, those skipped as already done included
    config_hashes = {identity(job.config)[0] for job in jobs}
    summary = sweep_summary(uri, experiment, run_id, config_hashes)
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in summary.metrics.items()],
                     tags=[RunTag(k, v) for k, v in summary.tags.items()])
    return summary


@dataclass(frozen=True)
class SweepJob:
    """One job folder of a sweep: its resolved config (every job writes one, a skipped job
    included) and its results, once it wrote them (None before, or unreadable)."""

    folder: Path
    config: dict[str, Any]
    summary: JobSummary | None


def sweep_jobs(sweep_dir: str | Path) -> list[SweepJob]:
    """Every job folder of the sweep, each file read once, in folder order."""
    jobs = []
    for path in sorted(Path(sweep_dir).glob(f"*/{CONFIG_FILE}")):
        try:
            summary = JobSummary.read(path.parent)
        except (OSError, ValueError):
            summary = None
        jobs.append(SweepJob(path.parent, yaml.safe_load(path.read_text()) or {}, summary))
    return jobs


def sweep_name(overrides) -> str:
    """The parent run's name: the preset when the sweep is one, else its overrides, less those
    that change nothing a job computes (where results go, progress bars); the `overrides` tag
    keeps them all."""
    overrides = list(overrides)
    presets = [o.split("=", 1)[1] for o in overrides if o.lstrip("+").startswith("experiment=")]
    if presets:
        return f"sweep {presets[0]}"
    telling = [o for o in overrides if not o.lstrip("+~").startswith(NOT_IDENTITY + ("hydra",))]
    return f"sweep {' '.join(telling or overrides)}"[:250]


def sweep_table(jobs: Sequence[SweepJob]) -> str:
    """One line per job that ran in the sweep: configuration, seed, final NDCG@10, its change
    from cycle 0, the updates the guard rolled back and any fallback, best first, and what the
    columns mean (jobs skipped as already done wrote no results here)."""
    rows = []
    for job in jobs:
        summary = job.summary
        if summary is None:
            continue
        cycles, final = summary.cycles, summary.totals.get("final_ndcg_at_10")
        if not cycles or final is None:
            continue
        first = cycles[0].get("ndcg_at_10") or float("nan")
        rollbacks = sum(c.get("rollback") or 0 for c in cycles) + \
            (summary.totals.get("distill_rollback") or 0)
        fallback = summary.totals.get("fallback", Fallback.NONE)
        if summary.rerun_of:
            fallback += f" (re-run: {summary.rerun_of['fallback']} before)"
        rows.append((summary.config_label, job.config.get("seed"), final, final - first,
                     int(rollbacks), fallback))
    if not rows:
        return ""
    width = max(len(r[0]) for r in rows)
    lines = [f"{'configuration':<{width}}  seed  NDCG@10  vs cycle 0  rollbacks  fallback"]
    lines += [f"{label:<{width}}  {seed!s:>4}  {final:.4f}   {change:+.4f}  {rolled:>9}  {fallback}"
              for label, seed, final, change, rolled, fallback
              in sorted(rows, key=lambda r: (-r[2], r[0]))]
    lines += ["NDCG@10: test queries after the last cycle; vs cycle 0: what training changed "
              "(cycle 0 is the same job before any update); rollbacks: updates the collapse "
              "guard undid because validation NDCG@10 fell; frozen rows are the untrained control."]
    if any("(re-run:" in r[5] for r in rows):
        lines += ["re-run: this configuration had a finished run that fell back for a missing "
                  "model, now installed; the new run replaces it in the analysis."]
    return "\n".join(lines)


_open_sweep: dict[str, Any] = {}


def _end_sweep(status: str) -> None:
    """End the sweep's parent run; a store that is gone by now is said in one line (also from
    atexit, where a raise would print a traceback)."""
    if not _open_sweep:
        return
    sweep = dict(_open_sweep)
    _open_sweep.clear()
    sweep["heartbeat"].stop()
    try:
        with tracking.errors_reported_by_caller():
            tracking.end_run(sweep["uri"], sweep["run_id"], status)
    except Exception as err:  # noqa: BLE001 - the jobs' results are in their folders
        log.error("could not mark the sweep's run %s %s: the MLflow store %s stopped answering "
                  "(%s)", sweep["run_id"], status, sweep["uri"],
                  " ".join(str(err).split())[:200])


def _retire_killed_jobs(uri: str, experiment_id: str) -> None:
    """Jobs whose worker was killed mid-sweep (a Ray task retried elsewhere, say) are marked
    KILLED when the sweep ends, not only when the next one starts."""
    try:
        retire_stale_runs(tracking.client(uri), experiment_id)
    except Exception as err:  # noqa: BLE001 - the next sweep retires them as well
        log.error("could not retire the runs of killed jobs: %s",
                  " ".join(str(err).split())[:200])


def parent_run_id(sweep_dir: str | Path, target: TrackingTarget | None = None) -> str | None:
    """The sweep's parent run: from the sweep folder, or, for a worker on another machine that
    does not share it, from the tracking store `target` names."""
    path = Path(sweep_dir) / PARENT_FILE
    if path.exists():
        return path.read_text().strip()
    if target is None or not target.enabled:
        return None
    experiment_id = tracking.prepare_store(target.uri, target.experiment)
    return tracking.find_open_sweep(tracking.client(target.uri), experiment_id, str(sweep_dir))
