"""A sweep's answer, for its MLflow parent run: the configuration each fold chose on its own
training-side queries (`chelation.analysis.nested`), and the procedure's pooled test NDCG@10 with
its interval, against the frozen student by one paired test, the choices' agreement and the
regret.

The interval is a Student-t interval over the test queries, each query's NDCG@10 averaged over
the seeds that tested it; it carries query sampling, not training noise across seeds. The
difference from the reference (the sweep's frozen student, else cycle 0 of the chosen runs) is
paired per query the same way.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import pandas as pd

from chelation.analysis.nested import choices_text, study_answer
from chelation.analysis.runs import load_per_query, load_runs, load_selection
from chelation.tags import PARENT_TAG, Tag

CHOSEN_TAG = "sweep_chosen_config"


@dataclass
class SweepSummary:
    """What the parent run carries: metrics and tags (every name starts with ``sweep_``, so
    that MLflow's chart view, which orders charts by name, shows the jobs' metrics first), and
    one line for the console."""

    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def line(self) -> str:
        m = {k.removeprefix("sweep_chosen_"): v for k, v in self.metrics.items()}
        chosen = self.tags.get(CHOSEN_TAG, "")
        if self.tags.get("sweep_chosen_on", "").startswith("nothing to choose"):
            text = f"one configuration, nothing to choose: {chosen}"
        elif "test_ndcg_at_10" in m:
            text = (f"chosen inside each fold: {chosen} "
                    f"({self.tags.get('sweep_chosen_folds', '')})")
        else:
            text = f"chosen inside each fold: {chosen}"
        if "test_ndcg_at_10" in m:
            text += (f": test NDCG@10 {m['test_ndcg_at_10']:.4f} "
                     f"[{_num(m.get('test_ndcg_at_10_ci_low'))}, "
                     f"{_num(m.get('test_ndcg_at_10_ci_high'))}]")
        if "diff" in m:
            text += (f", {m['diff']:+.4f} [{_num(m.get('diff_ci_low'), True)}, "
                     f"{_num(m.get('diff_ci_high'), True)}] vs "
                     f"{self.tags['sweep_chosen_reference']} ({_p_is(m.get('diff_p'))})")
        if "regret" in m:
            text += f"; regret {m['regret']:+.4f}"
            if "regret_ci_low" in m:
                text += (f" [{_num(m.get('regret_ci_low'), True)}, "
                         f"{_num(m.get('regret_ci_high'), True)}]")
            best = self.tags.get("sweep_best_on_test", "")
            text += f" vs the best on test ({best})" if best else " vs the best on test"
            if m["regret"] <= 1e-12:
                text += ": the choice is the best on test"
            elif self.tags.get("sweep_chosen_tied") == "true":
                text += ": tied within noise (the interval holds 0)"
        return text


def _p_is(p: float | None) -> str:
    if p is None or not math.isfinite(p):
        return "p n/a"
    return "p < 0.0001" if p < 1e-4 else f"p = {p:.4f}"


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


def summarise_sweep(runs: pd.DataFrame, per_query: pd.DataFrame, selection: pd.DataFrame,
                    confidence: float = 0.95) -> SweepSummary:
    """The summary of a sweep's finished job runs (`runs`, as `load_runs` gives them) from their
    per-query test scores (`load_per_query`) and selection scores (`load_selection`). Never
    raises for a sweep that cannot name a choice: the tag says why."""
    out = SweepSummary()
    out.metrics["sweep_jobs"] = float(len(runs))
    if runs.empty:
        out.tags[CHOSEN_TAG] = "none: no job of this sweep finished"
        return out
    out.metrics["sweep_configurations"] = float(runs["group_hash"].nunique())
    # the summary reports the t-test alone: no signed-rank test, so no scipy.stats import
    result, answer = study_answer(runs, per_query, selection, confidence, scipy_tests=False)
    if result is None:
        out.tags[CHOSEN_TAG] = f"none: {answer['why']}"
        return out
    label, agreeing, cells = result.agreement()
    out.tags[CHOSEN_TAG] = label
    if result.nothing_to_choose:
        out.tags["sweep_chosen_on"] = "nothing to choose: the sweep has one configuration"
    else:
        out.tags.update({
            "sweep_chosen_on": "each fold's selection queries, the same for every candidate and "
                               "none of which trained it or guarded its updates, among "
                               f"{answer['n_candidates']} configurations (ties: the cheaper)",
            "sweep_chosen_folds": f"{agreeing} of {cells} (seed, fold) choices; "
                                  f"{choices_text(result)}",
            "sweep_chosen_per_fold": "; ".join(f"seed {c['seed']} fold {c['fold']}: "
                                               f"{c['config_label']}"
                                               for c in answer["choices"])})
        out.metrics["sweep_chosen_agreement"] = agreeing / cells
    out.tags["sweep_chosen_interval"] = (f"{confidence:.0%} t-interval over test queries, each "
                                         "averaged over seeds")
    if "ndcg_mean" in answer:
        out.metrics.update({"sweep_chosen_test_ndcg_at_10": answer["ndcg_mean"],
                            "sweep_chosen_test_ndcg_at_10_ci_low": answer["ci_low"],
                            "sweep_chosen_test_ndcg_at_10_ci_high": answer["ci_high"],
                            "sweep_chosen_test_queries": float(answer["n_queries"]),
                            "sweep_chosen_seeds": float(answer["n_seeds"])})
    if not result.nothing_to_choose and "regret" in answer:
        out.metrics.update({"sweep_chosen_regret": answer["regret"],
                            "sweep_chosen_regret_ci_low": answer["regret_ci_low"],
                            "sweep_chosen_regret_ci_high": answer["regret_ci_high"]})
        out.tags["sweep_best_on_test"] = str(answer["best_on_test_label"])
        out.tags["sweep_chosen_tied"] = str(answer["tied"]).lower()
    if not math.isnan(answer.get("seed_sd", math.nan)):
        out.metrics["sweep_chosen_seed_sd"] = answer["seed_sd"]
    if "diff" in answer:
        out.tags["sweep_chosen_reference"] = str(answer["reference"])
        out.metrics.update({"sweep_chosen_diff": answer["diff"],
                            "sweep_chosen_diff_ci_low": answer["diff_ci_low"],
                            "sweep_chosen_diff_ci_high": answer["diff_ci_high"],
                            "sweep_chosen_diff_p": answer["p_ttest"]})
        out.metrics["sweep_chosen_diff_seed_sd"] = answer["diff_seed_sd"]
    elif result.nothing_to_choose:
        out.tags["sweep_chosen_reference"] = ("none: the sweep's one configuration is frozen, "
                                              "its own reference")
    else:
        out.tags["sweep_chosen_reference"] = "none: no reference in this sweep"
    out.metrics = {k: float(v) for k, v in out.metrics.items() if math.isfinite(float(v))}
    return out


def sweep_filters(parent_run_id: str, config_hashes: Iterable[str] = (),
                  most: int = 50) -> tuple[str, ...]:
    """What to search a store for to summarise one sweep, not the whole experiment (a study's
    store holds hundreds of runs): its children, and the configurations its jobs skipped as
    done; past `most` of those, one search of everything costs less than one each."""
    hashes = sorted(set(config_hashes))
    if len(hashes) > most:
        return ("",)
    return (f"tags.`{PARENT_TAG}` = '{parent_run_id}'",
            *(f"tags.{Tag.CONFIG_HASH} = '{h}'" for h in hashes))


def sweep_summary(tracking_uri: str, experiment: str, parent_run_id: str,
                  config_hashes: Iterable[str] = (), confidence: float = 0.95) -> SweepSummary:
    """Load the sweep's runs, per-query test scores and selection scores from MLflow and
    summarise them (see `summarise_sweep`)."""
    runs = sweep_job_runs(load_runs(tracking_uri, experiment,
                                    sweep_filters(parent_run_id, config_hashes)),
                          parent_run_id, config_hashes)
    if runs.empty:
        return summarise_sweep(runs, pd.DataFrame(), pd.DataFrame(), confidence)
    return summarise_sweep(runs, load_per_query(tracking_uri, runs),
                           load_selection(tracking_uri, runs), confidence)
