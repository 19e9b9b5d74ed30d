"""A tracked job: one JobConfig in, a JobSummary out. It loads the data, runs the protocol, logs
every cycle to MLflow as it completes and writes the same results next to the job (see
chelation.job_files), so nothing is lost if the tracking store is unreachable."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chelation import tracking
from chelation.data import RetrievalDataset, dataset_digest, load_dataset
from chelation.engine import check_engine
from chelation.identity import as_mapping, config_label, identity
from chelation.job_files import (
    PER_QUERY_FILE,
    SELECTION_FILE,
    JobSummary,
    finite,
    job_totals,
    save_models,
    write_config,
    write_per_query_table,
    write_selection_table,
)
from chelation.job_run import StoreGuard, finish_run, start_run
from chelation.kinds import Protocol
from chelation.loading import import_paused
from chelation.models import ModelUnavailable, locate_model
from chelation.settings import JobConfig, SettingsError
from chelation.signals import signals_interrupt

if TYPE_CHECKING:  # torch loads with the protocol, when a job runs (not when it is skipped)
    from chelation.protocol import CycleRecord, JobResult

log = logging.getLogger(__name__)


def run_tracked_job(config: JobConfig, output_dir: str | Path,
                    parent_run_id: str | None = None) -> JobSummary:
    """Run one job with tracking; returns its summary (also written to output_dir/results.json).
    With resume on, a configuration that already has a finished run is skipped."""
    started = time.perf_counter()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    as_dict = as_mapping(config)
    summary = _new_summary(config, as_dict, output_dir)
    # the data and the models are checked before any run exists: a rejected file or a model
    # that cannot be found leaves nothing behind
    dataset = load_dataset(config.dataset)
    models_ready = check_job(config, dataset)
    track = StoreGuard(config.tracking.uri, output_dir)
    run: tracking.JobRun | None = None
    if config.tracking.enabled:
        run = start_run(config, as_dict, summary, parent_run_id, track, models_ready)
        if run is None and not track.failed:  # skipped: done, or a live sibling has it
            return summary
    if run is not None:
        track(run.log_dataset, dataset.name, dataset_digest(config.dataset),
              config.dataset.source)
    on_cycle = _CycleWriter(summary, output_dir, run, track)
    result = _run_protocol(dataset, config, on_cycle, run, track)
    summary.totals = job_totals(result)
    summary.run_id = run.run_id if run else None
    summary.write(output_dir)
    save_models(result, output_dir)
    if run is not None:
        finish_run(run, track, summary, result.fallback, output_dir)
    if track.failed:  # what the sweep's end lists and chelation-import brings back
        summary.untracked, summary.run_id = True, None
        summary.write(output_dir)
    log.info("%s", job_summary(summary.config_label, config.seed, result,
                               time.perf_counter() - started, output_dir,
                               summary.run_id if not track.failed else None, config.tracking.uri))
    return summary


def _new_summary(config: JobConfig, as_dict: Mapping[str, Any], output_dir: Path) -> JobSummary:
    """The job's settings written to its folder, and its identity (config and group hashes)."""
    write_config(output_dir, as_dict)
    full_hash, group_hash = identity(as_dict)
    return JobSummary(config_hash=full_hash, group_hash=group_hash,
                      config_label=config_label(config))


class _CycleWriter:
    """The per-cycle callback: each cycle's metrics and per-query scores into the job's folder
    as it completes, and its metrics into the run."""

    def __init__(self, summary: JobSummary, output_dir: Path, run: tracking.JobRun | None,
                 track: StoreGuard):
        self.summary, self.output_dir, self.run, self.track = summary, output_dir, run, track
        self.per_query_rows: list[tuple[int, str, float, int]] = []
        self.selection_rows: list[tuple[int, int, str, float]] = []

    def __call__(self, record: CycleRecord) -> None:
        self.per_query_rows.extend((record.cycle, q, s, record.test_fold.get(q, -1))
                                   for q, s in sorted(record.per_query.items()))
        self.selection_rows.extend((record.cycle, fold, q, s)
                                   for fold, scores in sorted(record.selection.items())
                                   for q, s in sorted(scores.items()))
        self.summary.cycles.append({"cycle": record.cycle, "fallback": record.fallback,
                                    **finite(record.metrics())})
        self.summary.write(self.output_dir)
        write_per_query_table(self.output_dir / PER_QUERY_FILE, self.per_query_rows)
        write_selection_table(self.output_dir / SELECTION_FILE, self.selection_rows)
        if self.run is not None:
            self.track(self.run.log_metrics, record.metrics(), record.cycle)


def _run_protocol(dataset: RetrievalDataset, config: JobConfig, on_cycle: _CycleWriter,
                  run: tracking.JobRun | None, track: StoreGuard) -> JobResult:
    """The protocol's result; a job that raises (or is stopped) marks its run FAILED (KILLED)."""
    try:
        with signals_interrupt():
            # torch loads with the protocol: only for a job that runs, and after the signal
            # handlers, so a job stopped while it loads is marked KILLED like one stopped later
            protocol = import_paused("chelation.protocol")
            return protocol.run_job(dataset, config, on_cycle=on_cycle,
                                    show_progress=config.show_progress)
    except BaseException as err:
        if run is not None:
            track(run.finish, "KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED")
        raise


def check_job(config: JobConfig, dataset: RetrievalDataset) -> bool:
    """What can fail a job for the user's settings is checked before its run exists: the
    protocol against the data, the engine (EngineUnavailable naming its key) and the student
    model (ModelUnavailable naming `student.model` and where it was looked for). A named
    teacher that cannot be found is said here, once; the job then falls back, as it does for a
    teacher that fails to load. Returns whether the models the job needs can be had (what
    resume asks of a finished run that fell back)."""
    if config.protocol == Protocol.OFFICIAL and not dataset.train_query_ids:
        raise SettingsError("protocol=official needs a dataset with its own train queries "
                            f"(dataset {dataset.name!r} has none: set dataset.train_split, "
                            "e.g. train for SciFact, or protocol=split)")
    check_engine(config.engine)
    locate_student(config.student.model)
    if not config.needs_teacher:
        return True
    try:
        locate_model(config.teacher.model)
    except ModelUnavailable as err:
        log.warning("teacher.model=%r: %s; the job falls back without the teacher",
                    config.teacher.model, " ".join(str(err).split()))
        return False
    return True


def locate_student(model: str) -> str:
    """Where the student model is; ModelUnavailable naming `student.model` and where it was
    looked for (what a job, or a sweep before its parent run, says when it cannot be found)."""
    try:
        return locate_model(model)
    except ModelUnavailable as err:
        raise ModelUnavailable(f"student.model={model!r}: {err}") from None


def job_summary(label: str, seed: int, result: JobResult, seconds: float, output_dir: Path,
                run_id: str | None, uri: str) -> str:
    """What a user reads when a job ends: the final score against cycle 0, what the guard and
    the fallbacks did, and where everything is."""
    first, last = result.cycles[0].ndcg_at_10, result.cycles[-1].ndcg_at_10
    rollbacks = sum(c.rollback for c in result.cycles) + result.distill_rollbacks
    lines = [f"job {label} seed {seed} done: NDCG@10 {last:.4f} (cycle 0: {first:.4f}, "
             f"{last - first:+.4f}), {seconds:.2f} s in the job",
             f"  rollbacks by the guard: {rollbacks}; fallback: {result.fallback}",
             f"  results: {output_dir}"]
    if run_id:
        browse = uri if uri.startswith(("http://", "https://")) \
            else f"mlflow ui --backend-store-uri {uri}"
        lines.append(f"  MLflow run {run_id}; to browse: {browse}")
    return "\n".join(lines)
