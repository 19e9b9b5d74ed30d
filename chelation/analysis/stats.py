"""Paired statistics over the frames: pure functions of numbers and DataFrames."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import special

from chelation.kinds import MODES, Mode

log = logging.getLogger(__name__)

# Columns that identify a study arm's "place": a reference must share them with the arm.
_CONTEXT = ("student", "dataset", "protocol")
TABLE_COLUMNS = [
    "config_label", "mode", "teacher", "student", "dataset", "group_hash", "reference",
    "n_seeds", "n_queries", "n_paired", "ndcg_mean", "ci_low", "ci_high",
    "diff_vs_frozen", "diff_ci_low", "diff_ci_high", "p_ttest", "p_permutation", "p_wilcoxon",
    "seed_sd", "p_holm", "mde_80", "ratio_to_frozen",
]




# --------------------------------------------------------------------------------------------
# Pure statistics
# --------------------------------------------------------------------------------------------

def _finite_array(values: Iterable[float]) -> np.ndarray:
    arr = np.asarray(list(values) if not isinstance(values, np.ndarray | pd.Series) else values,
                     dtype=float).ravel()
    return arr[np.isfinite(arr)]


def mean_ci(values: Iterable[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): Student-t interval for the mean of `values` (non-finite ones
    ignored). NaN bounds with fewer than two values; a zero-width interval if all are equal."""
    arr = _finite_array(values)
    if arr.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(arr.mean())
    if arr.size < 2:
        return mean, math.nan, math.nan
    half = t_quantile(0.5 + confidence / 2, arr.size - 1) * float(
        arr.std(ddof=1)) / math.sqrt(arr.size)
    return mean, mean - half, mean + half


def t_quantile(q: float, df: float) -> float:
    """Student's t quantile: what `scipy.stats.t.ppf` computes, through the special function it
    calls (`scipy.special.stdtrit`), so that a sweep's summary never imports scipy.stats (about
    a second here)."""
    return float(special.stdtrit(df, q))


def t_test_p(t: float, df: float) -> float:
    """Two-sided p-value of a t statistic (as `scipy.stats.ttest_rel` reports it)."""
    return float(2.0 * special.stdtr(df, -abs(t)))


# resamples of the paired randomization test: its p-value is within about 0.002 of the exact
# one at p = 0.05 (binomial standard error), at a few milliseconds for a few hundred queries
PERMUTATION_RESAMPLES = 9999


def paired_comparison(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray,
                      confidence: float = 0.95, scipy_tests: bool = True) -> dict[str, float]:
    """Paired comparison of aligned arrays (a[i] and b[i] measure the same query).

    Returns n, mean_a, mean_b, mean_diff (a - b), sd_diff, ci_low/ci_high (t interval of the
    mean difference), p_ttest (paired t-test), and with `scipy_tests` (scipy.stats, about a
    second to import) p_permutation (paired randomization test of the mean difference: each
    query's two scores swapped at random, `scipy.stats.permutation_test`, seeded) and
    p_wilcoxon (signed-rank test, zero differences dropped); else those two are NaN. All
    two-sided. Pairs with a non-finite side are dropped. When every difference is zero the
    p-values are 1; with fewer than two pairs they are NaN.
    """
    x = np.asarray(a, dtype=float).ravel()
    y = np.asarray(b, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"paired arrays differ in length: {x.size} vs {y.size}")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    d = x - y
    n = int(d.size)
    out = {"n": n, "mean_a": math.nan, "mean_b": math.nan, "mean_diff": math.nan,
           "sd_diff": math.nan, "ci_low": math.nan, "ci_high": math.nan,
           "p_ttest": math.nan, "p_permutation": math.nan, "p_wilcoxon": math.nan}
    if n == 0:
        return out
    mean_diff, low, high = mean_ci(d, confidence)
    out.update(mean_a=float(x.mean()), mean_b=float(y.mean()), mean_diff=mean_diff,
               ci_low=low, ci_high=high)
    if n < 2:
        return out
    sd = float(d.std(ddof=1))
    out["sd_diff"] = sd
    scale = max(1.0, float(np.abs(d).max()))
    if sd <= 1e-12 * scale:
        # No spread: the t statistic is 0/0 (no difference) or infinite (a constant shift).
        out["p_ttest"] = 1.0 if abs(mean_diff) <= 1e-12 * scale else 0.0
    else:
        out["p_ttest"] = t_test_p(mean_diff / (sd / math.sqrt(n)), n - 1)
    if not scipy_tests:
        return out
    nonzero = d[np.abs(d) > 1e-12 * scale]
    if nonzero.size == 0:
        out["p_wilcoxon"] = out["p_permutation"] = 1.0
        return out
    from scipy import stats  # scipy.stats' alone

    out["p_wilcoxon"] = float(stats.wilcoxon(nonzero).pvalue)
    out["p_permutation"] = float(stats.permutation_test(
        (x, y), lambda u, v, axis: np.mean(u - v, axis=axis), permutation_type="samples",
        vectorized=True, n_resamples=PERMUTATION_RESAMPLES, alternative="two-sided",
        rng=np.random.default_rng(0)).pvalue)
    return out


def seed_spread(values: Sequence[float] | np.ndarray | pd.Series) -> float:
    """The standard deviation (ddof 1) of per-seed means: how much a figure moves with the seed.
    Seeds that score the same test queries do not sample queries again, so no test is made over
    them: the inference is the paired test over queries. NaN below two seeds."""
    arr = _finite_array(values)
    return float(arr.std(ddof=1)) if arr.size >= 2 else math.nan


def min_detectable_effect(diff_sd: float, n: int, alpha: float = 0.05,
                          power: float = 0.8) -> float:
    """Smallest mean difference a two-sided paired t-test on `n` pairs with difference standard
    deviation `diff_sd` detects with probability `power` at level `alpha`:
    (t[1-alpha/2, n-1] + t[power, n-1]) * sd / sqrt(n). Infinite below two pairs."""
    if n < 2 or not math.isfinite(diff_sd):
        return math.inf
    df = n - 1
    return float((t_quantile(1 - alpha / 2, df) + t_quantile(power, df))
                 * diff_sd / math.sqrt(n))


def holm_adjust(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values (family-wise error control); NaN entries stay NaN and
    are not counted in the family."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(np.isfinite(p))
    m = idx.size
    if m == 0:
        return out
    order = idx[np.argsort(p[idx], kind="stable")]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def _cells(df: pd.DataFrame, cycle: int | None, lenient: bool = False) -> pd.DataFrame:
    """One configuration's (seed, query_id) -> ndcg_at_10 at a cycle: each run's final cycle
    when `cycle` is None; runs without the requested cycle are dropped, or (lenient, for an
    untrained reference) read at their own final cycle. Duplicate runs of a seed are averaged."""
    key = "run_id" if "run_id" in df else "seed"
    at_last = df["cycle"] == df.groupby(key)["cycle"].transform("max")
    if cycle is None:
        picked = df[at_last]
    else:
        at_cycle = df["cycle"] == cycle
        wanted = at_cycle
        if lenient:
            has_cycle = at_cycle.groupby(df[key]).transform("any")
            wanted = at_cycle | (~has_cycle & at_last)
        picked = df[wanted]
    return picked.groupby(["seed", "query_id"], as_index=False)["ndcg_at_10"].mean()


def first_value(df: pd.DataFrame, column: str) -> Any:
    if column not in df or df[column].dropna().empty:
        return None
    return df[column].dropna().iloc[0]


def _reference_for(df: pd.DataFrame, group: pd.DataFrame, reference_group: str | None
                   ) -> tuple[str | None, pd.DataFrame | None]:
    """The reference group's hash and rows for one configuration: the given group, else the
    frozen group sharing its student/dataset/protocol (most seeds wins); None if there is none.
    A frozen model that would be its own reference (a teacher run as a frozen student) is
    compared with the study's frozen student instead, when the study has one."""
    if reference_group is not None:
        return reference_group, df[df["group_hash"] == reference_group]
    best = _frozen_group(df, group, _CONTEXT)
    own = first_value(group, "group_hash")
    if best == own and "student" in df and df["student"].notna().any():
        study = _frozen_group(df, df[df["student"] == df["student"].mode().iloc[0]], _CONTEXT)
        best = study if study is not None else best
    if best is None:
        return None, None
    return best, df[df["group_hash"] == best]


def _frozen_group(df: pd.DataFrame, group: pd.DataFrame, context: Sequence[str]) -> str | None:
    frozen = df[(df["mode"] == Mode.FROZEN) & student_documents_only(df)]
    for col in context:
        value = first_value(group, col)
        if col in frozen and value is not None:
            frozen = frozen[frozen[col] == value]
    if frozen.empty:
        return None
    seeds = frozen.groupby("group_hash")["seed"].nunique()
    return sorted(seeds.index, key=lambda g: (-seeds[g], g))[0]


def student_documents_only(df: pd.DataFrame) -> pd.Series:
    """Rows whose index held the student's own documents (the plain frozen student)."""
    if "index_weight" not in df:
        return pd.Series(True, index=df.index)
    return df["index_weight"].fillna(0.0) == 0.0


def _pair(cells: pd.DataFrame, ref: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Per-query means (columns a, b) over the seeds both arms ran, matched on (seed, query);
    and per-seed means (a, b) of the matched cells, or None when they share no seed."""
    common = set(cells["seed"]) & set(ref["seed"])
    if common:
        m = cells[cells["seed"].isin(common)].merge(
            ref[ref["seed"].isin(common)], on=["seed", "query_id"], suffixes=("_a", "_b"))
        m = m.rename(columns={"ndcg_at_10_a": "a", "ndcg_at_10_b": "b"})
        return m.groupby("query_id")[["a", "b"]].mean(), m.groupby("seed")[["a", "b"]].mean()
    qa = cells.groupby("query_id")["ndcg_at_10"].mean().rename("a")
    qb = ref.groupby("query_id")["ndcg_at_10"].mean().rename("b")
    return pd.concat([qa, qb], axis=1, join="inner"), None


def _comparison_row(df: pd.DataFrame, group_hash: str, group: pd.DataFrame,
                    reference_group: str | None, cycle: int | None, confidence: float,
                    alpha: float, power: float) -> dict[str, Any] | None:
    """One configuration's row of `compare_to_reference` (None when it has no cells)."""
    ref_hash, ref_rows = _reference_for(df, group, reference_group)
    cells = _cells(group, cycle)
    if cells.empty:
        return None
    per_query = cells.groupby("query_id")["ndcg_at_10"].mean()
    mean, low, high = mean_ci(per_query.to_numpy(), confidence)
    row: dict[str, Any] = {
        "config_label": first_value(group, "config_label"), "mode": first_value(group, "mode"),
        "teacher": first_value(group, "teacher"), "student": first_value(group, "student"),
        "dataset": first_value(group, "dataset"), "group_hash": group_hash,
        "n_seeds": int(cells["seed"].nunique()), "n_queries": int(per_query.size),
        "ndcg_mean": mean, "ci_low": low, "ci_high": high,
    }
    if ref_hash == group_hash:
        return {**row, "reference": "(reference)", "n_paired": int(per_query.size),
                "ratio_to_frozen": 1.0}
    if ref_rows is None:
        ref_cells = _cells(group, 0)
        row["reference"] = "cycle 0 (same runs)"
    else:
        frozen_ref = (ref_rows["mode"] == Mode.FROZEN).all()
        ref_cells = _cells(ref_rows, cycle, lenient=bool(frozen_ref))
        row["reference"] = first_value(ref_rows, "config_label") or ref_hash
    by_query, by_seed = _pair(cells, ref_cells)
    res = paired_comparison(by_query["a"].to_numpy(), by_query["b"].to_numpy(), confidence)
    spread = math.nan if by_seed is None else seed_spread(by_seed["a"] - by_seed["b"])
    return {**row, "n_paired": res["n"], "diff_vs_frozen": res["mean_diff"],
            "diff_ci_low": res["ci_low"], "diff_ci_high": res["ci_high"],
            "p_ttest": res["p_ttest"], "p_permutation": res["p_permutation"],
            "p_wilcoxon": res["p_wilcoxon"], "seed_sd": spread,
            "mde_80": min_detectable_effect(res["sd_diff"], res["n"], alpha, power),
            "ratio_to_frozen": res["mean_a"] / res["mean_b"] if res["mean_b"] else math.nan}


def compare_to_reference(per_query_df: pd.DataFrame, reference_group: str | None = None,
                         cycle: int | None = None, confidence: float = 0.95,
                         alpha: float = 0.05, power: float = 0.8) -> pd.DataFrame:
    """One row per configuration (group_hash): its NDCG@10 at `cycle` (None: each run's final
    cycle) averaged per query over seeds, and its paired difference from the reference.

    The reference is `reference_group` if given, else the frozen arm (mode == Mode.FROZEN) with
    the same student, dataset and protocol; without a frozen arm a configuration is compared
    with cycle 0 of its own runs (the untrained model of the same splits), and the
    `reference` column says so. Columns: see TABLE_COLUMNS. `ndcg_mean`/`ci_*` are over
    the configuration's own queries; `diff_*`, the p-values, `mde_80` and
    `ratio_to_frozen` over the queries both arms scored. `seed_sd` is the spread over seeds of
    the per-seed mean difference (no test over seeds: they share the test queries); `p_holm`
    is `p_ttest` Holm-adjusted over
    all comparisons in the table. The reference row carries NaN differences and ratio 1.
    """
    required = {"group_hash", "seed", "cycle", "query_id", "ndcg_at_10"}
    missing = required - set(per_query_df.columns)
    if missing:
        raise KeyError(f"per-query frame lacks columns {sorted(missing)}")
    df = per_query_df.copy()
    if "mode" not in df:
        df["mode"] = None
    if "config_label" not in df:
        df["config_label"] = df["group_hash"]
    df["query_id"] = df["query_id"].astype(str)
    if reference_group is not None and not (df["group_hash"] == reference_group).any():
        raise ValueError(f"reference group {reference_group!r} has no rows")

    rows = [row for group_hash, group in df.groupby("group_hash", sort=False)
            if (row := _comparison_row(df, group_hash, group, reference_group, cycle,
                                       confidence, alpha, power)) is not None]
    table = pd.DataFrame(rows).reindex(columns=TABLE_COLUMNS)
    if table.empty:
        return table
    table["p_holm"] = holm_adjust(table["p_ttest"].to_numpy())
    rank = {m: i for i, m in enumerate(MODES)}
    table["_is_ref"] = table["reference"] != "(reference)"
    table["_mode"] = table["mode"].map(rank).fillna(len(rank))
    table = table.sort_values(["_is_ref", "_mode", "config_label"], ignore_index=True)
    return table.drop(columns=["_is_ref", "_mode"])


def select_on_validation(runs_df: pd.DataFrame, modes: Sequence[str] = MODES,
                         metric: str = "val_ndcg_at_10", student: str | None = None
                         ) -> dict[str, Any] | None:
    """The configuration (group_hash) among `modes` with the highest mean over seeds of its final
    validation metric; None if no run of those modes has one. Only validation metrics (names
    starting with `val_`) are accepted: choosing on test figures would leak. Candidates share
    one query-side model, `student` (default: the student of most runs), so the choice never
    buys quality with a costlier query encoder; the frozen student itself is a candidate, and
    when it wins (ties included) the answer is "no change"."""
    if not metric.startswith("val_"):
        raise ValueError(f"select on a validation metric (val_*), not {metric!r}")
    column = f"metrics.{metric}"
    if column not in runs_df or runs_df.empty:
        return None
    if student is None and runs_df["student"].notna().any():
        student = runs_df["student"].mode().iloc[0]
    same_student = runs_df["student"] == student if student is not None else True
    pool = runs_df[runs_df["mode"].isin(modes) & runs_df[column].notna() & same_student]
    if pool.empty:
        return None
    scores = pool.groupby("group_hash").agg(
        val_mean=(column, "mean"), n_seeds=("seed", "nunique"),
        config_label=("config_label", "first"), mode=("mode", "first"))
    # a tie goes to the simpler mode (frozen first: "no change"), then to the label
    scores["_rank"] = scores["mode"].map({m: i for i, m in enumerate(MODES)}).fillna(len(MODES))
    best = scores.sort_values(["val_mean", "_rank", "config_label"],
                              ascending=[False, True, True]).iloc[0]
    return {"group_hash": str(best.name), "config_label": best["config_label"],
            "mode": best["mode"], "metric": metric, "val_mean": float(best["val_mean"]),
            "n_seeds": int(best["n_seeds"]), "n_candidates": int(len(scores))}


