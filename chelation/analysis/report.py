"""The study's report in markdown: the comparison table, the choice on validation, the
frozen models."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from chelation.analysis.stats import (
    TABLE_COLUMNS,
    compare_to_reference,
    student_documents_only,
)
from chelation.kinds import Mode

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)

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


def results_markdown(table: pd.DataFrame, answer: Mapping[str, Any] | None = None, *,
                     title: str = "Study results", alpha: float = 0.05, floor: float = 0.97,
                     confidence: float = 0.95, frozen: pd.DataFrame | None = None,
                     legend: pd.DataFrame | None = None, family: Sequence[str] = (),
                     post_hoc: str | None = None) -> str:
    """Markdown report of a `compare_to_reference` table and the study's answer (the summary
    `chelation.analysis.nested.study_answer` gives: the configuration each fold chose on its
    training-side queries, and the procedure's pooled test figure against the frozen student);
    `frozen` (from `frozen_models_table`) adds the frozen models, teacher included; with a
    `label_legend` configurations go by their short labels and a last section says what each
    means. `family`: the studies of the store on the same test queries (this one included);
    `post_hoc`: why the candidate set was chosen after tables on these queries were read, which
    marks the answer post hoc. One function per section below."""
    lines = [f"# {title}", ""]
    if table.empty:
        return "\n".join([*lines, "No finished job runs with per-query results.", ""])
    if legend is not None and not legend.empty:
        table, answer, frozen = _short_labels(table, answer, frozen, legend)
    comps = table[table["reference"] != "(reference)"]
    lines += _intro(table, comps, alpha)
    lines += _comparison_rows(table, f"{confidence:.0%}")
    lines += _answer_section(answer, confidence)
    lines += _family_section(family, post_hoc)
    lines += _frozen_section(frozen)
    lines += _significance_section(comps, alpha)
    lines += _floor_section(comps, floor)
    if legend is not None and not legend.empty:
        lines += _legend_section(legend)
    return "\n".join(lines)


def _short_labels(table: pd.DataFrame, answer: Mapping[str, Any] | None,
                  frozen: pd.DataFrame | None, legend: pd.DataFrame
                  ) -> tuple[pd.DataFrame, Mapping[str, Any] | None, pd.DataFrame | None]:
    by_label = dict(zip(legend["config_label"], legend["short_label"], strict=True))
    by_hash = dict(zip(legend["group_hash"], legend["short_label"], strict=True))

    def relabel(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.copy()
        frame["config_label"] = [by_hash.get(h, label) for h, label in
                                 zip(frame["group_hash"], frame["config_label"], strict=True)]
        frame["reference"] = frame["reference"].map(lambda r: by_label.get(r, r))
        return frame

    if answer is not None:
        short = {**by_label, **by_hash}
        answer = {**answer,
                  "choices": [{**c, "config_label": by_hash.get(c["group_hash"],
                                                                c["config_label"])}
                              for c in answer.get("choices", [])],
                  **{k: short.get(answer[k], answer[k]) for k in
                     ("modal_choice", "best_on_test_label", "reference") if k in answer},
                  "versus": [{**v, "reference": short.get(v["reference"], v["reference"])}
                             for v in answer.get("versus", [])]}
    return relabel(table), answer, None if frozen is None else relabel(frozen)


def _legend_section(legend: pd.DataFrame) -> list[str]:
    lines = ["## Configurations", "",
             "| label | configuration | differs from the study's most common setting in |",
             "|---|---|---|"]
    lines += [f"| `{r['short_label']}` | `{r['config_label']}` | {r['differs'] or '—'} |"
              for _, r in legend.iterrows()]
    return [*lines, ""]


def _intro(table: pd.DataFrame, comps: pd.DataFrame, alpha: float) -> list[str]:
    lines: list[str] = []
    seeds = sorted({int(s) for s in table["n_seeds"].dropna()})
    lines += [
        f"{len(table)} configurations, {'/'.join(map(str, seeds))} seed(s) each; NDCG@10 at "
        "the final cycle on held-out test queries, averaged per query over seeds. Differences "
        "are paired per query against the reference (the frozen student unless stated). "
        "p (t): paired t-test over queries; p (perm.): paired randomization test of the same "
        "mean difference (each query's two scores swapped at random, 9,999 resamples); "
        "p (Wilcoxon): signed-rank test; all two-sided. p (Holm) corrects the t-test for the "
        f"grid's {len(comps)} comparison(s) a reader scans. seed sd: the standard deviation over "
        "seeds of the per-seed mean difference, how much the seed moves it (the seeds share "
        "their test queries, so no test is made over them: the inference is over queries). "
        "MDE is the smallest difference a paired t-test detects with 80% power at "
        f"alpha = {alpha:g}.",
        ""]
    return lines


def _comparison_rows(table: pd.DataFrame, pct: str) -> list[str]:
    lines: list[str] = []
    extra = [c for c in ("dataset", "student") if table[c].nunique(dropna=True) > 1]
    head = ["configuration", *extra, "seeds", "queries", f"NDCG@10 [{pct} CI]",
            f"diff vs reference [{pct} CI]", "p (t)", "p (perm.)", "p (Wilcoxon)", "seed sd",
            "p (Holm)",
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
            *(["—"] * 5 if is_ref else [_p(r["p_ttest"]), _p(r["p_permutation"]),
                                        _p(r["p_wilcoxon"]), _num(r["seed_sd"]),
                                        _p(r["p_holm"])]),
            "—" if is_ref else _num(r["mde_80"]), _num(r["ratio_to_frozen"], 3),
            "this is the reference" if is_ref else str(r["reference"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")

    return lines


def _answer_section(answer: Mapping[str, Any] | None, confidence: float) -> list[str]:
    lines = ["## The answer: a configuration chosen inside each fold", ""]
    if answer is None or "ndcg_mean" not in answer:
        why = (answer or {}).get("why", "no configuration has selection scores")
        return [*lines, f"Nothing was chosen: {why}.", ""]
    pct = f"{confidence:.0%}"
    figure = (f"test NDCG@10 {_num(answer['ndcg_mean'])} [{pct} CI {_num(answer['ci_low'])}, "
              f"{_num(answer['ci_high'])}] over {answer['n_queries']} queries "
              f"({answer['n_seeds']} seed(s))")
    if answer.get("nothing_to_choose"):
        text = (f"One configuration (`{answer.get('modal_choice', '')}`): nothing to choose "
                f"among. Its {figure}.")
        if "diff" not in answer:
            text += " It is frozen and the study has no other reference to compare it with."
    else:
        label, agreeing, cells = (answer["modal_choice"], answer["agreeing"],
                                  answer["n_choices"])
        text = (f"Each fold chose among {answer['n_candidates']} configurations (those whose "
                "queries the study's student encodes) on its own selection queries: "
                "training-side queries, the same for every candidate, none of which trained it "
                "or decided one of its updates (the guard has a slice of its own), never a "
                "test query; an exact tie went to the cheaper configuration (no training before "
                "training, then the lower teacher share). Each fold's test queries were then "
                f"scored by its choice. The procedure's pooled {figure}, spread over seeds "
                f"(sd of the per-seed means) {_num(answer.get('seed_sd'))}. `{label}` was chosen "
                f"in {agreeing} of {cells} (seed, fold) cells ({answer['distinct_choices']} "
                "distinct choice(s)).")
    lines += [text, ""]
    if "diff" in answer:
        lines += [f"- against `{answer['reference']}` ({_num(answer['reference_mean'])}): "
                  f"{_signed(answer['diff'])} [{_signed(answer['diff_ci_low'])}, "
                  f"{_signed(answer['diff_ci_high'])}], {_p_is(answer['p_ttest'])} (one paired "
                  f"t-test over {answer['n_paired']} queries; paired randomization test "
                  f"{_p_is(answer.get('p_permutation'))}; no multiplicity correction, since no "
                  "test query entered the choice; the difference's sd over seeds "
                  f"{_num(answer.get('diff_seed_sd'))})"]
    for v in answer.get("versus", []):
        lines.append(f"- against `{v['reference']}` ({_num(v['reference_mean'])}): "
                     f"{_signed(v['diff'])} [{_signed(v['diff_ci_low'])}, "
                     f"{_signed(v['diff_ci_high'])}], {_p_is(v['p_ttest'])} (paired t over "
                     f"{v['n_paired']} queries; randomization {_p_is(v.get('p_permutation'))}; "
                     f"sd over seeds {_num(v.get('diff_seed_sd'))})")
    if "regret" in answer and not answer.get("nothing_to_choose"):
        lines.append(f"- regret: the best configuration on test, `{answer['best_on_test_label']}` "
                     f"({_num(answer['best_on_test'])}), minus the procedure: "
                     f"{_signed(answer['regret'])} [{_signed(answer.get('regret_ci_low'))}, "
                     f"{_signed(answer.get('regret_ci_high'))}] (what choosing without the test "
                     "queries cost; the best on test is known only after the fact"
                     + (": the choice is the best on test)" if answer["regret"] <= 1e-12 else
                        "; the interval holds 0: the choice and the best are tied within noise)"
                        if answer.get("tied") else ")"))
    choices = answer.get("choices") or []
    if choices and not answer.get("nothing_to_choose"):
        folds = sorted({c["fold"] for c in choices})
        lines += ["", "| seed | " + " | ".join(f"fold {f}" for f in folds) + " |",
                  "|---|" + "---|" * len(folds)]
        for seed in sorted({c["seed"] for c in choices}):
            by_fold = {c["fold"]: c["config_label"] for c in choices if c["seed"] == seed}
            lines.append(f"| {seed} | " + " | ".join(f"`{by_fold[f]}`" if f in by_fold else "—"
                                                     for f in folds) + " |")
    return [*lines, ""]


def _family_section(family: Sequence[str], post_hoc: str | None) -> list[str]:
    lines: list[str] = []
    if post_hoc:
        lines += [f"**Post hoc.** This study's candidate set was chosen after results on the "
                  f"same test queries had been read ({post_hoc}). Its answer is exploratory: "
                  "its interval and p-value do not hold as a confirmatory test.", ""]
    if len(family) > 1:
        lines += [f"This store holds {len(family)} studies scored on the same test queries "
                  f"({', '.join(f'`{name}`' for name in family)}): each answer computed on them "
                  "is one of a family of as many comparisons, and only an answer whose "
                  "candidate set was declared before any of them was read is free of the "
                  "others.", ""]
    return lines


def _frozen_section(frozen: pd.DataFrame | None) -> list[str]:
    if frozen is None or frozen.empty:
        return []
    return [frozen_models_markdown(frozen)]


def _significance_section(comps: pd.DataFrame, alpha: float) -> list[str]:
    lines: list[str] = []
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
                         f"(Holm {_p_is(r['p_holm'])}; sd over seeds {_num(r['seed_sd'])}).")
        rest = len(comps) - len(sig)
        if rest:
            tail = (f"The other {rest} comparison(s) are not significant; on this collection "
                    "only effects larger than the MDE can be significant "
                    f"({mde_text} NDCG@10 at 80% power).")
        else:
            tail = (f"Every comparison is significant; MDE at 80% power: {mde_text} NDCG@10.")
        lines += ["", tail, ""]

    return lines


def _floor_section(comps: pd.DataFrame, floor: float) -> list[str]:
    lines: list[str] = []
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
    return lines


def frozen_models_table(per_query_df: pd.DataFrame) -> pd.DataFrame:
    """Every frozen model with its own documents (the student, and teachers run as frozen
    students), each paired against the frozen arm of the study's student (the student of most
    rows); that arm is the reference row. Empty when the study has no such frozen arm."""
    frozen = per_query_df[(per_query_df["mode"] == Mode.FROZEN)
                          & student_documents_only(per_query_df)]
    if frozen.empty or per_query_df["student"].dropna().empty:
        return pd.DataFrame(columns=TABLE_COLUMNS)
    student = per_query_df["student"].mode().iloc[0]
    reference = frozen.loc[frozen["student"] == student, "group_hash"]
    if reference.empty:
        return pd.DataFrame(columns=TABLE_COLUMNS)
    return compare_to_reference(frozen, reference_group=reference.iloc[0])


def frozen_models_markdown(table: pd.DataFrame) -> str:
    """The frozen references section (see `frozen_models_table`): each frozen model against
    the frozen student, with interval and p; the student's own row is the reference."""
    if table.empty:
        return ""
    lines = ["## The models frozen, for reference", "",
             "| model | NDCG@10 [95% CI] | diff vs the frozen student [95% CI] | p (t) "
             "| p (perm.) | p (Wilcoxon) |", "|---|---|---|---|---|---|"]
    for _, r in table.iterrows():
        is_ref = r["reference"] == "(reference)"
        lines.append(
            f"| `{r['student']}` | {_num(r['ndcg_mean'])} [{_num(r['ci_low'])}, "
            f"{_num(r['ci_high'])}] | "
            + ("the frozen student (the reference) |" if is_ref else
               f"{_signed(r['diff_vs_frozen'])} [{_signed(r['diff_ci_low'])}, "
               f"{_signed(r['diff_ci_high'])}] |")
            + (" — | — | — |" if is_ref else
               f" {_p(r['p_ttest'])} | {_p(r['p_permutation'])} | {_p(r['p_wilcoxon'])} |"))
    if len(table) < 2:
        lines += ["", "The frozen student is the only frozen model in this study."]
    return "\n".join(lines) + "\n"
