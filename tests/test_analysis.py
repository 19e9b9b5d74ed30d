"""Tests of chelation.analysis: the statistics against known answers (no MLflow), the loaders
against a real SQLite MLflow store, and the analysis notebook executed headless on that store."""

from __future__ import annotations

import hashlib
import math
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from chelation import analysis as ca

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "analysis.ipynb"


# --------------------------------------------------------------------------------------------
# Pure statistics
# --------------------------------------------------------------------------------------------

def test_mean_ci_matches_scipy_t_interval():
    values = np.array([0.31, 0.42, 0.28, 0.55, 0.47, 0.36, 0.40])
    mean, low, high = ca.mean_ci(values, 0.95)
    expected = stats.t.interval(0.95, len(values) - 1, loc=values.mean(),
                                scale=stats.sem(values))
    assert mean == pytest.approx(values.mean())
    assert (low, high) == pytest.approx(expected)
    _, low90, high90 = ca.mean_ci(values, 0.90)
    assert low < low90 < high90 < high


@pytest.mark.parametrize("df", [1, 2, 5, 29, 224, 3000])
def test_t_quantile_and_p_value_equal_scipy_stats(df: int) -> None:
    from chelation.analysis.stats import t_quantile, t_test_p

    for q in (0.8, 0.95, 0.975, 0.995):
        assert t_quantile(q, df) == pytest.approx(stats.t.ppf(q, df), rel=1e-12)
    for t in (-4.2, -1.3, 0.0, 0.7, 2.1, 9.0):
        assert t_test_p(t, df) == pytest.approx(2 * stats.t.sf(abs(t), df), rel=1e-10, abs=1e-300)


def test_a_comparison_without_scipy_tests_imports_no_scipy_stats() -> None:
    """What a sweep's summary asks for (the t-test alone) does not pay scipy.stats' import."""
    code = ("import sys; from chelation import analysis as ca; "
            "r = ca.paired_comparison([0.3, 0.5, 0.4, 0.6], [0.2, 0.5, 0.3, 0.4], "
            "scipy_tests=False); "
            "print(r['p_ttest'] > 0, r['p_wilcoxon'] != r['p_wilcoxon'], "
            "'scipy.stats' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.split() == ["True", "True", "False"], out.stdout + out.stderr


def test_mean_ci_edge_cases():
    assert ca.mean_ci([0.5, 0.5, 0.5]) == (0.5, 0.5, 0.5)
    mean, low, high = ca.mean_ci([0.4])
    assert mean == 0.4 and math.isnan(low) and math.isnan(high)
    assert all(math.isnan(x) for x in ca.mean_ci([]))
    assert ca.mean_ci([0.2, np.nan, 0.4])[0] == pytest.approx(0.3)


def test_paired_comparison_detects_a_known_shift():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.1, 0.9, 60)
    shifted = base + 0.05 + rng.normal(0, 0.03, 60)
    res = ca.paired_comparison(shifted, base)
    assert res["n"] == 60
    assert res["mean_diff"] == pytest.approx(np.mean(shifted - base))
    assert res["p_ttest"] == pytest.approx(stats.ttest_rel(shifted, base).pvalue)
    assert res["p_ttest"] < 0.05 and res["p_wilcoxon"] < 0.05
    assert res["ci_low"] < 0.05 < res["ci_high"] and res["ci_low"] > 0
    _, low, high = ca.mean_ci(shifted - base)
    assert (res["ci_low"], res["ci_high"]) == pytest.approx((low, high))


def test_paired_comparison_zero_shift_is_not_significant():
    rng = np.random.default_rng(1)
    base = rng.uniform(0.1, 0.9, 40)
    noise = rng.normal(0, 0.05, 20)
    other = base + np.concatenate([noise, -noise])  # differences cancel exactly
    res = ca.paired_comparison(other, base)
    assert res["mean_diff"] == pytest.approx(0.0, abs=1e-12)
    assert res["p_ttest"] > 0.05 and res["p_wilcoxon"] > 0.05
    assert res["ci_low"] < 0 < res["ci_high"]


def test_paired_comparison_all_zero_differences_without_warnings():
    a = np.array([0.2, 0.5, 0.7, 0.1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = ca.paired_comparison(a, a.copy())
    assert res["mean_diff"] == 0 and res["p_ttest"] == 1.0 and res["p_wilcoxon"] == 1.0
    assert res["ci_low"] == res["ci_high"] == 0


def test_paired_comparison_drops_nan_pairs_and_checks_lengths():
    res = ca.paired_comparison([0.5, np.nan, 0.7, 0.2], [0.4, 0.3, np.nan, 0.1])
    assert res["n"] == 2 and res["mean_diff"] == pytest.approx(0.1)
    assert math.isnan(ca.paired_comparison([0.5], [0.4])["p_ttest"])
    with pytest.raises(ValueError, match="length"):
        ca.paired_comparison([0.1, 0.2], [0.1])


def test_the_permutation_test_agrees_with_scipy_and_with_the_t_test_on_a_clear_shift():
    rng = np.random.default_rng(5)
    b = rng.uniform(0.2, 0.6, 40)
    a = b + 0.05 + rng.normal(0, 0.02, 40)
    res = ca.paired_comparison(a, b)
    assert res["p_permutation"] < 0.001 and res["p_ttest"] < 0.001
    null = ca.paired_comparison(b + rng.normal(0, 0.02, 40), b)
    assert null["p_permutation"] == pytest.approx(null["p_ttest"], abs=0.1)
    # it is scipy's own test: the same call gives the same p
    direct = stats.permutation_test((a, b), lambda u, v, axis: np.mean(u - v, axis=axis),
                                    permutation_type="samples", vectorized=True,
                                    n_resamples=9999, rng=np.random.default_rng(0))
    assert res["p_permutation"] == direct.pvalue


def test_seed_spread_is_the_sd_of_per_seed_means():
    assert ca.seed_spread([0.40, 0.42, 0.45]) == pytest.approx(np.std([0.40, 0.42, 0.45],
                                                                      ddof=1))
    assert math.isnan(ca.seed_spread([0.4]))


def test_min_detectable_effect_formula_and_power():
    sd, n = 0.1, 30
    expected = (stats.t.ppf(0.975, n - 1) + stats.t.ppf(0.8, n - 1)) * sd / math.sqrt(n)
    mde = ca.min_detectable_effect(sd, n)
    assert mde == pytest.approx(expected)
    # The power of the two-sided paired t-test at that effect (noncentral t) is about 80%.
    crit = stats.t.ppf(0.975, n - 1)
    nc = mde * math.sqrt(n) / sd
    power = stats.nct.sf(crit, n - 1, nc) + stats.nct.cdf(-crit, n - 1, nc)
    assert power == pytest.approx(0.8, abs=0.02)
    # Large n approaches the normal formula; more queries detect smaller effects.
    assert ca.min_detectable_effect(1.0, 10_000) == pytest.approx(
        (stats.norm.ppf(0.975) + stats.norm.ppf(0.8)) / 100, rel=1e-3)
    series = [ca.min_detectable_effect(sd, k) for k in (5, 10, 50, 200)]
    assert all(x > y for x, y in zip(series, series[1:], strict=False))
    assert ca.min_detectable_effect(sd, 30, power=0.9) > mde
    assert ca.min_detectable_effect(sd, 1) == math.inf


def test_holm_adjust_known_values():
    adjusted = ca.holm_adjust([0.01, 0.04, 0.03, np.nan])
    assert adjusted[:3] == pytest.approx([0.03, 0.06, 0.06])
    assert math.isnan(adjusted[3])
    assert ca.holm_adjust([0.5, 0.02]) == pytest.approx([0.5, 0.04])
    assert ca.holm_adjust([0.9, 0.8]) == pytest.approx([1.0, 1.0])


# --------------------------------------------------------------------------------------------
# compare_to_reference, selection, report, figures on synthetic frames
# --------------------------------------------------------------------------------------------

def _per_query(label, mode, group, seeds, queries, values_at, teacher="mpnet", cycles=2):
    """Rows for one configuration: values_at(cycle, seed, query_index) -> ndcg."""
    rows = []
    for seed in seeds:
        for cycle in range(cycles + 1):
            for i, q in enumerate(queries):
                rows.append({"run_id": f"{group}-{seed}", "group_hash": group, "seed": seed,
                             "config_label": label, "mode": mode, "teacher": teacher,
                             "student": "minilm", "dataset": "toy", "cycle": cycle,
                             "query_id": q, "ndcg_at_10": values_at(cycle, seed, i)})
    return rows


@pytest.fixture
def toy_per_query():
    queries = [str(i) for i in range(1, 13)]
    base = np.linspace(0.2, 0.8, len(queries))
    jitter = np.tile([0.01, -0.01], len(queries) // 2)
    rows = _per_query("frozen/minilm", "frozen", "F", [0, 1], queries,
                      lambda c, s, i: base[i])
    rows += _per_query("hybrid/mpnet/constant:0.5/procrustes", "hybrid", "H", [0, 1], queries,
                       lambda c, s, i: base[i] + (0.1 if c == 2 else 0.0) + jitter[i] * s)
    rows += _per_query("baseline", "baseline", "B", [0, 1], queries,
                       lambda c, s, i: base[i] + jitter[i])
    return pd.DataFrame(rows)


def test_compare_to_reference_on_known_shifts(toy_per_query):
    table = ca.compare_to_reference(toy_per_query)
    assert list(table.columns) == ca.TABLE_COLUMNS
    assert table["config_label"].tolist() == [
        "frozen/minilm", "baseline", "hybrid/mpnet/constant:0.5/procrustes"]
    ref, base, hyb = (table.iloc[i] for i in range(3))
    assert ref["reference"] == "(reference)" and ref["ratio_to_frozen"] == 1.0
    assert math.isnan(ref["diff_vs_frozen"])
    assert ref["ndcg_mean"] == pytest.approx(0.5)
    assert hyb["n_seeds"] == 2 and hyb["n_queries"] == 12 and hyb["n_paired"] == 12
    # seed 1's jitter averages to half of it per query; the mean shift is exactly 0.1
    assert hyb["diff_vs_frozen"] == pytest.approx(0.1)
    assert hyb["ratio_to_frozen"] == pytest.approx(0.6 / 0.5)
    assert hyb["p_ttest"] < 1e-6 and hyb["p_wilcoxon"] < 0.01
    # the same shift on both seeds: the seeds do not move the difference
    assert hyb["seed_sd"] == pytest.approx(0.0, abs=1e-12) and "p_seeds" not in hyb
    assert hyb["reference"] == "frozen/minilm"
    assert base["diff_vs_frozen"] == pytest.approx(0.0, abs=1e-12)
    assert base["p_ttest"] > 0.5 and base["p_holm"] >= base["p_ttest"]
    sd = np.std(np.full(12, 0.1) + np.tile([0.005, -0.005], 6), ddof=1)
    assert hyb["mde_80"] == pytest.approx(ca.min_detectable_effect(sd, 12))
    # At cycle 1 the hybrid had not moved yet.
    early = ca.compare_to_reference(toy_per_query, cycle=1).set_index("group_hash")
    assert early.loc["H", "diff_vs_frozen"] == pytest.approx(0.0, abs=1e-12)


def test_compare_to_reference_pairs_on_seed_and_query():
    # each seed tests different queries: pairing must match (seed, query), not query alone
    rows = []
    for seed, queries in ((0, ["a", "b", "c"]), (1, ["c", "d", "e"])):
        for q in queries:
            frozen = {"a": 0.1, "b": 0.2, "c": 0.3 + 0.2 * seed, "d": 0.4, "e": 0.5}[q]
            for group, mode, value in (("F", "frozen", frozen), ("O", "offline", frozen + 0.05)):
                rows.append({"group_hash": group, "mode": mode, "config_label": mode,
                             "seed": seed, "cycle": 1, "query_id": q, "ndcg_at_10": value})
    table = ca.compare_to_reference(pd.DataFrame(rows)).set_index("group_hash")
    assert table.loc["O", "n_queries"] == 5
    assert table.loc["O", "diff_vs_frozen"] == pytest.approx(0.05)
    assert table.loc["O", "p_ttest"] == 0.0


def test_pairing_on_seed_and_query_changes_the_answer():
    """The frozen arm ran an extra seed whose scores are 0.3 higher. Paired on (seed, query) the
    offline arm is +0.05; paired on query alone (frozen averaged over all its seeds) it would be
    -0.05. The spread over seeds is over the common seeds' per-seed differences."""
    queries = [f"q{i}" for i in range(20)]
    base = np.linspace(0.1, 0.5, len(queries))
    rng = np.random.default_rng(3)
    noise = {seed: rng.normal(0, 0.01, len(queries)) for seed in (0, 1)}
    rows = _per_query("frozen", "frozen", "F", [0, 1, 2], queries,
                      lambda c, s, i: base[i] + (0.3 if s == 2 else 0.0))
    rows += _per_query("offline", "offline", "O", [0, 1], queries,
                       lambda c, s, i: base[i] + 0.05 + noise[s][i])
    row = ca.compare_to_reference(pd.DataFrame(rows)).set_index("group_hash").loc["O"]
    assert row["diff_vs_frozen"] == pytest.approx(0.05 + np.mean([noise[0], noise[1]]))
    assert row["diff_vs_frozen"] > 0.04
    per_seed = [np.mean(base + 0.05 + noise[s]) - np.mean(base) for s in (0, 1)]
    assert row["seed_sd"] == pytest.approx(np.std(per_seed, ddof=1))


def test_no_common_seed_gives_no_seed_spread():
    queries = [f"q{i}" for i in range(10)]
    rows = _per_query("frozen", "frozen", "F", [0], queries, lambda c, s, i: 0.1 * (i % 3))
    rows += _per_query("baseline", "baseline", "B", [1], queries,
                       lambda c, s, i: 0.1 * (i % 3) + 0.01 * (i % 2))
    row = ca.compare_to_reference(pd.DataFrame(rows)).set_index("group_hash").loc["B"]
    assert math.isnan(row["seed_sd"])
    assert row["diff_vs_frozen"] == pytest.approx(0.005)


def test_each_dataset_is_paired_with_its_own_frozen_arm():
    queries = [f"q{i}" for i in range(12)]
    rows = []
    for dataset, level, shift in (("a", 0.2, 0.03), ("b", 0.6, -0.04)):
        part = _per_query("frozen", "frozen", f"F{dataset}", [0, 1], queries,
                          lambda c, s, i, lv=level: lv + 0.01 * i)
        part += _per_query("hybrid", "hybrid", f"H{dataset}", [0, 1], queries,
                           lambda c, s, i, lv=level, sh=shift: lv + 0.01 * i + sh
                           + 0.002 * (i % 2))
        for r in part:
            r["dataset"] = dataset
        rows += part
    table = ca.compare_to_reference(pd.DataFrame(rows)).set_index("group_hash")
    assert table.loc["Ha", "reference"] == table.loc["Fa", "config_label"]
    assert table.loc["Ha", "diff_vs_frozen"] == pytest.approx(0.031)
    assert table.loc["Hb", "diff_vs_frozen"] == pytest.approx(-0.039)
    assert table.loc["Hb", "ratio_to_frozen"] == pytest.approx(
        (0.6 + 0.055 - 0.039) / (0.6 + 0.055))


def test_holm_is_applied_over_the_comparisons_only():
    queries = [f"q{i}" for i in range(16)]
    base = np.linspace(0.2, 0.6, len(queries))
    noise = np.random.default_rng(5).normal(0, 0.02, len(queries))
    rows = _per_query("frozen", "frozen", "F", [0], queries, lambda c, s, i: base[i])
    for group, shift in (("A", 0.004), ("B", 0.008), ("C", 0.03)):
        rows += _per_query(group, "hybrid", group, [0], queries,
                           lambda c, s, i, sh=shift: base[i] + sh + noise[i])
    table = ca.compare_to_reference(pd.DataFrame(rows)).set_index("group_hash")
    assert math.isnan(table.loc["F", "p_holm"])  # the reference is no comparison
    p = table.loc[["A", "B", "C"], "p_ttest"].to_numpy()
    order = np.argsort(p)
    expected, running = np.empty(3), 0.0
    for rank, i in enumerate(order):  # Holm's step-down, written out for m = 3
        running = max(running, min(1.0, (3 - rank) * p[i]))
        expected[i] = running
    assert table.loc[["A", "B", "C"], "p_holm"].to_numpy() == pytest.approx(expected)
    # and these p-values tell Holm from Bonferroni (the check has teeth)
    assert not np.allclose(expected, np.minimum(1.0, 3 * p))


def test_compare_to_reference_without_frozen_uses_cycle_zero(toy_per_query):
    no_frozen = toy_per_query[toy_per_query["mode"] != "frozen"]
    table = ca.compare_to_reference(no_frozen).set_index("group_hash")
    assert (table["reference"] == "cycle 0 (same runs)").all()
    assert table.loc["H", "diff_vs_frozen"] == pytest.approx(0.1)
    explicit = ca.compare_to_reference(no_frozen, reference_group="B").set_index("group_hash")
    assert explicit.loc["B", "reference"] == "(reference)"
    assert explicit.loc["H", "diff_vs_frozen"] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="no rows"):
        ca.compare_to_reference(no_frozen, reference_group="nope")
    with pytest.raises(KeyError, match="ndcg_at_10"):
        ca.compare_to_reference(no_frozen.drop(columns="ndcg_at_10"))


def _runs_frame():
    rows = []
    specs = [("F", "frozen", "frozen/minilm", "constant", np.nan, 0.50, 0.52),
             ("B", "baseline", "baseline", "constant", np.nan, 0.50, 0.51),
             ("O", "offline", "offline/mpnet/procrustes", "constant", np.nan, 0.54, 0.53),
             ("H1", "hybrid", "hybrid/mpnet/constant:0.25/procrustes", "constant", 0.25,
              0.51, 0.56),
             ("H2", "hybrid", "hybrid/mpnet/constant:0.75/procrustes", "constant", 0.75,
              0.55, 0.54)]
    for group, mode, label, schedule, weight, test, val in specs:
        for seed in (0, 1, 2):
            rows.append({"run_id": f"{group}-{seed}", "group_hash": group, "mode": mode,
                         "config_label": label, "teacher": "mpnet", "projection": "procrustes",
                         "student": "minilm", "dataset": "toy", "schedule": schedule,
                         "weight": weight, "seed": seed,
                         "metrics.ndcg_at_10": test + 0.01 * seed,
                         "metrics.val_ndcg_at_10": val + 0.01 * seed})
    return pd.DataFrame(rows)


def test_select_on_validation_never_looks_at_test():
    runs = _runs_frame()
    choice = ca.select_on_validation(runs)
    # H2 has the best test figure, H1 the best validation figure
    assert choice["group_hash"] == "H1"
    assert choice["val_mean"] == pytest.approx(0.57)
    # every mode is a candidate, the frozen student included (its win would mean "no change")
    assert choice["n_seeds"] == 3 and choice["n_candidates"] == 5
    assert ca.select_on_validation(runs, modes=("offline",))["group_hash"] == "O"
    frozen_best = runs.assign(**{"metrics.val_ndcg_at_10": np.where(
        runs["mode"] == "frozen", 0.9, runs["metrics.val_ndcg_at_10"])})
    assert ca.select_on_validation(frozen_best)["group_hash"] == "F"
    # a costlier query encoder is no candidate: the teacher run as a frozen student
    teacher = runs[runs["group_hash"] == "F"].assign(
        group_hash="T", student="mpnet", **{"metrics.val_ndcg_at_10": 0.95})
    with_teacher = pd.concat([runs, teacher], ignore_index=True)
    assert ca.select_on_validation(with_teacher)["group_hash"] == "H1"
    assert ca.select_on_validation(with_teacher, student="mpnet")["group_hash"] == "T"
    assert ca.select_on_validation(runs, modes=("nonexistent",)) is None
    with pytest.raises(ValueError, match="validation"):
        ca.select_on_validation(runs, metric="ndcg_at_10")


def test_results_markdown_is_honest_when_nothing_is_significant(toy_per_query):
    flat = toy_per_query[toy_per_query["group_hash"] != "H"]
    table = ca.compare_to_reference(flat)
    text = ca.results_markdown(table, None, title="Toy")
    assert text.startswith("# Toy")
    assert "on this collection only effects larger than the MDE can be significant" in text
    assert f"{table.iloc[1]['mde_80']:.4f}" in text
    assert "Every configuration stays >= 0.97 x its reference" in text
    assert "Nothing was chosen" in text


def test_results_markdown_reports_significance_selection_and_floor(toy_per_query):
    worse = toy_per_query.copy()
    worse.loc[worse["group_hash"] == "B", "ndcg_at_10"] *= 0.9
    table = ca.compare_to_reference(worse)
    answer = {"n_candidates": 3, "nothing_to_choose": False, "ndcg_mean": 0.6123,
              "ci_low": 0.58, "ci_high": 0.64, "n_queries": 40, "n_seeds": 2,
              "modal_choice": "hybrid/mpnet/constant:0.5/procrustes", "agreeing": 3,
              "n_choices": 4, "distinct_choices": 2, "reference": "frozen/minilm",
              "reference_mean": 0.55, "n_paired": 40, "diff": 0.0623, "diff_ci_low": 0.01,
              "diff_ci_high": 0.11, "p_ttest": 0.0123, "p_permutation": 0.0125,
              "diff_seed_sd": 0.0, "seed_sd": 0.002, "best_on_test": 0.62,
              "regret_ci_low": -0.003, "regret_ci_high": 0.018, "tied": True,
              "best_on_test_label": "hybrid/mpnet/constant:0.5/procrustes", "regret": 0.0077,
              "choices": [{"seed": s, "fold": f, "group_hash": "H", "config_label": "hyb"}
                          for s in (0, 1) for f in (0, 1)], "versus": []}
    text = ca.results_markdown(table, answer)
    assert "is significantly better than `frozen/minilm`" in text
    assert "is significantly worse than `frozen/minilm`" in text
    assert "pooled test NDCG@10 0.6123 [95% CI 0.5800, 0.6400] over 40 queries" in text
    assert "+0.0623 [+0.0100, +0.1100], p = 0.0123 (one paired t-test over 40 queries; " \
        "paired randomization test p = 0.0125; no multiplicity correction" in text
    assert "the difference's sd over seeds 0.0000" in text and "p (seeds)" not in text
    assert "tied within noise" in text
    assert "was chosen in 3 of 4 (seed, fold) cells" in text and "regret" in text
    assert "Not every configuration stays >= 0.97 x its reference: `baseline` (0.900)" in text
    for label in table["config_label"]:
        assert f"`{label}`" in text


def test_figures_from_frames_and_missing_modes(tmp_path):
    runs = _runs_frame()
    fig = ca.plot_ndcg_vs_weight(runs)
    assert fig is not None
    assert ca.save_figure(fig, tmp_path / "w.png").stat().st_size > 1000
    assert ca.plot_ndcg_vs_weight(runs[runs["mode"] != "hybrid"]) is None
    history = pd.DataFrame([{"run_id": r, "step": s, "value": 0.5 + 0.01 * s}
                            for r in runs["run_id"] for s in range(3)])
    assert ca.plot_ndcg_per_cycle(history, runs) is not None
    assert ca.plot_ndcg_per_cycle(history.iloc[0:0], runs) is None


# --------------------------------------------------------------------------------------------
# A real MLflow store and the notebook
# --------------------------------------------------------------------------------------------

QUERIES = [f"q{i}" for i in range(1, 31)]
CYCLES = 3
FULL = [  # (mode, teacher, schedule, weight, effect on test NDCG@10, effect on validation)
    ("frozen", "minilm", "constant", 0.5, 0.0, 0.0),
    ("baseline", "minilm", "constant", 0.5, -0.005, -0.004),
    ("offline", "mpnet", "constant", 0.5, 0.01, 0.012),
    ("hybrid", "mpnet", "constant", 0.25, 0.02, 0.015),
    ("hybrid", "mpnet", "constant", 0.5, 0.06, 0.05),
    ("hybrid", "mpnet", "constant", 0.75, 0.03, 0.02),
    ("hybrid", "mpnet", "cosine", 0.5, 0.025, 0.02),
]


def _label(mode, teacher, schedule, weight):
    parts = [mode]
    if mode == "frozen":
        parts.append("all-MiniLM-L6-v2")
    if mode in ("offline", "hybrid"):
        parts.append(teacher)
    if mode == "hybrid":
        parts.append(f"constant:{weight:g}" if schedule == "constant"
                     else f"{schedule}:0->{weight:g}")
    if mode in ("offline", "hybrid"):
        parts.append("procrustes")
    return "/".join(parts)


def _log_study(uri, client, experiment, arms, seeds, tmp, validation=True):
    from chelation import job_files, tracking

    exp_id = client.create_experiment(experiment, artifact_location=str(tmp / "artifacts"))
    parent = tracking.start_parent_run(uri, exp_id, "sweep", {"study": experiment})
    difficulty = np.random.default_rng(123).uniform(0.1, 0.8, len(QUERIES))
    for mode, teacher, schedule, weight, effect, val_effect in arms:
        label = _label(mode, teacher, schedule, weight)
        group = "g" + hashlib.sha256(label.encode()).hexdigest()[:12]
        for seed in seeds:
            params = {"training.mode": mode, "weight.value": weight, "weight.schedule": schedule,
                      "weight.start": 0.0, "weight.end": weight, "teacher.name": teacher,
                      "teacher.projection": "procrustes",
                      "student.model": "sentence-transformers/all-MiniLM-L6-v2", "seed": seed,
                      "cycles": CYCLES, "protocol": "kfold", "folds": 3,
                      "selection.method": "inner"}
            tags = {"mode": mode, "teacher": teacher,
                    "student": "sentence-transformers/all-MiniLM-L6-v2", "dataset": "toy",
                    "seed": str(seed), "schedule": schedule, "projection": "procrustes",
                    "protocol": "kfold", "config_hash": f"{group}-{seed}", "group_hash": group,
                    "config_label": label, "fallback": "none", "git_commit": "abc123"}
            run = tracking.JobRun(uri, exp_id, f"{label}/seed{seed}", params, tags, parent)
            rng = np.random.default_rng([seed, len(label)])
            rows, selection = [], []
            fold_of = {q: (i + seed) % 3 for i, q in enumerate(QUERIES)}  # a seed draws folds
            for cycle in range(CYCLES + 1):
                gain = effect * cycle / CYCLES
                noise = 0 if mode == "frozen" or cycle == 0 else rng.normal(0, 0.02, len(QUERIES))
                scores = np.clip(difficulty + gain + noise, 0, 1)
                rows += [(cycle, q, float(s), fold_of[q])
                         for q, s in zip(QUERIES, scores, strict=True)]
                # each fold chooses on its training side (here the validation slice is all of
                # it): the validation effect, never a test query's score
                if validation or mode == "frozen":
                    val = difficulty + val_effect * cycle / CYCLES + 0.003 * seed
                    selection += [(cycle, f, q, float(v)) for f in range(3)
                                  for q, v in zip(QUERIES, val, strict=True) if fold_of[q] != f]
                run.log_metrics({
                    "ndcg_at_10": scores.mean(), "ndcg_at_10_std": scores.std(),
                    "recall_at_100": min(1.0, scores.mean() + 0.3),
                    "val_ndcg_at_10": (0.45 + val_effect * cycle / CYCLES + 0.003 * seed
                                       if validation else math.nan),
                    "query_time_s": 0.8, "sediment_time_s": 0.0 if cycle == 0 else 1.5,
                    "eval_time_s": 0.2, "n_targets": 0 if cycle == 0 else 40,
                    "teacher_weight": weight if mode == "hybrid" else float("nan"),
                    "rollback": 0}, cycle)
            run.log_metrics({"total_time_s": 12.0, "encode_time_s": 3.0, "n_encoded": 1430}, 0)
            run.log_artifact(job_files.write_per_query_table(tmp / "per_query_ndcg.csv", rows))
            run.log_artifact(job_files.write_selection_table(tmp / "selection_ndcg.csv",
                                                            selection))
            run.set_tags({"fallback": "none"})
            run.finish()
    # A failed job: must not be analysed.
    failed = tracking.JobRun(uri, exp_id, "failed", {"training.mode": "hybrid"},
                             {"mode": "hybrid", "config_label": "hybrid/failed",
                              "group_hash": "gfailed", "seed": "0"}, parent)
    failed.log_metrics({"ndcg_at_10": 0.99}, 1)
    failed.finish("FAILED")
    tracking.end_run(uri, parent)
    return exp_id


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from mlflow.tracking import MlflowClient

    tmp = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    client = MlflowClient(uri)
    _log_study(uri, client, "full", FULL, (0, 1, 2), tmp)
    no_hybrid = [arm for arm in FULL if arm[0] != "hybrid"]
    _log_study(uri, client, "no-hybrid", no_hybrid, (0, 1), tmp)
    # sweeps of one mode and one seed, with and without validation queries
    _log_study(uri, client, "one-arm", FULL[4:5], (0,), tmp)
    _log_study(uri, client, "no-validation", FULL[4:5], (0,), tmp, validation=False)
    return uri


def test_loaders_read_the_store(store):
    runs = ca.load_runs(store, "full")
    assert len(runs) == len(FULL) * 3  # neither the parent nor the failed run
    assert set(runs["mode"]) == {"frozen", "baseline", "offline", "hybrid"}
    assert runs["seed"].tolist().count(2) == len(FULL)
    assert runs["weight"].notna().all()
    assert runs["metrics.ndcg_at_10"].notna().all()
    assert "params.weight.schedule" in runs and "tags.git_commit" in runs
    with pytest.raises(ValueError, match="does not exist"):
        ca.load_runs(store, "missing")

    some = runs["run_id"].head(2).tolist()
    history = ca.metric_history(store, some, "ndcg_at_10")
    assert list(history.columns) == ["run_id", "step", "value"]
    assert len(history) == 2 * (CYCLES + 1)
    # the latest metric is the final cycle's
    last = history[history["step"] == CYCLES].set_index("run_id")["value"]
    assert last[some[0]] == pytest.approx(runs.set_index("run_id").loc[some[0],
                                                                       "metrics.ndcg_at_10"])

    table = ca.per_query_table(store, some[0])
    assert list(table.columns) == ["run_id", "cycle", "query_id", "ndcg_at_10", "fold"]
    assert len(table) == len(QUERIES) * (CYCLES + 1)
    assert table["query_id"].map(type).eq(str).all()

    per_query = ca.load_per_query(store, runs)
    comparison = ca.compare_to_reference(per_query).set_index("config_label")
    best = comparison.loc["hybrid/mpnet/constant:0.5/procrustes"]
    assert best["diff_vs_frozen"] == pytest.approx(0.06, abs=0.01)
    assert best["p_ttest"] < 0.05 and best["n_seeds"] == 3 and best["n_queries"] == len(QUERIES)
    choice = ca.select_on_validation(runs)
    assert choice["config_label"] == "hybrid/mpnet/constant:0.5/procrustes"


def _parent(store, experiment):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store)
    exp = client.get_experiment_by_name(experiment)
    (parent,) = client.search_runs([exp.experiment_id], "tags.`chelation.role` = 'sweep'")
    return client, parent.info.run_id


def test_the_sweep_summary_is_the_nested_choice_and_its_test_interval(store, tmp_path):
    from experiments.callbacks import log_sweep_summary, sweep_jobs

    client, parent = _parent(store, "full")
    summary = log_sweep_summary(store, "full", parent, sweep_jobs(tmp_path), "the table")
    chosen = "hybrid/mpnet/constant:0.5/procrustes"  # the largest validation effect in FULL
    run = client.get_run(parent)
    # every (seed, fold) chose it: 3 seeds x 3 folds
    assert run.data.tags["sweep_chosen_folds"].startswith("9 of 9 (seed, fold) choices")
    assert run.data.metrics["sweep_chosen_agreement"] == 1.0
    assert run.data.tags["sweep_chosen_config"] == chosen == summary.tags["sweep_chosen_config"]
    assert run.data.tags["sweep_chosen_reference"] == "frozen/all-MiniLM-L6-v2"
    assert run.data.metrics == pytest.approx(summary.metrics)
    assert run.data.metrics["sweep_jobs"] == len(FULL) * 3
    # recomputed here: final cycle, each query averaged over the 3 seeds, t-interval over queries
    runs = ca.load_runs(store, "full")
    final = ca.load_per_query(store, runs[runs["config_label"].isin(
        [chosen, "frozen/all-MiniLM-L6-v2"])]).query("cycle == @CYCLES")
    per_query = final.pivot_table("ndcg_at_10", "query_id", "mode")
    low, high = stats.t.interval(0.95, len(QUERIES) - 1, per_query["hybrid"].mean(),
                                 stats.sem(per_query["hybrid"]))
    m = run.data.metrics
    assert (m["sweep_chosen_test_ndcg_at_10"], m["sweep_chosen_test_ndcg_at_10_ci_low"],
            m["sweep_chosen_test_ndcg_at_10_ci_high"]) == pytest.approx(
        (per_query["hybrid"].mean(), low, high))
    diff = per_query["hybrid"] - per_query["frozen"]
    assert m["sweep_chosen_diff"] == pytest.approx(diff.mean())
    assert m["sweep_chosen_diff_ci_low"] < m["sweep_chosen_diff"] < m["sweep_chosen_diff_ci_high"]
    assert 0 < m["sweep_chosen_diff_p"] < 0.05 and m["sweep_chosen_diff_seed_sd"] >= 0
    assert m["sweep_chosen_regret"] == pytest.approx(0.0, abs=1e-12)  # it is the best on test
    table = client.download_artifacts(parent, "sweep_table.txt", str(tmp_path))
    assert Path(table).read_text() == "the table"
    assert summary.line().startswith(f"chosen inside each fold: {chosen} (9 of 9 ")
    assert "vs frozen/all-MiniLM-L6-v2 (p < 0.0001)" in summary.line()  # the p beside its interval


def test_a_sweep_of_one_mode_and_one_seed_is_compared_with_its_own_cycle_zero(store):
    from chelation.analysis.sweep import sweep_summary

    _, parent = _parent(store, "one-arm")
    summary = sweep_summary(store, "one-arm", parent)
    assert summary.tags["sweep_chosen_config"] == "hybrid/mpnet/constant:0.5/procrustes"
    # one configuration: nothing to choose among, and no regret or agreement to report
    assert summary.tags["sweep_chosen_on"].startswith("nothing to choose")
    assert summary.line().startswith("one configuration, nothing to choose: hybrid/")
    assert "sweep_chosen_regret" not in summary.metrics
    assert summary.tags["sweep_chosen_reference"] == "cycle 0 (same runs)"
    low, high = (summary.metrics[f"sweep_chosen_test_ndcg_at_10_ci_{s}"] for s in ("low", "high"))
    # the interval is over queries: one seed will do
    assert low < summary.metrics["sweep_chosen_test_ndcg_at_10"] < high
    assert summary.metrics["sweep_chosen_seeds"] == 1


def test_a_sweep_without_validation_says_why_nothing_was_chosen(store):
    from chelation.analysis.sweep import sweep_summary

    _, parent = _parent(store, "no-validation")
    summary = sweep_summary(store, "no-validation", parent)
    assert summary.tags["sweep_chosen_config"].startswith("none: no run logged selection scores")
    assert summary.metrics == {"sweep_jobs": 1, "sweep_configurations": 1}
    assert sweep_summary(store, "no-validation", "no-such-parent").tags["sweep_chosen_config"] == \
        "none: no job of this sweep finished"


def test_a_resumed_sweep_stands_for_the_runs_its_jobs_skipped(store):
    from chelation.analysis.sweep import sweep_filters, sweep_job_runs

    runs = ca.load_runs(store, "full")
    _, parent = _parent(store, "full")
    assert len(sweep_job_runs(runs, parent)) == len(runs)
    earlier = runs["config_hash"].head(2).tolist()
    assert sorted(sweep_job_runs(runs, "a-later-sweep", earlier)["config_hash"]) == \
        sorted(earlier)
    # what the sweep's summary loads: only its own runs, searched for, not the experiment's
    own = ca.load_runs(store, "full", sweep_filters(parent))
    assert sorted(own["run_id"]) == sorted(sweep_job_runs(runs, parent)["run_id"])
    skipped = ca.load_runs(store, "full", sweep_filters("a-later-sweep", earlier))
    assert sorted(skipped["config_hash"]) == sorted(earlier)
    assert sweep_filters(parent, [f"h{i}" for i in range(51)]) == ("",)


@pytest.fixture(scope="module")
def kernel_name():
    """A kernel that runs this interpreter: the 'python3' spec when it launches `python` (which
    jupyter_client maps to sys.executable) or this interpreter, else one installed into the venv."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        argv0 = KernelSpecManager().get_kernel_spec("python3").argv[0]
    except NoSuchKernel:
        argv0 = None
    if argv0 in {"python", "python3", sys.executable}:
        return "python3"
    subprocess.run([sys.executable, "-m", "ipykernel", "install", "--sys-prefix",
                    "--name", "chelation-venv"], check=True, capture_output=True)
    return "chelation-venv"


def _execute_notebook(tmp_path, kernel, **params):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    cell.source = "\n".join(f"{k} = {v!r}" for k, v in params.items())
    NotebookClient(nb, kernel_name=kernel, timeout=300,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    return nb


def _outputs_text(nb):
    return "\n".join(out.get("text", "") for c in nb.cells if c.cell_type == "code"
                     for out in c.get("outputs", []))


@pytest.mark.slow
def test_notebook_runs_headless_on_the_store(store, kernel_name, tmp_path):
    out, report = tmp_path / "figures", tmp_path / "report" / "results.md"
    _execute_notebook(tmp_path, kernel_name, TRACKING_URI=store, EXPERIMENT="full",
                      OUTPUT_DIR=str(out), RESULTS_MD=str(report), POST_HOC=None)
    for name in ("ndcg_vs_weight.png", "ndcg_per_cycle.png", "forest.png"):
        png = out / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    text = report.read_text()
    for arm in FULL:
        assert f"`{_label(*arm[:4])}`" in text
    assert "## The answer: a configuration chosen inside each fold" in text
    assert "`hybrid-2` was chosen in" in text  # the short label; the legend names it in full
    assert "| `hybrid-2` | `hybrid/mpnet/constant:0.5/procrustes` |" in text
    assert "hybrid/failed" not in text
    assert "0.97 x its reference" in text
    # the store's other studies on the same (toy, kfold) queries: one family of answers
    assert "This store holds 4 studies scored on the same test queries" in text
    assert "Post hoc" not in text


@pytest.mark.slow
def test_notebook_copes_without_hybrid_runs(store, kernel_name, tmp_path):
    out, report = tmp_path / "figures", tmp_path / "results.md"
    nb = _execute_notebook(tmp_path, kernel_name, TRACKING_URI=store, EXPERIMENT="no-hybrid",
                           OUTPUT_DIR=str(out), RESULTS_MD=str(report),
                           POST_HOC="the arms without hybrid, chosen after the full grid")
    assert "No hybrid runs with a constant schedule" in _outputs_text(nb)
    assert not (out / "ndcg_vs_weight.png").exists()
    assert (out / "ndcg_per_cycle.png").stat().st_size > 5000
    text = report.read_text()
    for label in ("frozen/all-MiniLM-L6-v2", "baseline", "offline/mpnet/procrustes"):
        assert f"`{label}`" in text
    assert "hybrid/" not in text
    assert "**Post hoc.**" in text and "chosen after the full grid" in text


def test_run_summary_skips_missing_metrics():
    runs = _runs_frame().drop(columns="metrics.val_ndcg_at_10")
    summary = ca.run_summary(runs)
    assert list(summary.columns) == ["seeds", "ndcg_at_10"]
    assert summary.loc[("frozen", "frozen/minilm"), "seeds"] == 3


def test_frozen_models_table_pairs_each_frozen_model_with_the_trained_student():
    rows = []
    queries = [f"q{i}" for i in range(30)]
    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 0.6, size=len(queries))
    arms = [("frozen", "minilm", "g-minilm", 0.0), ("frozen", "mpnet", "g-mpnet", 0.05),
            ("hybrid", "minilm", "g-hybrid", 0.01)]
    for mode, student, group, shift in arms:
        for seed in (0, 1):
            for q, b in zip(queries, base, strict=True):
                rows.append({"group_hash": group, "seed": seed, "cycle": 1, "query_id": q,
                             "ndcg_at_10": b + shift + rng.normal(0, 0.01), "mode": mode,
                             "student": student, "config_label": f"{mode}/{student}"})
    table = ca.frozen_models_table(pd.DataFrame(rows))
    assert set(table["student"]) == {"minilm", "mpnet"}
    mpnet = table[table["student"] == "mpnet"].iloc[0]
    assert mpnet["reference"] == "frozen/minilm"
    assert mpnet["diff_vs_frozen"] == pytest.approx(0.05, abs=0.01)
    assert mpnet["p_ttest"] < 0.001
    text = ca.frozen_models_markdown(table)
    assert "`mpnet`" in text and "the frozen student" in text
    # one frozen model: the section still stands, with the student as its reference row
    alone = ca.frozen_models_table(pd.DataFrame(rows[:60]))
    assert alone["reference"].tolist() == ["(reference)"]
    assert "the only frozen model" in ca.frozen_models_markdown(alone)


def test_labels_shared_by_different_configurations_get_their_differing_params():
    runs = pd.DataFrame({
        "config_label": ["offline/mpnet", "offline/mpnet", "offline/mpnet", "baseline"],
        "group_hash": ["a", "a", "b", "c"],
        "params.training.lr": ["0.001", "0.001", "0.003", "0.001"],
        "params.seed": ["0", "1", "0", "0"],
        "params.training.epochs": ["10", "10", "10", "10"],
    })
    labels = ca.disambiguated_labels(runs)
    assert list(labels) == ["offline/mpnet [training.lr=0.001]",
                            "offline/mpnet [training.lr=0.001]",
                            "offline/mpnet [training.lr=0.003]", "baseline"]


def test_relative_sqlite_uris_are_made_absolute_for_the_notebook(tmp_path, monkeypatch) -> None:
    from experiments.analyse import absolute_sqlite

    monkeypatch.chdir(tmp_path)
    assert absolute_sqlite("sqlite:///mlflow.db") == f"sqlite:///{tmp_path}/mlflow.db"
    assert absolute_sqlite("sqlite:////abs/m.db") == "sqlite:////abs/m.db"
    assert absolute_sqlite("postgresql://u@h/db") == "postgresql://u@h/db"


def test_short_labels_number_configurations_within_their_mode(store):
    runs = ca.load_runs(store, "full")
    legend = ca.label_legend(runs)
    assert legend["group_hash"].is_unique and len(legend) == len(FULL)
    assert legend["short_label"].tolist() == ["frozen-1", "baseline-1", "offline-1", "hybrid-1",
                                              "hybrid-2", "hybrid-3", "hybrid-4"]
    by_label = legend.set_index("config_label")
    # hybrid configurations differ in their weight; frozen ignores the weight, so it is not shown
    assert "weight.value=0.75" in by_label.loc["hybrid/mpnet/constant:0.75/procrustes", "differs"]
    assert "weight" not in by_label.loc["frozen/all-MiniLM-L6-v2", "differs"]
    assert not legend["differs"].str.contains("training.mode").any()


def test_per_cycle_panels_hold_at_most_max_lines(store):
    runs = ca.load_runs(store, "full")
    history = ca.metric_history(store, runs["run_id"], "ndcg_at_10")
    legend = ca.label_legend(runs)
    fig = ca.plot_ndcg_per_cycle(history, runs, legend=legend, max_lines=3)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    # frozen, baseline, offline one panel each; five hybrid lines... four hybrid configurations
    # at three a panel make two
    assert len(visible) == 5
    assert max(len(ax.get_lines()) for ax in visible) == 3
    names = {line.get_label().split(" ")[0] for ax in visible for line in ax.get_lines()}
    assert names == set(legend["short_label"])
    assert sum("(1 of 2)" in ax.get_title() or "(2 of 2)" in ax.get_title()
               for ax in visible) == 2


def test_forest_plot_sorts_by_difference_and_draws_the_teachers_margin(store):
    runs = ca.load_runs(store, "full")
    per_query = ca.load_per_query(store, runs)
    table = ca.compare_to_reference(per_query)
    legend = ca.label_legend(runs)
    fig = ca.plot_forest(table, legend, {"teacher-x": 0.033})
    ax = fig.axes[0]
    names = [t.get_text() for t in ax.get_yticklabels()]
    compared = table[table["reference"] != "(reference)"].sort_values("diff_vs_frozen")
    short = dict(zip(legend["group_hash"], legend["short_label"], strict=True))
    assert names == [short[h] for h in compared["group_hash"]]
    assert names[-1] == "hybrid-2"  # hybrid at 0.5 has the largest effect in this study
    vertical = sorted(line.get_xdata()[0] for line in ax.get_lines()
                      if len(set(line.get_xdata())) == 1 and line.get_linestyle() != "None")
    assert 0.0 in vertical and 0.033 in vertical


def test_the_report_uses_short_labels_and_says_what_they_mean(store):
    runs = ca.load_runs(store, "full")
    per_query = ca.load_per_query(store, runs)
    table = ca.compare_to_reference(per_query)
    legend = ca.label_legend(runs)
    _, answer = ca.study_answer(runs, per_query, ca.load_selection(store, runs))
    report = ca.results_markdown(table, answer, legend=legend)
    assert "| `hybrid-2` |" in report and "| frozen-1 |" in report  # row and its reference
    assert "`hybrid/mpnet/constant:0.5/procrustes`" not in report.split("## Configurations")[0]
    row = next(line for line in report.splitlines() if line.startswith("| `hybrid-2` | `"))
    # 0.5 is the common weight among the hybrids: not listed; 0.25 is
    assert "`hybrid/mpnet/constant:0.5/procrustes`" in row and "weight.value" not in row
    row = next(line for line in report.splitlines() if line.startswith("| `hybrid-1` | `"))
    assert "weight.value=0.25" in row
    assert "`hybrid-2` was chosen in 9 of 9 (seed, fold) cells" in report


def test_a_tie_on_validation_goes_to_the_frozen_arm():
    runs = pd.DataFrame({
        "group_hash": ["b", "f", "h"], "config_label": ["baseline", "frozen/m", "hybrid/x"],
        "mode": ["baseline", "frozen", "hybrid"], "student": ["m"] * 3, "seed": [0, 0, 0],
        "metrics.val_ndcg_at_10": [0.5, 0.5, 0.5]})
    assert ca.select_on_validation(runs)["config_label"] == "frozen/m"
    runs.loc[runs["mode"] == "hybrid", "metrics.val_ndcg_at_10"] = 0.51
    assert ca.select_on_validation(runs)["config_label"] == "hybrid/x"
