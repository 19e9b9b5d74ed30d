"""A tracked job: load the data, run the protocol, log every cycle to MLflow as it completes and
write the same results next to the job, so nothing is lost if the tracking store is unreachable."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import yaml

from chelation import tracking
from chelation.data import RetrievalDataset, load_beir, load_mteb, make_synthetic
from chelation.protocol import CycleRecord, JobResult, run_job
from chelation.settings import DEFAULT_PRECISION, IndexSettings, Mode, RunSettings
from chelation.signals import signals_interrupt

log = logging.getLogger(__name__)

# Keys that do not change what a job computes: excluded from its identity.
_NOT_IDENTITY = ("tracking.", "cache_dir", "engine.", "show_progress", "student.batch_size",
                 "teacher.batch_size", "query_cost_sample")
@dataclass
class DatasetSpec:
    """Which collection a job runs on: generated (`synthetic`), a BEIR folder, or an MTEB task."""

    KINDS: ClassVar[tuple[str, ...]] = ("synthetic", "beir", "mteb")
    name: str = "synthetic"
    kind: str = "synthetic"
    path: str | None = None
    split: str = "test"
    task: str | None = None  # for `beir`: the MTEB task to load when `path` does not exist
    seed: int = 0
    train_split: str | None = None  # the collection's own training queries (protocol=official)


@dataclass
class TrackingTarget:
    """Where a job's runs go; `resume` skips configurations that already have a finished run."""

    uri: str = "sqlite:///mlflow.db"
    experiment: str = "chelation"
    resume: bool = True
    enabled: bool = True


@functools.lru_cache(maxsize=8)
def load_dataset(kind: str, name: str, path: str | None = None, split: str = "test",
                 task: str | None = None, seed: int = 0,
                 train_split: str | None = None) -> RetrievalDataset:
    if kind == "synthetic":
        return make_synthetic(seed)
    if kind == "beir":
        if not path:
            raise ValueError(f"dataset.path must name a BEIR folder for dataset {name!r}")
        if task and not Path(path).expanduser().is_dir():
            log.info("no BEIR folder at %s: loading the MTEB task %s", path, task)
            return load_mteb(task, split, train_split=train_split)
        return load_beir(Path(path).expanduser(), split, name=name, train_split=train_split)
    if kind == "mteb":
        return load_mteb(task or name, split, train_split=train_split)
    raise ValueError(f"dataset.kind={kind!r} is not one of ['synthetic', 'beir', 'mteb']")


def identity(config: Mapping[str, Any]) -> tuple[str, str]:
    """(config_hash, group_hash): the job's identity, and the same without the seed."""
    mode = Mode(config["training"]["mode"])
    exclude = _NOT_IDENTITY + mode.ignored_keys
    index = IndexSettings(**config.get("index", {}))
    # the documents enter as the teacher's share (so `student` is a blend at 0) and, where the
    # teacher has a share, its fit; at 0 nothing enters, so earlier runs keep their identity
    exclude = exclude + ("index.documents", "index.teacher_weight")
    if index.document_weight > 0:
        # the teacher makes the documents even where the mode trains on no teacher targets
        exclude = tuple(k for k in exclude if k != "teacher.")
        config = {**config, "index_document_weight": index.document_weight}
    else:
        exclude = exclude + ("index.fit_queries",)
    if not mode.trains:
        # only the student, data and evaluation protocol decide a frozen run's figures
        exclude = exclude + ("cycles", "queries_per_cycle", "validation_fraction")
        if config.get("adapter", {}).get("init_scale", 0.0) > 0:
            # an untrained adapter that starts off the identity changes the frozen figures
            exclude = tuple(k for k in exclude if k != "adapter.")
    for part in ("student", "teacher"):
        if config.get(part, {}).get("precision", DEFAULT_PRECISION) == DEFAULT_PRECISION:
            # the default; keeps the identity of runs made before precision was a choice
            exclude = exclude + (f"{part}.precision",)
    if not config["training"].get("listwise_weight"):
        # off by default; keeps the identity of runs made before the term existed
        exclude = exclude + ("training.listwise_",)
    full = tracking.config_hash(config, exclude)
    group = tracking.config_hash(config, exclude + ("seed",))
    return full, group


@functools.lru_cache(maxsize=8)
def dataset_digest(**dataset_spec: Any) -> str:
    """A short digest of what a dataset spec loads: document ids, queries and judgments (once per
    process and spec, like the dataset itself)."""
    dataset = load_dataset(**dataset_spec)
    blob = json.dumps([list(dataset.corpus), dataset.queries, dataset.qrels,
                       list(dataset.train_query_ids)], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def config_label(settings: RunSettings) -> str:
    mode = Mode(settings.training.mode)
    student = settings.student.model.rstrip("/").split("/")[-1]
    parts = [mode.value]
    if not mode.trains:
        parts.append(student)
    for part in (settings.student, settings.teacher):
        if part.precision != DEFAULT_PRECISION:
            parts.append(f"{part.model.rstrip('/').split('/')[-1]}:{part.precision}")
    if settings.index.document_weight > 0:
        fit = "+queries" if settings.index.fit_queries else ""
        parts.append(f"docs:{settings.teacher.name}{fit}@{settings.index.document_weight:g}")
    if mode.teacher_targets:
        parts.append(settings.teacher.name)
    if mode.blends_targets:
        w = settings.weight
        parts.append(f"constant:{w.value:g}" if w.schedule == "constant"
                     else f"{w.schedule}:{w.start:g}->{w.end:g}")
    if mode.teacher_targets:
        parts.append(settings.teacher.projection)
    return "/".join(parts)


def run_tracked_job(
    dataset_spec: Mapping[str, Any],
    settings: RunSettings,
    config: Mapping[str, Any],
    target: TrackingTarget,
    output_dir: str | Path,
    parent_run_id: str | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Run one job with tracking; returns its summary (also written to output_dir/results.json).
    With resume on, a configuration that already has a finished run is skipped."""
    started = time.perf_counter()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    config_yaml = yaml.safe_dump(dict(config), sort_keys=False)
    (output_dir / "config.yaml").write_text(config_yaml)
    full_hash, group_hash = identity(config)
    label = config_label(settings)

    # the data are read and checked before any run exists: a rejected file leaves nothing behind
    dataset = load_dataset(**dataset_spec)
    track = _StoreGuard(target.uri, output_dir)
    run: tracking.JobRun | None = None
    if target.enabled:
        experiment_id = tracking.prepare_store(target.uri, target.experiment)  # fails naming it
        client = tracking.client(target.uri)
        if parent_run_id is None and (retired := tracking.retire_stale_runs(client,
                                                                            experiment_id)):
            log.info("marked %d runs left by killed processes as KILLED", retired)
        done = tracking.find_finished_run(client, experiment_id, full_hash) \
            if target.resume else None
        if done is not None:
            log.info("skipping %s seed %d: finished run %s has config hash %s", label,
                     settings.seed, done.info.run_id, full_hash)
            return {"skipped": True, "run_id": done.info.run_id, "config_hash": full_hash,
                    "ndcg_at_10": done.data.metrics.get("ndcg_at_10")}
        run = tracking.JobRun(
            target.uri, experiment_id, f"{label}/seed{settings.seed}",
            tracking.flatten(config),
            _tags(settings, dataset_spec, full_hash, group_hash, label),
            parent_run_id,
        )
        if not tracking.claim(client, experiment_id, full_hash, run.run_id, parent_run_id):
            run.stop_heartbeat()
            log.info("skipping %s seed %d: a live run of config %s started first", label,
                     settings.seed, full_hash)
            return {"skipped": True, "run_id": None, "config_hash": full_hash}
        track(run.log_dataset, dataset.name, dataset_digest(**dataset_spec),
              str(dataset_spec.get("path") or dataset_spec.get("task") or dataset.name))

    per_query_rows: list[tuple[int, str, float]] = []
    summary: dict[str, Any] = {"config_hash": full_hash, "group_hash": group_hash,
                               "config_label": label, "cycles": []}

    def on_cycle(record: CycleRecord) -> None:
        per_query_rows.extend((record.cycle, q, s) for q, s in sorted(record.per_query.items()))
        summary["cycles"].append({"cycle": record.cycle, "fallback": record.fallback,
                                  **_finite(record.metrics())})
        _write_json(output_dir / "results.json", summary)
        tracking.write_per_query_table(output_dir / "per_query_ndcg.csv", per_query_rows)
        if run is not None:
            track(run.log_metrics, record.metrics(), record.cycle)

    try:
        with signals_interrupt():
            result = run_job(dataset, settings, on_cycle=on_cycle, show_progress=show_progress)
    except BaseException as err:
        if run is not None:
            track(run.finish, "KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED")
        raise
    summary.update(_job_figures(result))
    summary["run_id"] = run.run_id if run else None
    _write_json(output_dir / "results.json", summary)
    adapters = output_dir / "adapters"
    adapters.mkdir(exist_ok=True)
    for i, state in enumerate(result.adapter_states):
        torch.save(state, adapters / f"fold_{i}.pt")
    if run is not None:
        track(run.log_metrics, _job_figures(result, numeric_only=True), 0)
        track(run.set_tags, {"fallback": result.fallback})
        for name in ("config.yaml", "per_query_ndcg.csv", "results.json"):
            track(run.log_artifact, output_dir / name)
        track(run.log_artifact, adapters)
        track(run.finish, "FINISHED")
    log.info("%s", job_summary(label, settings.seed, result, time.perf_counter() - started,
                                output_dir, run.run_id if run and not track.failed else None,
                                target.uri))
    return summary


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


def _tags(settings: RunSettings, spec: Mapping[str, Any], full_hash: str, group_hash: str,
          label: str) -> dict[str, str]:
    return {
        "mode": settings.training.mode,
        "teacher": settings.teacher.name,
        "student": settings.student.model,
        "dataset": str(spec.get("name")),
        "seed": str(settings.seed),
        "schedule": settings.weight.schedule,
        "projection": settings.teacher.projection,
        "protocol": settings.protocol,
        "index_documents": settings.index.documents,
        "index_teacher_weight": f"{settings.index.document_weight:g}",
        "config_hash": full_hash,
        "group_hash": group_hash,
        "config_label": label,
        "fallback": "pending",
        "git_commit": tracking.git_commit(Path(__file__).parent),
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
