"""Analysis of a study's logged runs: thin MLflow loaders, paired statistics, figures, a report.

The statistics are pure functions of numbers and DataFrames (numpy/scipy/pandas only), so they
test without a tracking store; MLflow and matplotlib are imported only inside the functions that
need them.

Conventions of the frames passed around:

- runs (from `load_runs`): one row per finished job run; short columns ``run_id``, ``mode``,
  ``teacher``, ``student``, ``dataset``, ``protocol``, ``seed``, ``schedule``, ``projection``,
  ``group_hash``, ``config_hash``, ``config_label``, ``weight`` (float ``weight.value``), and every
  tag, param and latest metric as ``tags.*``, ``params.*``, ``metrics.*``. A run's latest metric is
  the one at its highest step, i.e. its final cycle.
- per-query (from `load_per_query`): ``run_id``, ``cycle``, ``query_id`` (str), ``ndcg_at_10``
  plus the run's ``group_hash``, ``config_label``, ``mode``, ``teacher``, ``student``, ``dataset``,
  ``protocol`` and ``seed``.

A configuration is a ``group_hash`` (the config without the seed); its seeds are its replicates.
Differences are paired on query ids (and on seeds when both arms ran the same seeds, since a seed
decides the query split), so per-query difficulty cancels out.
"""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy import stats

from chelation.settings import MODES, Mode

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

PER_QUERY_ARTIFACT = "per_query_ndcg.csv"
MODE_ORDER = MODES
# Columns lifted from tags (falling back to params) into short names, with their param fallback.
_SHORT_COLUMNS = {
    "mode": "training.mode",
    "teacher": "teacher.name",
    "student": "student.model",
    "dataset": "dataset.name",
    "protocol": "protocol",
    "seed": "seed",
    "schedule": "weight.schedule",
    "projection": "teacher.projection",
    "group_hash": None,
    "config_hash": None,
    "config_label": None,
    "fallback": None,
    "index_teacher_weight": None,
}
# Columns that identify a study arm's "place": a reference must share them with the arm.
_CONTEXT = ("student", "dataset", "protocol")
_PER_QUERY_META = ("group_hash", "config_label", "mode", "teacher", "student", "dataset",
                   "protocol", "seed", "index_weight")
TABLE_COLUMNS = [
    "config_label", "mode", "teacher", "student", "dataset", "group_hash", "reference",
    "n_seeds", "n_queries", "n_paired", "ndcg_mean", "ci_low", "ci_high",
    "diff_vs_frozen", "diff_ci_low", "diff_ci_high", "p_ttest", "p_wilcoxon", "p_seeds",
    "p_holm", "mde_80", "ratio_to_frozen",
]


# --------------------------------------------------------------------------------------------
# Loaders (MLflow)
# --------------------------------------------------------------------------------------------

def _client(tracking_uri: str):
    from mlflow.tracking import MlflowClient

    from chelation.tracking import with_busy_timeout

    return MlflowClient(with_busy_timeout(tracking_uri))


def load_runs(tracking_uri: str, experiment: str) -> pd.DataFrame:
    """Finished job runs of one experiment, one row per run (see the module docstring)."""
    from mlflow.entities import ViewType

    client = _client(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise ValueError(f"experiment {experiment!r} does not exist in {tracking_uri}")
    query = "attributes.status = 'FINISHED' and tags.`chelation.role` = 'job'"
    rows: list[dict[str, Any]] = []
    token = None
    while True:
        page = client.search_runs([found.experiment_id], filter_string=query,
                                  run_view_type=ViewType.ACTIVE_ONLY, max_results=1000,
                                  page_token=token)
        for run in page:
            row: dict[str, Any] = {
                "run_id": run.info.run_id,
                "run_name": run.info.run_name,
                "status": run.info.status,
                "start_time": pd.to_datetime(run.info.start_time, unit="ms"),
                "parent_run_id": run.data.tags.get("mlflow.parentRunId"),
            }
            row.update({f"tags.{k}": v for k, v in run.data.tags.items()})
            row.update({f"params.{k}": v for k, v in run.data.params.items()})
            row.update({f"metrics.{k}": v for k, v in run.data.metrics.items()})
            rows.append(row)
        token = page.token
        if not token:
            break
    return _with_short_columns(pd.DataFrame(rows))


def _with_short_columns(raw: pd.DataFrame) -> pd.DataFrame:
    short = pd.DataFrame(index=raw.index)
    for name, param in _SHORT_COLUMNS.items():
        col = raw.get(f"tags.{name}")
        if param is not None and f"params.{param}" in raw:
            col = raw[f"params.{param}"] if col is None else col.fillna(raw[f"params.{param}"])
        short[name] = col if col is not None else pd.Series(np.nan, index=raw.index,
                                                            dtype=object)
    short["seed"] = pd.to_numeric(short["seed"], errors="coerce").astype("Int64")
    short["weight"] = pd.to_numeric(raw.get("params.weight.value",
                                            pd.Series(np.nan, index=raw.index)), errors="coerce")
    # the teacher's share of the indexed documents; runs from before index documents had 0
    short["index_weight"] = pd.to_numeric(short.pop("index_teacher_weight"),
                                          errors="coerce").fillna(0.0)
    front = [c for c in ("run_id", "run_name", "status", "start_time", "parent_run_id")
             if c in raw]
    rest = sorted(c for c in raw.columns if c not in front)
    out = pd.concat([raw[front], short, raw[rest]], axis=1)
    if out.empty:
        return out
    out["config_label"] = disambiguated_labels(out)
    return out.sort_values(["mode", "config_label", "seed"], na_position="last",
                           ignore_index=True)


# Params that never tell configurations apart (bookkeeping, or covered by the label already).
_LABEL_IGNORES = ("seed", "tracking.", "cache_dir", "engine.", "show_progress", "dataset.path")


def disambiguated_labels(runs: pd.DataFrame) -> pd.Series:
    """`config_label`, extended where configurations (group_hash) share a label: each gets the
    params in which they differ, e.g. `offline/mpnet/procrustes [training.lr=0.003]`. Params a
    run lacks (logged before the key existed) count as their value in the other runs only when
    no run sets them otherwise."""
    labels = runs["config_label"].astype(object).copy()
    params = [c for c in runs.columns if c.startswith("params.")
              and not c.removeprefix("params.").startswith(_LABEL_IGNORES)]
    for label, same in runs.groupby("config_label", dropna=True):
        groups = same.drop_duplicates("group_hash")
        if len(groups) < 2:
            continue
        varying = [c for c in params if groups[c].dropna().nunique() > 1]
        for _, g in groups.iterrows():
            extra = ", ".join(f"{c.removeprefix('params.')}={g[c]}" for c in varying
                              if pd.notna(g[c]))
            if extra:
                labels[runs["group_hash"] == g["group_hash"]] = f"{label} [{extra}]"
    return labels


def run_summary(runs: pd.DataFrame, metrics: Sequence[str] = ("ndcg_at_10", "val_ndcg_at_10")
                ) -> pd.DataFrame:
    """Seeds and mean final metrics per configuration (metrics the study lacks are left out)."""
    present = [m for m in metrics if f"metrics.{m}" in runs]
    aggs = {"seeds": ("seed", "nunique"),
            **{m: (f"metrics.{m}", "mean") for m in present}}
    return runs.groupby(["mode", "config_label"], dropna=False).agg(**aggs)


def metric_history(tracking_uri: str, run_ids: Iterable[str], metric: str) -> pd.DataFrame:
    """Every step of one metric for some runs: columns run_id, step, value (the last value
    logged at each step wins)."""
    client = _client(tracking_uri)
    rows = [(run_id, m.step, m.value, m.timestamp)
            for run_id in run_ids for m in client.get_metric_history(run_id, metric)]
    frame = pd.DataFrame(rows, columns=["run_id", "step", "value", "timestamp"])
    frame = frame.sort_values(["run_id", "step", "timestamp"])
    frame = frame.drop_duplicates(["run_id", "step"], keep="last")
    return frame.drop(columns="timestamp").reset_index(drop=True)


def per_query_table(tracking_uri: str, run_id: str) -> pd.DataFrame:
    """A run's per-query artifact: columns run_id, cycle, query_id (str), ndcg_at_10."""
    client = _client(tracking_uri)
    with tempfile.TemporaryDirectory() as tmp:
        path = client.download_artifacts(run_id, PER_QUERY_ARTIFACT, tmp)
        table = pd.read_csv(path, dtype={"query_id": str})
    table.insert(0, "run_id", run_id)
    return table


def load_per_query(tracking_uri: str, runs: pd.DataFrame) -> pd.DataFrame:
    """Per-query tables of all `runs`, with each run's configuration columns joined on. A run
    without the artifact is skipped with a warning."""
    parts = []
    for run_id in runs["run_id"]:
        try:
            parts.append(per_query_table(tracking_uri, run_id))
        except Exception as err:  # noqa: BLE001 - one missing artifact must not sink the study
            log.warning("run %s has no readable %s (%s); skipped", run_id, PER_QUERY_ARTIFACT,
                        err)
    if not parts:
        return pd.DataFrame(columns=["run_id", "cycle", "query_id", "ndcg_at_10",
                                     *_PER_QUERY_META])
    meta = runs[["run_id", *[c for c in _PER_QUERY_META if c in runs]]]
    return pd.concat(parts, ignore_index=True).merge(meta, on="run_id", how="left")


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
    half = float(stats.t.ppf(0.5 + confidence / 2, arr.size - 1)) * float(
        arr.std(ddof=1)) / math.sqrt(arr.size)
    return mean, mean - half, mean + half


def paired_comparison(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray,
                      confidence: float = 0.95) -> dict[str, float]:
    """Paired comparison of aligned arrays (a[i] and b[i] measure the same query).

    Returns n, mean_a, mean_b, mean_diff (a - b), sd_diff, ci_low/ci_high (t interval of the
    mean difference), p_ttest (paired t-test) and p_wilcoxon (signed-rank test, zero differences
    dropped), all two-sided. Pairs with a non-finite side are dropped. When every difference is
    zero both p-values are 1; with fewer than two pairs they are NaN.
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
           "p_ttest": math.nan, "p_wilcoxon": math.nan}
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
        out["p_ttest"] = float(stats.ttest_rel(x, y).pvalue)
    nonzero = d[np.abs(d) > 1e-12 * scale]
    if nonzero.size == 0:
        out["p_wilcoxon"] = 1.0
    else:
        out["p_wilcoxon"] = float(stats.wilcoxon(nonzero).pvalue)
    return out


def seed_paired_test(per_seed_a: Mapping[Any, float] | pd.Series,
                     per_seed_b: Mapping[Any, float] | pd.Series) -> dict[str, float]:
    """Paired t-test over seeds: per-seed means of two arms, matched by seed (seeds present in
    only one arm are ignored). Returns n_seeds, mean_diff, ci_low, ci_high, p_ttest; the
    p-value is NaN with fewer than two common seeds."""
    sa, sb = pd.Series(per_seed_a, dtype=float), pd.Series(per_seed_b, dtype=float)
    common = sa.index.intersection(sb.index)
    res = paired_comparison(sa.loc[common].to_numpy(), sb.loc[common].to_numpy())
    return {"n_seeds": res["n"], "mean_diff": res["mean_diff"], "ci_low": res["ci_low"],
            "ci_high": res["ci_high"], "p_ttest": res["p_ttest"]}


def min_detectable_effect(diff_sd: float, n: int, alpha: float = 0.05,
                          power: float = 0.8) -> float:
    """Smallest mean difference a two-sided paired t-test on `n` pairs with difference standard
    deviation `diff_sd` detects with probability `power` at level `alpha`:
    (t[1-alpha/2, n-1] + t[power, n-1]) * sd / sqrt(n). Infinite below two pairs."""
    if n < 2 or not math.isfinite(diff_sd):
        return math.inf
    df = n - 1
    return float((stats.t.ppf(1 - alpha / 2, df) + stats.t.ppf(power, df))
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


def _first(df: pd.DataFrame, column: str) -> Any:
    if column not in df or df[column].dropna().empty:
        return None
    return df[column].dropna().iloc[0]


def _reference_for(df: pd.DataFrame, group: pd.DataFrame, reference_group: str | None
                   ) -> tuple[str | None, pd.DataFrame | None]:
    """The reference group's hash and rows for one configuration: the given group, else the
    frozen group sharing its student/dataset/protocol (most seeds wins); None if there is none."""
    if reference_group is not None:
        return reference_group, df[df["group_hash"] == reference_group]
    frozen = df[(df["mode"] == Mode.FROZEN) & _student_documents(df)]
    for col in _CONTEXT:
        value = _first(group, col)
        if col in frozen and value is not None:
            frozen = frozen[frozen[col] == value]
    if frozen.empty:
        return None, None
    seeds = frozen.groupby("group_hash")["seed"].nunique()
    best = sorted(seeds.index, key=lambda g: (-seeds[g], g))[0]
    return best, frozen[frozen["group_hash"] == best]


def _student_documents(df: pd.DataFrame) -> pd.Series:
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


def compare_to_reference(per_query_df: pd.DataFrame, reference_group: str | None = None,
                         cycle: int | None = None, confidence: float = 0.95,
                         alpha: float = 0.05, power: float = 0.8) -> pd.DataFrame:
    """One row per configuration (group_hash): its NDCG@10 at `cycle` (None: each run's final
    cycle) averaged per query over seeds, and its paired difference from the reference.

    The reference is `reference_group` if given, else the frozen arm (mode == Mode.FROZEN) with
    the same student, dataset and protocol; without a frozen arm a configuration is compared
    with cycle 0 of its own runs (the untrained model of the same splits), and the
    ``reference`` column says so. Columns: see TABLE_COLUMNS. ``ndcg_mean``/``ci_*`` are over
    the configuration's own queries; ``diff_*``, the p-values, ``mde_80`` and
    ``ratio_to_frozen`` over the queries both arms scored. ``p_seeds`` is a paired t-test of
    per-seed means (NaN below two common seeds); ``p_holm`` is ``p_ttest`` Holm-adjusted over
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

    rows = []
    for group_hash, group in df.groupby("group_hash", sort=False):
        ref_hash, ref_rows = _reference_for(df, group, reference_group)
        cells = _cells(group, cycle)
        if cells.empty:
            continue
        per_query = cells.groupby("query_id")["ndcg_at_10"].mean()
        mean, low, high = mean_ci(per_query.to_numpy(), confidence)
        row: dict[str, Any] = {
            "config_label": _first(group, "config_label"), "mode": _first(group, "mode"),
            "teacher": _first(group, "teacher"), "student": _first(group, "student"),
            "dataset": _first(group, "dataset"), "group_hash": group_hash,
            "n_seeds": int(cells["seed"].nunique()), "n_queries": int(per_query.size),
            "ndcg_mean": mean, "ci_low": low, "ci_high": high,
        }
        if ref_hash == group_hash:
            row.update(reference="(reference)", n_paired=int(per_query.size),
                       ratio_to_frozen=1.0)
            rows.append(row)
            continue
        if ref_rows is None:
            ref_cells = _cells(group, 0)
            row["reference"] = "cycle 0 (same runs)"
        else:
            frozen_ref = (ref_rows["mode"] == Mode.FROZEN).all()
            ref_cells = _cells(ref_rows, cycle, lenient=bool(frozen_ref))
            row["reference"] = _first(ref_rows, "config_label") or ref_hash
        by_query, by_seed = _pair(cells, ref_cells)
        res = paired_comparison(by_query["a"].to_numpy(), by_query["b"].to_numpy(), confidence)
        seeds = (seed_paired_test(by_seed["a"], by_seed["b"]) if by_seed is not None
                 else {"p_ttest": math.nan})
        row.update(
            n_paired=res["n"], diff_vs_frozen=res["mean_diff"], diff_ci_low=res["ci_low"],
            diff_ci_high=res["ci_high"], p_ttest=res["p_ttest"], p_wilcoxon=res["p_wilcoxon"],
            p_seeds=seeds["p_ttest"],
            mde_80=min_detectable_effect(res["sd_diff"], res["n"], alpha, power),
            ratio_to_frozen=(res["mean_a"] / res["mean_b"] if res["mean_b"] else math.nan),
        )
        rows.append(row)

    table = pd.DataFrame(rows).reindex(columns=TABLE_COLUMNS)
    if table.empty:
        return table
    table["p_holm"] = holm_adjust(table["p_ttest"].to_numpy())
    rank = {m: i for i, m in enumerate(MODE_ORDER)}
    table["_is_ref"] = table["reference"] != "(reference)"
    table["_mode"] = table["mode"].map(rank).fillna(len(rank))
    table = table.sort_values(["_is_ref", "_mode", "config_label"], ignore_index=True)
    return table.drop(columns=["_is_ref", "_mode"])


def select_on_validation(runs_df: pd.DataFrame, modes: Sequence[str] = MODES,
                         metric: str = "val_ndcg_at_10", student: str | None = None
                         ) -> dict[str, Any] | None:
    """The configuration (group_hash) among `modes` with the highest mean over seeds of its final
    validation metric; None if no run of those modes has one. Only validation metrics (names
    starting with ``val_``) are accepted: choosing on test figures would leak. Candidates share
    one query-side model, `student` (default: the student of most runs), so the choice never
    buys quality with a costlier query encoder; the frozen student itself is a candidate, and
    when it wins the answer is "no change"."""
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
    best = scores.sort_values(["val_mean", "config_label"], ascending=[False, True]).iloc[0]
    return {"group_hash": str(best.name), "config_label": best["config_label"],
            "mode": best["mode"], "metric": metric, "val_mean": float(best["val_mean"]),
            "n_seeds": int(best["n_seeds"]), "n_candidates": int(len(scores))}


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------

def _num(x: Any, digits: int = 4) -> str:
    return f"{x:.{digits}f}" if isinstance(x, int | float) and math.isfinite(x) else "n/a"


def _p(x: Any) -> str:
    if not isinstance(x, int | float) or not math.isfinite(x):
        return "n/a"
    return "<0.0001" if x < 1e-4 else f"{x:.4f}"


def _p_is(x: Any) -> str:
    """'p = 0.0123' or 'p < 0.0001'."""
    text = _p(x)
    return f"p {text[0]} {text[1:]}" if text.startswith("<") else f"p = {text}"


def _signed(x: Any) -> str:
    return f"{x:+.4f}" if isinstance(x, int | float) and math.isfinite(x) else "n/a"


def chosen_versus_frozen(per_query_df: pd.DataFrame, selection: Mapping[str, Any] | None
                         ) -> pd.DataFrame:
    """The chosen configuration paired with every frozen model of the study (the student, and
    teachers run as frozen students): one row per frozen model, `reference` naming it."""
    if selection is None or per_query_df.empty:
        return pd.DataFrame(columns=TABLE_COLUMNS)
    chosen = per_query_df[per_query_df["group_hash"] == selection["group_hash"]]
    frozen = per_query_df[(per_query_df["mode"] == Mode.FROZEN) & _student_documents(per_query_df)]
    rows = []
    for ref_hash in frozen["group_hash"].unique():
        if ref_hash == selection["group_hash"]:
            continue
        pair = pd.concat([chosen, frozen[frozen["group_hash"] == ref_hash]])
        table = compare_to_reference(pair, reference_group=ref_hash)
        rows.append(table[table["group_hash"] == selection["group_hash"]])
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=TABLE_COLUMNS)


def results_markdown(table: pd.DataFrame, selection: Mapping[str, Any] | None = None, *,
                     title: str = "Study results", alpha: float = 0.05, floor: float = 0.97,
                     confidence: float = 0.95, versus: pd.DataFrame | None = None) -> str:
    """Markdown report of a `compare_to_reference` table and a `select_on_validation` choice;
    `versus` (from `chosen_versus_frozen`) adds the choice against each frozen model."""
    pct = f"{confidence:.0%}"
    lines = [f"# {title}", ""]
    if table.empty:
        return "\n".join([*lines, "No finished job runs with per-query results.", ""])
    comps = table[table["reference"] != "(reference)"]
    seeds = sorted({int(s) for s in table["n_seeds"].dropna()})
    lines += [
        f"{len(table)} configurations, {'/'.join(map(str, seeds))} seed(s) each; NDCG@10 at "
        "the final cycle on held-out test queries, averaged per query over seeds. Differences "
        "are paired per query against the reference (the frozen student unless stated); "
        f"p-values are two-sided, p (Holm) corrects the paired t-test for {len(comps)} "
        f"comparison(s); p (seeds) pairs per-seed means, so it also carries training noise; MDE is "
        f"the smallest difference a paired t-test detects with 80% power at alpha = {alpha:g}.",
        ""]
    extra = [c for c in ("dataset", "student") if table[c].nunique(dropna=True) > 1]
    head = ["configuration", *extra, "seeds", "queries", f"NDCG@10 [{pct} CI]",
            f"diff vs reference [{pct} CI]", "p (t)", "p (Wilcoxon)", "p (seeds)", "p (Holm)",
            "MDE 80%", "ratio", "reference"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in table.iterrows():
        is_ref = r["reference"] == "(reference)"
        cells = [
            f"`{r['config_label']}`", *[str(r[c]) for c in extra], str(r["n_seeds"]),
            str(r["n_queries"]),
            f"{_num(r['ndcg_mean'])} [{_num(r['ci_low'])}, {_num(r['ci_high'])}]",
            "—" if is_ref else
            f"{_signed(r['diff_vs_frozen'])} [{_signed(r['diff_ci_low'])}, "
            f"{_signed(r['diff_ci_high'])}]",
            *(["—"] * 4 if is_ref else [_p(r["p_ttest"]), _p(r["p_wilcoxon"]),
                                        _p(r["p_seeds"]), _p(r["p_holm"])]),
            "—" if is_ref else _num(r["mde_80"]), _num(r["ratio_to_frozen"], 3),
            "this is the reference" if is_ref else str(r["reference"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")

    lines += ["## Chosen on validation", ""]
    if selection is None:
        lines += ["No configuration logged a validation score, so none was chosen.", ""]
    else:
        chosen = table[table["group_hash"] == selection["group_hash"]]
        text = (f"Highest mean final {selection.get('metric', 'val_ndcg_at_10')} over seeds "
                f"among {selection.get('n_candidates', '?')} candidate configuration(s): "
                f"`{selection['config_label']}` (validation {_num(selection['val_mean'])}, "
                f"{selection.get('n_seeds', '?')} seed(s)).")
        if not chosen.empty:
            c = chosen.iloc[0]
            verdict = ("significant" if math.isfinite(c["p_holm"]) and c["p_holm"] < alpha
                       else "not significant")
            text += (f" Its test NDCG@10 is {_num(c['ndcg_mean'])} [{_num(c['ci_low'])}, "
                     f"{_num(c['ci_high'])}], {_signed(c['diff_vs_frozen'])} vs its reference "
                     f"({_p_is(c['p_ttest'])}, Holm {_p_is(c['p_holm'])}: {verdict} at alpha = "
                     f"{alpha:g}). The test figure played no part in the choice.")
        lines += [text, ""]
        for _, v in (versus if versus is not None else pd.DataFrame()).iterrows():
            lines.append(f"- against `{v['reference']}`: {_signed(v['diff_vs_frozen'])} "
                         f"[{_signed(v['diff_ci_low'])}, {_signed(v['diff_ci_high'])}], "
                         f"{_p_is(v['p_ttest'])} (paired t over {v['n_paired']} queries; "
                         f"over seeds {_p_is(v['p_seeds'])})")
        if versus is not None and not versus.empty:
            lines.append("")

    lines += ["## Significance", ""]
    sig = comps[comps["p_holm"] < alpha]
    mde = comps["mde_80"][np.isfinite(comps["mde_80"].astype(float))]
    if mde.empty:
        mde_text = "n/a"
    elif _num(mde.min()) == _num(mde.max()):
        mde_text = _num(mde.min())
    else:
        mde_text = f"{_num(mde.min())} to {_num(mde.max())}"
    if comps.empty:
        lines += ["Only reference arms were run: there is nothing to compare.", ""]
    elif sig.empty:
        lines += [f"No configuration differs significantly from its reference (paired t-test, "
                  f"Holm-corrected, alpha = {alpha:g}). This is not evidence of no effect: on "
                  "this collection only effects larger than the MDE can be significant, "
                  f"here {mde_text} NDCG@10 at 80% power.", ""]
    else:
        for _, r in sig.iterrows():
            direction = "better" if r["diff_vs_frozen"] > 0 else "worse"
            lines.append(f"- `{r['config_label']}` is significantly {direction} than "
                         f"`{r['reference']}`: {_signed(r['diff_vs_frozen'])} "
                         f"(Holm {_p_is(r['p_holm'])}; over seeds {_p_is(r['p_seeds'])}).")
        rest = len(comps) - len(sig)
        if rest:
            tail = (f"The other {rest} comparison(s) are not significant; on this collection "
                    "only effects larger than the MDE can be significant "
                    f"({mde_text} NDCG@10 at 80% power).")
        else:
            tail = (f"Every comparison is significant; MDE at 80% power: {mde_text} NDCG@10.")
        lines += ["", tail, ""]

    lines += ["## Floor", ""]
    ratios = comps["ratio_to_frozen"].astype(float)
    below = comps[ratios < floor]
    if comps.empty or ratios.isna().all():
        lines += ["No ratio to a reference could be computed.", ""]
    elif below.empty:
        lines += [f"Every configuration stays >= {floor:g} x its reference (lowest ratio "
                  f"{_num(ratios.min(), 3)}, `{comps.loc[ratios.idxmin(), 'config_label']}`).",
                  ""]
    else:
        names = ", ".join(f"`{n}` ({_num(x, 3)})" for n, x in
                          zip(below["config_label"], below["ratio_to_frozen"], strict=True))
        lines += [f"Not every configuration stays >= {floor:g} x its reference: {names}.", ""]
    if (comps["reference"] == "cycle 0 (same runs)").any():
        lines += ["Configurations whose student and dataset had no frozen arm were compared with "
                  "cycle 0 of their own runs (the same model before any training).", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Figures (matplotlib's object API: no pyplot state, any backend)
# --------------------------------------------------------------------------------------------

def _panels(frame: pd.DataFrame) -> list[tuple[tuple[Any, Any], pd.DataFrame]]:
    keys = [c for c in ("dataset", "student") if c in frame]
    if not keys:
        return [((None, None), frame)]
    filled = frame.assign(**{k: frame[k].fillna("?") for k in keys})
    return [((name if isinstance(name, tuple) else (name,)), part)
            for name, part in filled.groupby(keys, sort=True)]


def _new_figure(n_panels: int, width: float = 6.5, height: float = 4.2):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * n_panels, height), layout="constrained")
    return fig, fig.subplots(1, n_panels, squeeze=False)[0]


def _panel_title(key: tuple[Any, ...]) -> str:
    return " / ".join(str(k).rstrip("/").split("/")[-1] for k in key if k is not None)


def _order(frame: pd.DataFrame) -> tuple[int, str]:
    mode = _first(frame, "mode")
    rank = MODE_ORDER.index(mode) if mode in MODE_ORDER else len(MODE_ORDER)
    return rank, str(_first(frame, "config_label"))


def plot_ndcg_vs_weight(runs: pd.DataFrame, metric: str = "ndcg_at_10") -> Figure | None:
    """Final-cycle `metric` against the constant teacher weight of hybrid runs (mean and +-1 sd
    over seeds, each seed a dot), one line per teacher/projection; every other configuration
    (frozen, baseline, offline, non-constant hybrid schedules) is a horizontal reference.
    None when the study has no hybrid run with a constant schedule."""
    column = f"metrics.{metric}"
    if runs.empty or column not in runs:
        return None
    is_curve = (runs["mode"] == Mode.HYBRID) & (runs["schedule"] == "constant") & \
        runs["weight"].notna()
    if not is_curve.any():
        return None
    panels = [(k, p) for k, p in _panels(runs) if is_curve.loc[p.index].any()]
    fig, axes = _new_figure(len(panels), width=7.0, height=6.5)
    for ax, (key, part) in zip(axes, panels, strict=True):
        colours = (f"C{i % 10}" for i in range(1000))
        curve = part[is_curve.loc[part.index]]
        variant = curve["config_label"].str.replace(r"constant:[0-9.]+", "w", regex=True)
        for name, line in curve.groupby(variant, dropna=False):
            agg = line.groupby("weight")[column].agg(["mean", "std"]).sort_index()
            drawn = ax.plot(agg.index, agg["mean"], marker="o", color=next(colours),
                            label=f"{name} (n={line['seed'].nunique()})")[0]
            ax.fill_between(agg.index, agg["mean"] - agg["std"].fillna(0),
                            agg["mean"] + agg["std"].fillna(0), color=drawn.get_color(),
                            alpha=0.15)
            ax.scatter(line["weight"], line[column], s=10, color=drawn.get_color(), alpha=0.5)
        # the arms every curve is read against; other configurations are in the table
        others = part[part["mode"].isin([Mode.FROZEN, Mode.BASELINE])]
        styles = {Mode.FROZEN: "-", Mode.BASELINE: "--", Mode.OFFLINE: ":", Mode.HYBRID: "-."}
        for _, ref in sorted(others.groupby("group_hash"), key=lambda kv: _order(kv[1])):
            values = ref[column].dropna()
            if values.empty:
                continue
            mode = _first(ref, "mode")
            line = ax.axhline(values.mean(), linestyle=styles.get(mode, "-"), linewidth=1.2,
                              color="black" if mode == Mode.FROZEN else next(colours),
                              label=f"{_first(ref, 'config_label')} (n={len(values)})")
            if len(values) > 1:
                ax.axhspan(values.mean() - values.std(), values.mean() + values.std(),
                           color=line.get_color(), alpha=0.08)
        ax.set_xlabel("teacher weight (constant schedule)")
        ax.set_ylabel(f"{metric} (final cycle, test)")
        ax.set_title(_panel_title(key))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12))
    return fig


def plot_ndcg_vs_index_weight(runs: pd.DataFrame, metric: str = "ndcg_at_10"
                              ) -> Figure | None:
    """Final-cycle `metric` against the teacher's share of the indexed documents (0 = the
    student's own, 1 = the teacher's projected), one line per training configuration (mean and
    +-1 sd over seeds); frozen models of other students (the teacher as a frozen retriever) are
    horizontal references. None when the study indexed a single kind of documents."""
    column = f"metrics.{metric}"
    if runs.empty or column not in runs or runs["index_weight"].nunique() < 2:
        return None
    panels = [(name, part) for name, part in runs.groupby(runs["dataset"].fillna("?"))
              if part["index_weight"].nunique() > 1]
    fig, axes = _new_figure(len(panels), width=7.0, height=6.5)
    for ax, (dataset, part) in zip(axes, panels, strict=True):
        trained = part.loc[part["mode"] != Mode.FROZEN, "student"].dropna()
        student = (trained if not trained.empty else part["student"]).mode().iloc[0]
        ours, others = part[part["student"] == student], part[part["student"] != student]
        series = ours["config_label"].str.replace(r"/docs:[^/]+", "", regex=True)
        for (name, line), marker in zip(
                sorted(ours.groupby(series), key=lambda kv: _order(kv[1])),
                "osD^v<>p*h" * 10, strict=False):
            agg = line.groupby("index_weight")[column].agg(["mean", "std"]).sort_index()
            drawn = ax.plot(agg.index, agg["mean"], marker=marker,
                            label=f"{name} (n={line['seed'].nunique()})")[0]
            ax.fill_between(agg.index, agg["mean"] - agg["std"].fillna(0),
                            agg["mean"] + agg["std"].fillna(0), color=drawn.get_color(),
                            alpha=0.12)
        for label, ref in others[others["mode"] == Mode.FROZEN].groupby("config_label"):
            ax.axhline(ref[column].mean(), color="black", linestyle=":", linewidth=1.2,
                       label=f"{label} (n={ref['seed'].nunique()})")
        ax.set_xlabel("teacher's share of the indexed documents (queries: the student's)")
        ax.set_ylabel(f"{metric} (final cycle, test)")
        ax.set_title(f"{dataset} / queries by {_panel_title((student,))}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2)
    return fig


def plot_ndcg_per_cycle(history: pd.DataFrame, runs: pd.DataFrame,
                        metric: str = "ndcg_at_10") -> Figure | None:
    """`metric` per cycle (from `metric_history`), one line per configuration: mean over seeds
    with a +-1 sd band. None when there is no history."""
    if history.empty:
        return None
    meta = runs[["run_id", "group_hash", "config_label", "mode", "dataset", "student", "seed"]]
    frame = history.merge(meta, on="run_id", how="inner")
    if frame.empty:
        return None
    # one panel per (dataset, student, mode): a study has dozens of configurations
    panels = [((*key, mode), p) for key, part in _panels(frame)
              for mode, p in sorted(part.groupby("mode"), key=lambda kv: _order(kv[1]))]
    fig, axes = _new_figure(len(panels), width=6.0, height=7.0)
    for ax, (key, part) in zip(axes, panels, strict=True):
        for label, conf in part.groupby("config_label", sort=True):
            agg = conf.groupby("step")["value"].agg(["mean", "std"]).sort_index()
            style = "--" if _first(conf, "mode") == Mode.FROZEN else "-"
            drawn = ax.plot(agg.index, agg["mean"], linestyle=style, marker=".",
                            label=f"{label} (n={conf['seed'].nunique()})")[0]
            if agg["std"].notna().any():
                ax.fill_between(agg.index, agg["mean"] - agg["std"].fillna(0),
                                agg["mean"] + agg["std"].fillna(0), color=drawn.get_color(),
                                alpha=0.12)
        ax.set_xlabel("cycle (0 = before any training)")
        ax.set_ylabel(f"{metric} (test)")
        ax.set_title(_panel_title(key))
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.12))
    return fig


def save_figure(fig: Figure, path: str | Path, dpi: int = 120) -> Path:
    """Write a figure as PNG (creating the folder) and return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def frozen_models_table(per_query_df: pd.DataFrame) -> pd.DataFrame:
    """Every frozen arm (the student, and teachers run as frozen students) paired against the
    frozen arm of the student the study trains (the student of most non-frozen runs)."""
    frozen = per_query_df[(per_query_df["mode"] == Mode.FROZEN)
                          & _student_documents(per_query_df)]
    trained = per_query_df.loc[per_query_df["mode"] != Mode.FROZEN, "student"]
    if frozen.empty or frozen["student"].nunique() < 2 or trained.empty:
        return pd.DataFrame(columns=TABLE_COLUMNS)
    student = trained.mode().iloc[0]
    reference = frozen.loc[frozen["student"] == student, "group_hash"]
    if reference.empty:
        return pd.DataFrame(columns=TABLE_COLUMNS)
    return compare_to_reference(frozen, reference_group=reference.iloc[0])


def frozen_models_markdown(table: pd.DataFrame) -> str:
    """A short markdown section on the frozen models (see `frozen_models_table`)."""
    if table.empty:
        return ""
    lines = ["## The models frozen, for reference", "",
             "| model | NDCG@10 [95% CI] | diff vs the frozen student [95% CI] | p (t) "
             "| p (Wilcoxon) |", "|---|---|---|---|---|"]
    for _, r in table.iterrows():
        is_ref = r["reference"] == "(reference)"
        lines.append(
            f"| `{r['student']}` | {_num(r['ndcg_mean'])} [{_num(r['ci_low'])}, "
            f"{_num(r['ci_high'])}] | "
            + ("the frozen student |" if is_ref else
               f"{_signed(r['diff_vs_frozen'])} [{_signed(r['diff_ci_low'])}, "
               f"{_signed(r['diff_ci_high'])}] |")
            + (" — | — |" if is_ref else f" {_p(r['p_ttest'])} | {_p(r['p_wilcoxon'])} |"))
    return "\n".join(lines) + "\n"
