"""A job's MLflow run: opened unless resume or a claim skips the job, tagged with what the
analysis reads back, given the job's totals and files at the end; and a guard, so that a store
that stops answering never takes the job down with it."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from chelation import resume, tracking
from chelation.claims import claim, retire_stale_runs
from chelation.identity import flatten
from chelation.job_files import (
    ADAPTERS_FOLDER,
    CONFIG_FILE,
    PER_QUERY_FILE,
    PROJECTIONS_FOLDER,
    RESULTS_FILE,
    SELECTION_FILE,
    JobSummary,
    numeric_totals,
)
from chelation.kinds import Fallback
from chelation.models import INSTALL_COMMAND
from chelation.settings import JobConfig
from chelation.tags import Tag

log = logging.getLogger(__name__)


def start_run(config: JobConfig, as_dict: Mapping[str, Any], summary: JobSummary,
              parent_run_id: str | None, track: StoreGuard,
              models_ready: bool) -> tracking.JobRun | None:
    """The job's run, or None: skipped (the summary says so), or mid-sweep a store that
    stopped answering (`track` failed, the job goes on without it). `models_ready`: whether
    the models the job needs can be had (chelation.job.check_job found them), which decides
    whether a finished run that fell back is run again."""
    try:
        with tracking.errors_reported_by_caller() if parent_run_id else nullcontext():
            return _open_run(config, as_dict, summary, parent_run_id, models_ready)
    except tracking.store_errors() as err:
        if parent_run_id is None:  # a single job: the store is the user's to fix
            raise
        # mid-sweep the store was there when the sweep began: the job goes on without it
        track.fail("open a run", err)
        return None


def _open_run(config: JobConfig, as_dict: Mapping[str, Any], summary: JobSummary,
              parent_run_id: str | None, models_ready: bool) -> tracking.JobRun | None:
    """The job's MLflow run, or None (the summary then marked skipped) when the configuration
    already has a finished run or a live sibling that started first."""
    target = config.tracking
    experiment_id = tracking.prepare_store(target.uri, target.experiment)  # fails naming it
    store = tracking.sqlite_path(target.uri)
    if store is not None and not store.exists():  # deleted since it was prepared
        raise tracking.TrackingUnavailable(f"tracking.uri={target.uri!r}: {store} is gone")
    client = tracking.client(target.uri)
    if parent_run_id is None:  # a sweep's callback retires them once for all its jobs
        retire_stale_runs(client, experiment_id)
    if _already_done(config, summary, client, experiment_id, models_ready):
        return None
    run = tracking.JobRun(target.uri, experiment_id, f"{summary.config_label}/seed{config.seed}",
                          flatten(as_dict), job_tags(config, summary), parent_run_id)
    if not claim(client, experiment_id, summary.config_hash, run.run_id, parent_run_id):
        run.stop_heartbeat()
        log.info("skipping %s seed %s: a live run of config %s started first",
                 summary.config_label, config.seed, summary.config_hash)
        summary.skipped = True
        return None
    return run


def _already_done(config: JobConfig, summary: JobSummary, client: Any,
                  experiment_id: str, models_ready: bool) -> bool:
    """Whether resume skips the job: its configuration has a finished run that stands for it
    (the summary then carries that run's id and final scores). A finished run that fell back
    for a model that can be had now is noted in `summary.rerun_of`, to be replaced."""
    name = f"{summary.config_label} seed {config.seed}"
    finished = tracking.finished_runs(client, experiment_id, summary.config_hash) \
        if config.tracking.resume else []
    decision = resume.decide(finished, models_ready)
    done = decision.done
    if decision.rerun_of is not None:
        fallback = decision.rerun_of.data.tags.get(Tag.FALLBACK)
        summary.rerun_of = {"run_id": decision.rerun_of.info.run_id, "fallback": fallback}
        log.info("running %s again: finished run %s fell back (%s) and its teacher %s can be "
                 "loaded now; the new run replaces it", name, decision.rerun_of.info.run_id,
                 fallback, config.teacher.model)
    if done is None:
        return False
    if resume.fell_back(done):
        log.warning("skipping %s: finished run %s fell back (%s) and its teacher %s is "
                    "still missing; install it (`%s`) and run again to train with it",
                    name, done.info.run_id, done.data.tags.get(Tag.FALLBACK),
                    config.teacher.model, INSTALL_COMMAND)
    else:
        log.info("skipping %s: finished run %s has config hash %s", name, done.info.run_id,
                 summary.config_hash)
    summary.skipped, summary.run_id = True, done.info.run_id
    summary.totals = {k: done.data.metrics[k] for k in ("final_ndcg_at_10", "val_ndcg_at_10")
                      if k in done.data.metrics}
    return True


def job_tags(config: JobConfig, summary: JobSummary) -> dict[str, str]:
    """The tags a job's run carries (what the analysis reads back as columns)."""
    return {
        Tag.MODE: config.training.mode,
        Tag.TEACHER: config.teacher.name,
        Tag.STUDENT: config.student.model,
        Tag.DATASET: config.dataset.name,
        Tag.SEED: str(config.seed),
        Tag.SCHEDULE: config.weight.schedule,
        Tag.PROJECTION: config.teacher.projection,
        Tag.PROTOCOL: config.protocol,
        Tag.INDEX_DOCUMENTS: config.index.documents,
        Tag.INDEX_TEACHER_WEIGHT: f"{config.index.document_weight:g}",
        Tag.CONFIG_HASH: summary.config_hash,
        Tag.GROUP_HASH: summary.group_hash,
        Tag.CONFIG_LABEL: summary.config_label,
        Tag.FALLBACK: Fallback.PENDING,
        Tag.GIT_COMMIT: tracking.git_commit(Path(__file__).parent),
    }


def finish_run(run: tracking.JobRun, track: StoreGuard, summary: JobSummary, fallback: str,
                output_dir: Path) -> None:
    """The job's totals, its fallback and its files into the run, which ends FINISHED (and
    replaces the run that fell back, when this one did not)."""
    track(run.log_metrics, numeric_totals(summary.totals), 0)
    track(run.set_tags, {Tag.FALLBACK: fallback})
    if summary.rerun_of and not Fallback.degraded(fallback):
        track(run.supersede, summary.rerun_of["run_id"])
    for name in (CONFIG_FILE, PER_QUERY_FILE, SELECTION_FILE, RESULTS_FILE):
        track(run.log_artifact, output_dir / name)
    track(run.log_artifact, output_dir / ADAPTERS_FOLDER)
    if (output_dir / PROJECTIONS_FOLDER).is_dir():
        track(run.log_artifact, output_dir / PROJECTIONS_FOLDER)
    track(run.finish, "FINISHED")


class StoreGuard:
    """Tracking calls never take a computation down with them: the first failure says, once,
    where the job's results are; later calls are skipped."""

    def __init__(self, uri: str, output_dir: Path):
        self.uri, self.output_dir, self.failed = uri, output_dir, False
        self.store = tracking.sqlite_path(uri)

    def __call__(self, fn, *args) -> None:
        if self.failed:
            return
        try:
            # a deleted SQLite file can still take writes through an open connection, unseen
            if self.store is not None and not self.store.exists():
                raise tracking.TrackingUnavailable(f"{self.store} is gone")
            with tracking.errors_reported_by_caller():
                fn(*args)
        except Exception as err:  # noqa: BLE001
            self.fail(getattr(fn, "__name__", str(fn)), err)

    def fail(self, what: str, err: BaseException) -> None:
        """Say once, on one line, that the job goes on untracked and where its results are."""
        self.failed = True
        reason = " ".join(str(err).split())[:200] or type(err).__name__
        log.error("MLflow store %s stopped answering (%s: %s); the job goes on untracked: its "
                  "results are in %s (chelation-import %s brings them into a store)", self.uri,
                  what, reason, self.output_dir, self.output_dir)
