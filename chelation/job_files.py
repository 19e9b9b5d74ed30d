"""What a job leaves in its folder, and the one reader and writer of it: `config.yaml` (the
resolved settings), `results.json` (a JobSummary: every cycle's metrics and the job's totals),
the per-query tables the analysis pairs configurations on, the trained adapters and, for
teacher (or blended) documents, the projections an export needs."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

if TYPE_CHECKING:  # torch loads with the protocol, when a job runs
    from chelation.protocol import JobResult

CONFIG_FILE, RESULTS_FILE, ADAPTERS_FOLDER = "config.yaml", "results.json", "adapters"
# per fold, the teacher-to-student projection behind teacher (or blended) documents: what an
# export needs to encode documents as the run's index held them
PROJECTIONS_FOLDER = "projections"
# (cycle, query_id, ndcg_at_10, fold) per job: what the analysis pairs configurations on
PER_QUERY_FILE = "per_query_ndcg.csv"
# per fold, the per-query scores a fold may choose a configuration on (never its test queries)
SELECTION_FILE = "selection_ndcg.csv"

# results.json keys around the job's totals (written first, and after them)
_HEAD_KEYS = ("config_hash", "group_hash", "config_label", "cycles")
_TAIL_KEYS = ("run_id", "skipped", "untracked", "rerun_of")


@dataclass
class JobSummary:
    """What a job leaves behind (also `results.json` in its folder). A job skipped because its
    configuration already has a finished run (or a live sibling) carries that run's id."""

    config_hash: str
    group_hash: str
    config_label: str
    cycles: list[dict[str, Any]] = field(default_factory=list)
    # the job's numbers over all cycles (times, counts, final NDCG@10) and its fallback
    totals: dict[str, Any] = field(default_factory=dict)
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

    def _final(self, total: str, metric: str) -> float | None:
        value = self.totals[total] if total in self.totals else \
            (self.cycles[-1].get(metric) if self.cycles else None)
        return float(value) if value is not None and math.isfinite(value) else None

    def to_json(self) -> dict[str, Any]:
        head = {"config_hash": self.config_hash, "group_hash": self.group_hash,
                "config_label": self.config_label, "cycles": self.cycles}
        return {**head, **self.totals, "run_id": self.run_id,
                **({"skipped": True} if self.skipped else {}),
                **({"untracked": True} if self.untracked else {}),
                **({"rerun_of": self.rerun_of} if self.rerun_of else {})}

    def write(self, folder: str | Path) -> Path:
        """Write `results.json` into the job's folder (whole or not at all)."""
        path = Path(folder) / RESULTS_FILE
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2, default=str))
        tmp.replace(path)
        return path

    @classmethod
    def read(cls, folder: str | Path) -> JobSummary:
        """The summary a job's folder holds; ValueError naming the file when its `results.json`
        is not a job's results (OSError when there is none)."""
        path = Path(folder) / RESULTS_FILE
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or not all(k in data for k in _HEAD_KEYS[:3]):
            raise ValueError(f"{path}: not a job's results (no config hash, group hash or label)")
        return cls(config_hash=data["config_hash"], group_hash=data["group_hash"],
                   config_label=data["config_label"], cycles=data.get("cycles") or [],
                   totals={k: v for k, v in data.items() if k not in _HEAD_KEYS + _TAIL_KEYS},
                   run_id=data.get("run_id"), skipped=bool(data.get("skipped")),
                   untracked=bool(data.get("untracked")), rerun_of=data.get("rerun_of"))


def job_totals(result: JobResult, numeric_only: bool = False) -> dict[str, Any]:
    """A finished job's numbers over all its cycles (and its fallback, unless numeric_only)."""
    totals: dict[str, Any] = {
        "total_time_s": result.total_time_s, "encode_time_s": result.encode_time_s,
        "setup_time_s": result.setup_time_s, "distill_time_s": result.distill_time_s,
        "n_encoded": result.n_encoded, "n_cached": result.n_cached,
        "final_ndcg_at_10": result.cycles[-1].ndcg_at_10 if result.cycles else float("nan"),
        "distill_rollback": result.distill_rollbacks,
    }
    if result.query_cost is not None:
        totals["query_encode_ms"] = result.query_cost.encode_ms
        totals["query_search_ms"] = result.query_cost.search_ms
    if not numeric_only:
        totals["fallback"] = result.fallback
    return totals


def numeric_totals(totals: Mapping[str, Any]) -> dict[str, Any]:
    """The totals a tracker logs as metrics (the fallback is a tag)."""
    return {k: v for k, v in totals.items() if k != "fallback"}


def finite(values: Mapping[str, float]) -> dict[str, float | None]:
    """NaN (not applicable) as None, which JSON can hold."""
    return {k: (v if math.isfinite(v) else None) for k, v in values.items()}


def write_config(folder: Path, as_dict: Mapping[str, Any]) -> Path:
    """The job's resolved settings, as `config.yaml` (what an import reads back)."""
    path = folder / CONFIG_FILE
    path.write_text(yaml.safe_dump(as_dict, sort_keys=False))
    return path


def write_per_query_table(path: str | Path, rows: list[tuple[int, str, float]]
                          | list[tuple[int, str, float, int]]) -> Path:
    """CSV of (cycle, query_id, ndcg_at_10[, fold]): what the analysis pairs configurations on,
    each test query with the fold that tested it."""
    path = Path(path)
    head = ["cycle", "query_id", "ndcg_at_10"]
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(head + ["fold"] if rows and len(rows[0]) > 3 else head)
        writer.writerows(rows)
    return path


def write_selection_table(path: str | Path, rows: list[tuple[int, int, str, float]]) -> Path:
    """CSV of (cycle, fold, query_id, ndcg_at_10): per fold, the training-side queries that fold
    may choose a configuration on (the analysis's nested selection reads only these)."""
    path = Path(path)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["cycle", "fold", "query_id", "ndcg_at_10"])
        writer.writerows(rows)
    return path




def save_models(result: JobResult, folder: Path) -> None:
    """Each fold's adapter (and projection, for teacher or blended documents)."""
    import torch

    adapters = folder / ADAPTERS_FOLDER
    adapters.mkdir(exist_ok=True)
    for i, state in enumerate(result.adapter_states):
        torch.save(state, adapters / f"fold_{i}.pt")
    if any(p is not None for p in result.projections):
        projections = folder / PROJECTIONS_FOLDER
        projections.mkdir(exist_ok=True)
        for i, matrix in enumerate(result.projections):
            if matrix is not None:
                np.save(projections / f"fold_{i}.npy", matrix)
