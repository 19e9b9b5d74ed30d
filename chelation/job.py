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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from chelation import tracking
from chelation.data import RetrievalDataset, load_beir, load_mteb, make_synthetic_variant
from chelation.identity import as_mapping, config_label, flatten, identity
from chelation.kinds import DatasetKind
from chelation.protocol import CycleRecord, JobResult, run_job
from chelation.settings import DatasetSpec, JobConfig
from chelation.signals import signals_interrupt
from chelation.tracking import PER_QUERY_FILE, Tag

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
                **({"skipped": True} if self.skipped else {})}


@functools.lru_cache(maxsize=8)
def _load(kind: str, name: str, path: str | None, split: str, task: str | None, seed: int,
          train_split: str | None) -> RetrievalDataset:
    if kind == DatasetKind.SYNTHETIC:
        return make_synthetic_variant(name, seed)
    if kind == DatasetKind.BEIR:
        if task and not Path(path).expanduser().is_dir():
            log.info("no BEIR folder at %s: loading the MTEB task %s", path, task)
            return load_mteb(task, split, train_split=train_split)
        return load_beir(Path(path).expanduser(), split, name=name, train_split=train_split)
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

    # the data are read and checked before any run exists: a rejected file leaves nothing behind
    dataset = load_dataset(config.dataset)
    track = _StoreGuard(config.tracking.uri, output_dir)
    run: tracking.JobRun | None = None
    if config.tracking.enabled:
        run = _open_run(config, as_dict, summary, parent_run_id)
        if run is None:
            return summary
        track(run.log_dataset, dataset.name, dataset_digest(config.dataset),
              config.dataset.source)

    per_query_rows: list[tuple[int, str, float]] = []

    def on_cycle(record: CycleRecord) -> None:
        per_query_rows.extend((record.cycle, q, s) for q, s in sorted(record.per_query.items()))
        summary.cycles.append({"cycle": record.cycle, "fallback": record.fallback,
                               **_finite(record.metrics())})
        _write_json(output_dir / RESULTS_FILE, summary.to_json())
        tracking.write_per_query_table(output_dir / PER_QUERY_FILE, per_query_rows)
        if run is not None:
            track(run.log_metrics, record.metrics(), record.cycle)

    try:
        with signals_interrupt():
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
        for name in (CONFIG_FILE, PER_QUERY_FILE, RESULTS_FILE):
            track(run.log_artifact, output_dir / name)
        track(run.log_artifact, output_dir / ADAPTERS_FOLDER)
        if (output_dir / PROJECTIONS_FOLDER).is_dir():
            track(run.log_artifact, output_dir / PROJECTIONS_FOLDER)
        track(run.finish, "FINISHED")
    log.info("%s", job_summary(summary.config_label, config.seed, result,
                               time.perf_counter() - started, output_dir,
                               summary.run_id if not track.failed else None, config.tracking.uri))
    return summary


def _open_run(config: JobConfig, as_dict: Mapping[str, Any], summary: JobSummary,
              parent_run_id: str | None) -> tracking.JobRun | None:
    """The job's MLflow run, or None (the summary then marked skipped) when the configuration
    already has a finished run or a live sibling that started first."""
    target = config.tracking
    experiment_id = tracking.prepare_store(target.uri, target.experiment)  # fails naming it
    client = tracking.client(target.uri)
    if parent_run_id is None:  # a sweep's callback retires them once for all its jobs
        tracking.retire_stale_runs(client, experiment_id)
    name = f"{summary.config_label} seed {config.seed}"
    done = tracking.find_finished_run(client, experiment_id, summary.config_hash) \
        if target.resume else None
    if done is not None:
        log.info("skipping %s: finished run %s has config hash %s", name, done.info.run_id,
                 summary.config_hash)
        summary.skipped, summary.run_id = True, done.info.run_id
        summary.figures = {k: done.data.metrics[k] for k in ("final_ndcg_at_10", "val_ndcg_at_10")
                           if k in done.data.metrics}
        return None
    run = tracking.JobRun(target.uri, experiment_id, f"{summary.config_label}/seed{config.seed}",
                          flatten(as_dict), _tags(config, summary), parent_run_id)
    if not tracking.claim(client, experiment_id, summary.config_hash, run.run_id, parent_run_id):
        run.stop_heartbeat()
        log.info("skipping %s: a live run of config %s started first", name,
                 summary.config_hash)
        summary.skipped = True
        return None
    return run


def _save_outputs(summary: JobSummary, result: JobResult, output_dir: Path) -> None:
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


def _tags(config: JobConfig, summary: JobSummary) -> dict[str, str]:
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
        Tag.FALLBACK: "pending",
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

    def __call__(self, fn, *args) -> None:
        if self.failed:
            return
        try:
            fn(*args)
        except Exception as err:  # noqa: BLE001
            self.failed = True
            log.error("MLflow store %s stopped answering (%s: %s); the job goes on without it: "
                      "its results are in %s (results.json, per_query_ndcg.csv, config.yaml, "
                      "adapters/)", self.uri, getattr(fn, "__name__", fn), err, self.output_dir)
