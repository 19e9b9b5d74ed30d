"""A sweep's answer, for its MLflow parent run: the configuration chosen on validation among the
sweep's jobs, and that configuration's test NDCG@10 with its interval.

The interval is a Student-t interval over the test queries, each query's NDCG@10 averaged over
the seeds that tested it (what `compare_to_reference` reports, so it exists with one seed too);
it carries query sampling, not training noise across seeds. The difference from the reference
(the sweep's frozen arm, else cycle 0 of the chosen runs) is paired per query the same way.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import pandas as pd

from chelation.analysis.runs import load_per_query, load_runs
from chelation.analysis.stats import compare_to_reference, select_on_validation
from chelation.kinds import Mode

CHOSEN_TAG = "sweep_chosen_config"
_VALIDATION = "val_ndcg_at_10"


@dataclass
class SweepSummary:
    """What the parent run carries: metrics and tags (every name starts with ``sweep_``, so
    that MLflow's chart view, which orders charts by name, shows the jobs' metrics first), and
    one line for the console."""

    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def line(self) -> str:
        m = {k.removeprefix("sweep_chosen_"): v for k, v in self.metrics.items()}
        text = f"chosen on validation: {self.tags.get(CHOSEN_TAG, '')}"
        if "test_ndcg_at_10" in m:
            text += (f": test NDCG@10 {m['test_ndcg_at_10']:.4f} "
                     f"[{_num(m.get('test_ndcg_at_10_ci_low'))}, "
                     f"{_num(m.get('test_ndcg_at_10_ci_high'))}]")
        if "diff" in m:
            text += (f", {m['diff']:+.4f} [{_num(m.get('diff_ci_low'), True)}, "
                     f"{_num(m.get('diff_ci_high'), True)}] vs "
                     f"{self.tags['sweep_chosen_reference']}")
        return text


def _num(x: float | None, signed: bool = False) -> str:
    if x is None or not math.isfinite(x):
        return "n/a"
    return f"{x:+.4f}" if signed else f"{x:.4f}"


def sweep_job_runs(runs: pd.DataFrame, parent_run_id: str,
                   config_hashes: Iterable[str] = ()) -> pd.DataFrame:
    """The finished job runs a sweep stands for: its own children, and the finished runs of the
    configurations (`config_hashes`) its jobs skipped as already done, so that a resumed sweep
    is summarised over its whole grid."""
    if runs.empty:
        return runs
    hashes = set(config_hashes)
    mine = (runs["parent_run_id"] == parent_run_id) | runs["config_hash"].isin(hashes)
    return runs[mine].drop_duplicates("config_hash", keep="first")


def summarise_sweep(runs: pd.DataFrame, per_query: pd.DataFrame,
                    confidence: float = 0.95) -> SweepSummary:
    """The summary of a sweep's finished job runs (`runs`, as `load_runs` gives them) from their
    per-query table (`load_per_query`; the chosen configuration's and the frozen arm's rows are
    all it reads). Never raises for a sweep that cannot name a choice: the tag says why."""
    out = SweepSummary()
    out.metrics["sweep_jobs"] = float(len(runs))
    if runs.empty:
        out.tags[CHOSEN_TAG] = "none: no job of this sweep finished"
        return out
    out.metrics["sweep_configurations"] = float(runs["group_hash"].nunique())
    choice = select_on_validation(runs, metric=_VALIDATION)
    if choice is None:
        out.tags[CHOSEN_TAG] = (f"none: no job logged {_VALIDATION} "
                                "(validation_fraction=0 leaves no validation queries)")
        return out
    out.tags.update({
        CHOSEN_TAG: str(choice["config_label"]),
        "sweep_chosen_group_hash": choice["group_hash"],
        "sweep_chosen_on": f"mean final {_VALIDATION} over {choice['n_seeds']} seed(s), "
                           f"{choice['n_candidates']} candidate configurations",
        "sweep_chosen_interval": f"{confidence:.0%} t-interval over test queries, each "
                                 "averaged over seeds"})
    out.metrics.update({"sweep_chosen_val_ndcg_at_10": choice["val_mean"],
                        "sweep_chosen_seeds": float(choice["n_seeds"])})
    table = compare_to_reference(per_query, confidence=confidence) if not per_query.empty \
        else pd.DataFrame()
    rows = table[table["group_hash"] == choice["group_hash"]] if not table.empty else table
    if rows.empty:
        out.tags["sweep_chosen_interval"] = "none: the chosen runs have no per-query results"
        return out
    row = rows.iloc[0]
    out.metrics.update({"sweep_chosen_test_ndcg_at_10": row["ndcg_mean"],
                        "sweep_chosen_test_ndcg_at_10_ci_low": row["ci_low"],
                        "sweep_chosen_test_ndcg_at_10_ci_high": row["ci_high"],
                        "sweep_chosen_test_queries": float(row["n_queries"])})
    if row["reference"] == "(reference)":
        out.tags["sweep_chosen_reference"] = "itself: the frozen arm was chosen (no change)"
    else:
        out.tags["sweep_chosen_reference"] = str(row["reference"])
        out.metrics.update({"sweep_chosen_diff": row["diff_vs_frozen"],
                            "sweep_chosen_diff_ci_low": row["diff_ci_low"],
                            "sweep_chosen_diff_ci_high": row["diff_ci_high"],
                            "sweep_chosen_diff_p": row["p_ttest"]})
    out.metrics = {k: float(v) for k, v in out.metrics.items() if math.isfinite(float(v))}
    return out


def sweep_summary(tracking_uri: str, experiment: str, parent_run_id: str,
                  config_hashes: Iterable[str] = (), confidence: float = 0.95) -> SweepSummary:
    """Load the sweep's runs from MLflow and summarise them (see `summarise_sweep`); only the
    chosen configuration's and the frozen arm's per-query tables are downloaded."""
    runs = sweep_job_runs(load_runs(tracking_uri, experiment), parent_run_id, config_hashes)
    if runs.empty:
        return summarise_sweep(runs, pd.DataFrame(), confidence)
    choice = select_on_validation(runs, metric=_VALIDATION)
    needed = runs["mode"] == Mode.FROZEN
    if choice is not None:
        needed |= runs["group_hash"] == choice["group_hash"]
    per_query = load_per_query(tracking_uri, runs[needed]) if needed.any() else pd.DataFrame()
    return summarise_sweep(runs, per_query, confidence)
