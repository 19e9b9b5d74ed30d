"""A tracked job: one JobConfig in, a JobSummary out. It loads the data, runs the protocol, logs
every cycle to MLflow as it completes and writes the same results next to the job, so nothing is
lost if the tracking store is unreachable."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import time
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from chelation import resume, tracking
from chelation.data import RetrievalDataset, load_beir, load_mteb, make_synthetic_variant
from chelation.engine import check_engine
from chelation.identity import as_mapping, config_label, flatten, identity
from chelation.kinds import DatasetKind, Fallback, Protocol
from chelation.models import INSTALL_COMMAND, ModelUnavailable, locate_model
from chelation.settings import DatasetSpec, JobConfig, SettingsError
from chelation.signals import signals_interrupt
from chelation.tracking import PER_QUERY_FILE, SELECTION_FILE, Tag

if TYPE_CHECKING:  # torch loads with the protocol, when a job runs (not when it is skipped)
    from chelation.protocol import CycleRecord, JobResult

log = logging.getLogger(__name__)

CONFIG_FILE, RESULTS_FILE, ADAPTERS_FOLDER = "config.yaml", "results.json", "adapters"
# per fold, the teacher-to-student projection behind teacher (or blended) documents: what an
# export needs to encode documents as the run's index held them
PROJECTIONS_FOLDER = "projections"


@dataclass
class JobSummary:
    """What a job leaves behind (also `results.json` in its folder). A job skipped because its
    configuration already has a finished run (or a live sibling) carries that run's id."""

    config_hash: str
    group_hash: str
    config_label: str
    cycles: list[dict[str, Any]] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    run_id: str | None = None
    skipped: bool = False
    untracked: bool = False  # the store stopped answering: results only in the job's folder
    rerun_of: dict[str, str] | None = None  # the run that fell back which this one replaces

    @property
    def final_ndcg_at_10(self) -> float | None:
        """Test NDCG@10 after the last cycle."""
        return self._final("final_ndcg_at_10", "ndcg_at_10")

    @property
    def final_val_ndcg_at_10(self) -> float | None:
        """Validation NDCG@10 after the last cycle: what a search may optimise (never test)."""
        return self._final("val_ndcg_at_10", "val_ndcg_at_10")

    def _final(self, figure: str, metric: str) -> float | None:
        value = self.figures[figure] if figure in self.figures else \
            (self.cycles[-1].get(metric) if self.cycles else None)
        return float(value) if value is not None and math.isfinite(value) else None

    def to_json(self) -> dict[str, Any]:
        head = {"config_hash": self.config_hash, "group_hash": self.group_hash,
                "config_label": self.config_label, "cycles": self.cycles}
        return {**head, **self.figures, "run_id": self.run_id,
                **({"skipped": True} if self.skipped else {}),
                **({"untracked": True} if self.untracked else {}),
                **({"rerun_of": self.rerun_of} if self.rerun_of else {})}


@functools.lru_cache(maxsize=8)
def _load(kind: str, name: str, path: str | None, split: str, task: str | None, seed: int,
          train_split: str | None, strict: bool = False) -> RetrievalDataset:
    if kind == DatasetKind.SYNTHETIC:
        return make_synthetic_variant(name, seed)
    if kind == DatasetKind.BEIR:
        if task and not Path(path).expanduser().is_dir():
            log.info("no BEIR folder at %s: loading the MTEB task %s", path, task)
            return load_mteb(task, split, train_split=train_split)
        return load_beir(Path(path).expanduser(), split, name=name, train_split=train_split,
                         strict=strict)
    return load_mteb(task or name, split, train_split=train_split)


def load_dataset(spec: DatasetSpec) -> RetrievalDataset:
    """The collection a spec names (once per process and spec)."""
    spec.validate()
    return _load(**asdict(spec))


@functools.lru_cache(maxsize=8)
def _digest(**spec: Any) -> str:
    dataset = _load(**spec)
    blob = json.dumps([list(dataset.corpus), dataset.queries, dataset.qrels,
                       list(dataset.train_query_ids)], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def dataset_digest(spec: DatasetSpec) -> str:
    """A short digest of what a spec loads: document ids, queries and judgments."""
    return _digest(**asdict(spec))


def run_tracked_job(config: JobConfig, output_dir: str | Path,
                    parent_run_id: str | None = None) -> JobSummary:
    """Run one job with tracking; returns its summary (also written to output_dir/results.json).
    With resume on, a configuration that already has a finished run is skipped."""
    started = time.perf_counter()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    as_dict = as_mapping(config)
    (output_dir / CONFIG_FILE).write_text(yaml.safe_dump(as_dict, sort_keys=False))
    full_hash, group_hash = identity(as_dict)
    summary = JobSummary(full_hash, group_hash, config_label(config))

    # the data and the models are checked before any run exists: a rejected file or a model
    # that cannot be found leaves nothing behind
    dataset = load_dataset(config.dataset)
    check_job(config, dataset)
    track = _StoreGuard(config.tracking.uri, output_dir)
    run: tracking.JobRun | None = None
    if config.tracking.enabled:
        try:
            with tracking.errors_reported_by_caller() if parent_run_id else nullcontext():
                run = _open_run(config, as_dict, summary, parent_run_id)
        except tracking.store_errors() as err:
            if parent_run_id is None:  # a single job: the store is the user's to fix
                raise
            # mid-sweep the store was there when the sweep began: the job goes on without it
            track.fail("open a run", err)
        if run is None and not track.failed:
            return summary
        if run is not None:
            track(run.log_dataset, dataset.name, dataset_digest(config.dataset),
                  config.dataset.source)

    per_query_rows: list[tuple[int, str, float, int]] = []
    selection_rows: list[tuple[int, int, str, float]] = []

    def on_cycle(record: CycleRecord) -> None:
        per_query_rows.extend((record.cycle, q, s, record.test_fold.get(q, -1))
                              for q, s in sorted(record.per_query.items()))
        selection_rows.extend((record.cycle, fold, q, s)
                              for fold, scores in sorted(record.selection.items())
                              for q, s in sorted(scores.items()))
        summary.cycles.append({"cycle": record.cycle, "fallback": record.fallback,
                               **_finite(record.metrics())})
        _write_json(output_dir / RESULTS_FILE, summary.to_json())
        tracking.write_per_query_table(output_dir / PER_QUERY_FILE, per_query_rows)
        tracking.write_selection_table(output_dir / SELECTION_FILE, selection_rows)
        if run is not None:
            track(run.log_metrics, record.metrics(), record.cycle)

    try:
        with signals_interrupt():
            # torch loads with the protocol: only for a job that runs, and after the signal
            # handlers, so a job stopped while it loads is marked KILLED like one stopped later
            from chelation.protocol import run_job

            result = run_job(dataset, config, on_cycle=on_cycle,
                             show_progress=config.show_progress)
    except BaseException as err:
        if run is not None:
            track(run.finish, "KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED")
        raise
    summary.figures = _job_figures(result)
    summary.run_id = run.run_id if run else None
    _save_outputs(summary, result, output_dir)
    if run is not None:
        track(run.log_metrics, _job_figures(result, numeric_only=True), 0)
        track(run.set_tags, {Tag.FALLBACK: result.fallback})
        if summary.rerun_of and not Fallback.degraded(result.fallback):
            track(run.supersede, summary.rerun_of["run_id"])
        for name in (CONFIG_FILE, PER_QUERY_FILE, SELECTION_FILE, RESULTS_FILE):
            track(run.log_artifact, output_dir / name)
        track(run.log_artifact, output_dir / ADAPTERS_FOLDER)
        if (output_dir / PROJECTIONS_FOLDER).is_dir():
            track(run.log_artifact, output_dir / PROJECTIONS_FOLDER)
        track(run.finish, "FINISHED")
    if track.failed:  # what the sweep's end lists and chelation-import brings back
        summary.untracked, summary.run_id = True, None
        _write_json(output_dir / RESULTS_FILE, summary.to_json())
    log.info("%s", job_summary(summary.config_label, config.seed, result,
                               time.perf_counter() - started, output_dir,
                               summary.run_id if not track.failed else None, config.tracking.uri))
    return summary


def check_job(config: JobConfig, dataset: RetrievalDataset) -> None:
    """What can fail a job for the user's settings is checked before its run exists: the
    protocol against the data, the engine (EngineUnavailable naming its key) and the student
    model (ModelUnavailable naming `student.model` and where it was looked for). A named
    teacher that cannot be found is said here; the job then falls back, as it does for a
    teacher that fails to load."""
    if config.protocol == Protocol.OFFICIAL and not dataset.train_query_ids:
        raise SettingsError("protocol=official needs a dataset with its own train queries "
                            f"(dataset {dataset.name!r} has none: set dataset.train_split, "
                            "e.g. train for SciFact, or protocol=split)")
    check_engine(config.engine)
    try:
        locate_model(config.student.model)
    except ModelUnavailable as err:
        raise ModelUnavailable(f"student.model={config.student.model!r}: {err}") from None
    if config.needs_teacher:
        try:
            locate_model(config.teacher.model)
        except ModelUnavailable as err:
            log.warning("teacher.model=%r: %s; the job falls back without the teacher",
                        config.teacher.model, " ".join(str(err).split()))


def _open_run(config: JobConfig, as_dict: Mapping[str, Any], summary: JobSummary,
              parent_run_id: str | None) -> tracking.JobRun | None:
    """The job's MLflow run, or None (the summary then marked skipped) when the configuration
    already has a finished run or a live sibling that started first."""
    target = config.tracking
    experiment_id = tracking.prepare_store(target.uri, target.experiment)  # fails naming it
    store = tracking.sqlite_path(target.uri)
    if store is not None and not store.exists():  # deleted since it was prepared
        raise tracking.TrackingUnavailable(f"tracking.uri={target.uri!r}: {store} is gone")
    client = tracking.client(target.uri)
    if parent_run_id is None:  # a sweep's callback retires them once for all its jobs
        tracking.retire_stale_runs(client, experiment_id)
    name = f"{summary.config_label} seed {config.seed}"
    finished = tracking.finished_runs(client, experiment_id, summary.config_hash) \
        if target.resume else []
    decision = resume.decide(finished, lambda: _models_ready(config))
    done = decision.done
    if decision.rerun_of is not None:
        fallback = decision.rerun_of.data.tags.get(Tag.FALLBACK)
        summary.rerun_of = {"run_id": decision.rerun_of.info.run_id, "fallback": fallback}
        log.info("running %s again: finished run %s fell back (%s) and its teacher %s can be "
                 "loaded now; the new run replaces it", name, decision.rerun_of.info.run_id,
                 fallback, config.teacher.model)
    if done is not None:
        if resume.fell_back(done):
            log.warning("skipping %s: finished run %s fell back (%s) and its teacher %s is "
                        "still missing; install it (`%s`) and run again to train with it",
                        name, done.info.run_id, done.data.tags.get(Tag.FALLBACK),
                        config.teacher.model, INSTALL_COMMAND)
        else:
            log.info("skipping %s: finished run %s has config hash %s", name, done.info.run_id,
                     summary.config_hash)
        summary.skipped, summary.run_id = True, done.info.run_id
        summary.figures = {k: done.data.metrics[k] for k in ("final_ndcg_at_10", "val_ndcg_at_10")
                           if k in done.data.metrics}
        return None
    run = tracking.JobRun(target.uri, experiment_id, f"{summary.config_label}/seed{config.seed}",
                          flatten(as_dict), job_tags(config, summary), parent_run_id)
    if not tracking.claim(client, experiment_id, summary.config_hash, run.run_id, parent_run_id):
        run.stop_heartbeat()
        log.info("skipping %s: a live run of config %s started first", name,
                 summary.config_hash)
        summary.skipped = True
        return None
    return run


def _models_ready(config: JobConfig) -> bool:
    """Whether the models this configuration needs can be had now (a run that fell back for
    one of them is worth running again)."""
    if not config.needs_teacher:
        return True
    try:
        locate_model(config.teacher.model)
        return True
    except ModelUnavailable:
        return False


def _save_outputs(summary: JobSummary, result: JobResult, output_dir: Path) -> None:
    import torch

    _write_json(output_dir / RESULTS_FILE, summary.to_json())
    adapters = output_dir / ADAPTERS_FOLDER
    adapters.mkdir(exist_ok=True)
    for i, state in enumerate(result.adapter_states):
        torch.save(state, adapters / f"fold_{i}.pt")
    if any(p is not None for p in result.projections):
        projections = output_dir / PROJECTIONS_FOLDER
        projections.mkdir(exist_ok=True)
        for i, matrix in enumerate(result.projections):
            if matrix is not None:
                np.save(projections / f"fold_{i}.npy", matrix)


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


def _job_figures(result: JobResult, numeric_only: bool = False) -> dict[str, Any]:
    figures: dict[str, Any] = {
        "total_time_s": result.total_time_s, "encode_time_s": result.encode_time_s,
        "setup_time_s": result.setup_time_s, "distill_time_s": result.distill_time_s,
        "n_encoded": result.n_encoded, "n_cached": result.n_cached,
        "final_ndcg_at_10": result.cycles[-1].ndcg_at_10 if result.cycles else float("nan"),
        "distill_rollback": result.distill_rollbacks,
    }
    if result.query_cost is not None:
        figures["query_encode_ms"] = result.query_cost.encode_ms
        figures["query_search_ms"] = result.query_cost.search_ms
    if not numeric_only:
        figures["fallback"] = result.fallback
    return figures


def _finite(values: Mapping[str, float]) -> dict[str, float | None]:
    return {k: (v if math.isfinite(v) else None) for k, v in values.items()}


def _write_json(path: Path, payload: Mapping[str, Any]) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str))
    tmp.replace(path)


class _StoreGuard:
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
