"""The study's figures (matplotlib's object API: no pyplot state, any backend)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from chelation.analysis.stats import first_value
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
            style = "--" if first_value(conf, "mode") == Mode.FROZEN else "-"
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


