"""The study's figures (matplotlib's object API: no pyplot state, any backend)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from chelation.analysis.stats import first_value
from chelation.data.dataset import natural_key
from chelation.kinds import MODES, Mode, Schedule

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

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


def _mode_linestyle(mode: str) -> str:
    styles = ("-", "--", ":", "-.")
    return styles[MODES.index(mode) % len(styles)] if mode in MODES else "-"


def _order(frame: pd.DataFrame) -> tuple[int, str]:
    mode = first_value(frame, "mode")
    rank = MODES.index(mode) if mode in MODES else len(MODES)
    return rank, str(first_value(frame, "config_label"))


def plot_ndcg_vs_weight(runs: pd.DataFrame, metric: str = "ndcg_at_10") -> Figure | None:
    """Final-cycle `metric` against the constant teacher weight of hybrid runs (mean and +-1 sd
    over seeds, each seed a dot), one line per teacher/projection; every other configuration
    (frozen, baseline, offline, non-constant hybrid schedules) is a horizontal reference.
    None when the study has no hybrid run with a constant schedule."""
    column = f"metrics.{metric}"
    if runs.empty or column not in runs:
        return None
    is_curve = (runs["mode"] == Mode.HYBRID) & (runs["schedule"] == Schedule.CONSTANT) & \
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
        others = part[[not Mode(m).teacher_targets for m in part["mode"]]]
        for _, ref in sorted(others.groupby("group_hash"), key=lambda kv: _order(kv[1])):
            values = ref[column].dropna()
            if values.empty:
                continue
            mode = first_value(ref, "mode")
            line = ax.axhline(values.mean(), linestyle=_mode_linestyle(mode), linewidth=1.2,
                              color="black" if mode == Mode.FROZEN else next(colours),
                              label=f"{first_value(ref, 'config_label')} (n={len(values)})")
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


MAX_LINES_PER_PANEL = 8


def _short(legend: pd.DataFrame | None) -> dict[str, str]:
    return {} if legend is None else dict(zip(legend["group_hash"], legend["short_label"],
                                               strict=True))


def plot_ndcg_per_cycle(history: pd.DataFrame, runs: pd.DataFrame, metric: str = "ndcg_at_10",
                        legend: pd.DataFrame | None = None,
                        max_lines: int = MAX_LINES_PER_PANEL) -> Figure | None:
    """`metric` per cycle (from `metric_history`): mean over seeds with a +-1 sd band, one panel
    per (dataset, student, mode) and at most `max_lines` configurations per panel (a mode with
    more fills several), laid out three panels a row. Configurations are named by their short
    label when a `label_legend` is given. None when there is no history."""
    if history.empty:
        return None
    meta = runs[["run_id", "group_hash", "config_label", "mode", "dataset", "student", "seed"]]
    frame = history.merge(meta, on="run_id", how="inner")
    if frame.empty:
        return None
    short = _short(legend)
    frame["name"] = frame["group_hash"].map(short).fillna(frame["config_label"])
    panels = []
    for key, part in _panels(frame):
        for mode, by_mode in sorted(part.groupby("mode"), key=lambda kv: _order(kv[1])):
            names = sorted(by_mode["name"].unique(), key=natural_key)
            chunks = [names[i:i + max_lines] for i in range(0, len(names), max_lines)]
            for i, chunk in enumerate(chunks):
                suffix = f" ({i + 1} of {len(chunks)})" if len(chunks) > 1 else ""
                panels.append(((*key, f"{mode}{suffix}"), by_mode[by_mode["name"].isin(chunk)]))
    from matplotlib.figure import Figure

    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig = Figure(figsize=(5.2 * cols, 4.0 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    for ax, (key, part) in zip(axes, panels, strict=False):
        for name, conf in sorted(part.groupby("name"), key=lambda kv: natural_key(kv[0])):
            agg = conf.groupby("step")["value"].agg(["mean", "std"]).sort_index()
            style = "--" if first_value(conf, "mode") == Mode.FROZEN else "-"
            drawn = ax.plot(agg.index, agg["mean"], linestyle=style, marker=".",
                            label=f"{name} (n={conf['seed'].nunique()})")[0]
            if agg["std"].notna().any():
                ax.fill_between(agg.index, agg["mean"] - agg["std"].fillna(0),
                                agg["mean"] + agg["std"].fillna(0), color=drawn.get_color(),
                                alpha=0.12)
        ax.set_xlabel("cycle (0 = before any training)")
        ax.set_ylabel(f"{metric} (test)")
        ax.set_title(_panel_title(key), fontsize=10)
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=8, loc="best")
    return fig


def teacher_margins(frozen_models: pd.DataFrame) -> dict[str, float]:
    """How far each other model run frozen (a teacher as its own retriever) is from the frozen
    student, from `frozen_models_table`: the margins a forest plot is read against."""
    if frozen_models.empty:
        return {}
    other = frozen_models[(frozen_models["reference"] != "(reference)")
                          & ~frozen_models["config_label"].str.contains("/docs:", regex=False)]
    return {str(r["student"]).rstrip("/").split("/")[-1]: float(r["diff_vs_frozen"])
            for _, r in other.iterrows() if pd.notna(r["diff_vs_frozen"])}


def plot_forest(table: pd.DataFrame, legend: pd.DataFrame | None = None,
                margins: Mapping[str, float] | None = None) -> Figure | None:
    """Each configuration's difference from its reference (the frozen student) with its 95%
    interval, sorted, blue where significant after Holm; 0 and each frozen teacher's margin
    (`teacher_margins`) drawn as vertical lines. From a `compare_to_reference` table; None when
    it has no comparison."""
    rows = table[(table["reference"] != "(reference)") & table["diff_vs_frozen"].notna()]
    if rows.empty:
        return None
    rows = rows.sort_values("diff_vs_frozen")
    short = _short(legend)
    names = [short.get(h, label) for h, label in zip(rows["group_hash"], rows["config_label"],
                                                      strict=True)]
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 1.2 + 0.28 * len(rows)), layout="constrained")
    ax = fig.subplots()
    y = range(len(rows))
    low = rows["diff_vs_frozen"] - rows["diff_ci_low"]
    high = rows["diff_ci_high"] - rows["diff_vs_frozen"]
    significant = rows["p_holm"] < 0.05
    for flag, colour in ((False, "grey"), (True, "tab:blue")):
        pick = [i for i, s in enumerate(significant) if bool(s) is flag]
        if pick:
            ax.errorbar(rows["diff_vs_frozen"].iloc[pick], [y[i] for i in pick],
                        xerr=[low.iloc[pick], high.iloc[pick]], fmt="o", color=colour, capsize=2,
                        markersize=4, label="Holm p < 0.05" if flag else "not significant")
    ax.axvline(0.0, color="black", linewidth=1)
    for i, (name, margin) in enumerate(sorted((margins or {}).items())):
        ax.axvline(margin, color="tab:red", linestyle=("--", ":", "-.")[i % 3], linewidth=1.2,
                   label=f"frozen {name} (teacher as retriever)")
    ax.set_yticks(list(y), names, fontsize=8)
    ax.set_xlabel("NDCG@10 difference vs the frozen student (95% CI, paired per query)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return fig


def save_figure(fig: Figure, path: str | Path, dpi: int = 120) -> Path:
    """Write a figure as PNG (creating the folder) and return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


