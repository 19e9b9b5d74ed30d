"""The study's report in markdown: the comparison table, the choice on validation, the
frozen models."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
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


def chosen_versus_frozen(per_query_df: pd.DataFrame, selection: Mapping[str, Any] | None
                         ) -> pd.DataFrame:
    """The chosen configuration paired with every frozen model of the study (the student, and
    teachers run as frozen students): one row per frozen model, `reference` naming it."""
    if selection is None or per_query_df.empty:
        return pd.DataFrame(columns=TABLE_COLUMNS)
    chosen = per_query_df[per_query_df["group_hash"] == selection["group_hash"]]
    frozen = per_query_df[(per_query_df["mode"] == Mode.FROZEN)
                          & student_documents_only(per_query_df)]
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
                     confidence: float = 0.95, versus: pd.DataFrame | None = None,
                     legend: pd.DataFrame | None = None) -> str:
    """Markdown report of a `compare_to_reference` table and a `select_on_validation` choice;
    `versus` (from `chosen_versus_frozen`) adds the choice against each frozen model; with a
    `label_legend` configurations go by their short labels and a last section says what each
    means. One function per section below."""
    lines = [f"# {title}", ""]
    if table.empty:
        return "\n".join([*lines, "No finished job runs with per-query results.", ""])
    if legend is not None and not legend.empty:
        table, selection, versus = _short_labels(table, selection, versus, legend)
    comps = table[table["reference"] != "(reference)"]
    lines += _intro(table, comps, alpha)
    lines += _comparison_rows(table, f"{confidence:.0%}")
    lines += _chosen_section(table, selection, versus, alpha)
    lines += _significance_section(comps, alpha)
    lines += _floor_section(comps, floor)
    if legend is not None and not legend.empty:
        lines += _legend_section(legend)
    return "\n".join(lines)


def _short_labels(table: pd.DataFrame, selection: Mapping[str, Any] | None,
                  versus: pd.DataFrame | None, legend: pd.DataFrame
                  ) -> tuple[pd.DataFrame, Mapping[str, Any] | None, pd.DataFrame | None]:
    by_label = dict(zip(legend["config_label"], legend["short_label"], strict=True))
    by_hash = dict(zip(legend["group_hash"], legend["short_label"], strict=True))

    def relabel(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.copy()
        frame["config_label"] = [by_hash.get(h, label) for h, label in
                                 zip(frame["group_hash"], frame["config_label"], strict=True)]
        frame["reference"] = frame["reference"].map(lambda r: by_label.get(r, r))
        return frame

    if selection is not None:
        selection = {**selection, "config_label": by_hash.get(selection["group_hash"],
                                                              selection["config_label"])}
    return relabel(table), selection, None if versus is None else relabel(versus)


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
        "are paired per query against the reference (the frozen student unless stated); "
        f"p-values are two-sided, p (Holm) corrects the paired t-test for {len(comps)} "
        f"comparison(s); p (seeds) pairs per-seed means, so it also carries training noise; MDE is "
        f"the smallest difference a paired t-test detects with 80% power at alpha = {alpha:g}.",
        ""]
    return lines


def _comparison_rows(table: pd.DataFrame, pct: str) -> list[str]:
    lines: list[str] = []
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

    return lines


def _chosen_section(table: pd.DataFrame, selection: Mapping[str, Any] | None,
                    versus: pd.DataFrame | None, alpha: float) -> list[str]:
    lines: list[str] = []
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

    return lines


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
                         f"(Holm {_p_is(r['p_holm'])}; over seeds {_p_is(r['p_seeds'])}).")
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
    """Every frozen arm (the student, and teachers run as frozen students) paired against the
    frozen arm of the student the study trains (the student of most non-frozen runs)."""
    frozen = per_query_df[(per_query_df["mode"] == Mode.FROZEN)
                          & student_documents_only(per_query_df)]
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
