"""Finished jobs' on-disk results brought into an MLflow store as runs like any other: what a job
leaves in its folder (`config.yaml`, `results.json` with every cycle's metrics,
`per_query_ndcg.csv`, `adapters/`) when its store was gone. Idempotent by config hash: a
configuration that already has a finished run in the experiment is not imported again."""

from __future__ import annotations

import logging
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml

from chelation import tracking
from chelation.identity import flatten, identity
from chelation.job_files import (
    ADAPTERS_FOLDER,
    CONFIG_FILE,
    PER_QUERY_FILE,
    RESULTS_FILE,
    JobSummary,
    numeric_totals,
)
from chelation.job_run import job_tags
from chelation.settings import JobConfig
from chelation.tags import Tag

log = logging.getLogger(__name__)

IMPORTED_TAG = "chelation.imported_from"


class NotAFinishedJob(ValueError):
    """A folder that holds no finished job's results; the message names it and what is missing."""


@dataclass
class Imported:
    """One folder's outcome: the run it is in, and whether this import created it."""

    folder: Path
    run_id: str
    config_hash: str
    created: bool


def job_folders(paths: Iterable[str | Path]) -> list[Path]:
    """The job folders named: a folder with a `results.json`, or each such folder one level
    below (a sweep's folder)."""
    out: list[Path] = []
    for path in map(Path, paths):
        if (path / RESULTS_FILE).exists() or not path.is_dir():
            out.append(path)
        else:
            found = sorted(p.parent for p in path.glob(f"*/{RESULTS_FILE}"))
            out.extend(found or [path])
    return out


def read_job(folder: Path) -> tuple[dict[str, Any], JobSummary]:
    """(config, summary) of a finished job; NotAFinishedJob naming what is missing."""
    for name in (CONFIG_FILE, RESULTS_FILE, PER_QUERY_FILE, ADAPTERS_FOLDER):
        if not (folder / name).exists():
            raise NotAFinishedJob(f"{folder}: no {name}, not a finished job's folder")
    config = yaml.safe_load((folder / CONFIG_FILE).read_text())
    try:
        results = JobSummary.read(folder)
    except ValueError as err:
        raise NotAFinishedJob(str(err)) from None
    if results.totals.get("final_ndcg_at_10") is None or not results.cycles:
        raise NotAFinishedJob(f"{folder}: {RESULTS_FILE} has no final figures (the job did not "
                              "finish)")
    if identity(config)[0] != results.config_hash:
        raise NotAFinishedJob(f"{folder}: {CONFIG_FILE} and {RESULTS_FILE} disagree on the "
                              "configuration (config hash)")
    return config, results


def import_job(folder: str | Path, uri: str | None = None,
               experiment: str | None = None) -> Imported:
    """Import one finished job's folder into the store `uri` (default: the one its config names),
    experiment `experiment` (likewise). A configuration with a finished run there is left as is."""
    folder = Path(folder)
    config, summary = read_job(folder)
    uri = uri or config["tracking"]["uri"]
    experiment = experiment or config["tracking"]["experiment"]
    experiment_id = tracking.prepare_store(uri, experiment)
    client = tracking.client(uri)
    config_hash = summary.config_hash
    done = tracking.finished_runs(client, experiment_id, config_hash)
    if done:
        return Imported(folder=folder, run_id=done[0].info.run_id, config_hash=config_hash,
                        created=False)
    job = _settings(JobConfig, config)
    tags = {**job_tags(job, summary), Tag.FALLBACK: str(summary.totals.get("fallback", "none")),
            Tag.GIT_COMMIT: "unknown (imported)", IMPORTED_TAG: str(folder.resolve())}
    run = tracking.JobRun(uri, experiment_id, f"{summary.config_label}/seed{job.seed}",
                          flatten(config), tags)
    try:
        for cycle in summary.cycles:
            run.log_metrics({k: v for k, v in cycle.items()
                             if k not in ("cycle", "fallback") and _number(v)}, cycle["cycle"])
        run.log_metrics({k: v for k, v in numeric_totals(summary.totals).items()
                         if _number(v)}, 0)
        for name in (CONFIG_FILE, PER_QUERY_FILE, RESULTS_FILE):
            run.log_artifact(folder / name)
        run.log_artifact(folder / ADAPTERS_FOLDER)
    except BaseException:
        run.finish("FAILED")
        raise
    run.finish("FINISHED")
    return Imported(folder=folder, run_id=run.run_id, config_hash=config_hash, created=True)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _settings(cls: type, data: Mapping[str, Any]) -> Any:
    """A settings dataclass from its nested mapping (keys it does not know are left out)."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in fields(cls):
        if f.name in data:
            value, kind = data[f.name], hints[f.name]
            kwargs[f.name] = _settings(kind, value) \
                if is_dataclass(kind) and isinstance(value, Mapping) else value
    return cls(**kwargs)
