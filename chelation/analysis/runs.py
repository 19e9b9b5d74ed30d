"""Loading a study's finished runs from MLflow into frames (see the package docstring)."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import yaml

from chelation import tracking
from chelation.identity import NOT_IDENTITY, excluded_keys
from chelation.job_files import PER_QUERY_FILE, SELECTION_FILE
from chelation.kinds import MODES, Fallback, Mode
from chelation.tags import PARENT_TAG, ROLE_TAG, Tag

log = logging.getLogger(__name__)

PER_QUERY_ARTIFACT = PER_QUERY_FILE
SELECTION_ARTIFACT = SELECTION_FILE
MODE_ORDER = MODES
# Columns lifted from tags (falling back to params) into short names, with their param fallback.
_SHORT_COLUMNS = {
    Tag.MODE: "training.mode",
    Tag.TEACHER: "teacher.name",
    Tag.STUDENT: "student.model",
    Tag.DATASET: "dataset.name",
    Tag.PROTOCOL: "protocol",
    Tag.SEED: "seed",
    Tag.SCHEDULE: "weight.schedule",
    Tag.PROJECTION: "teacher.projection",
    Tag.GROUP_HASH: None,
    Tag.CONFIG_HASH: None,
    Tag.CONFIG_LABEL: None,
    Tag.FALLBACK: None,
    Tag.INDEX_TEACHER_WEIGHT: None,
}
_PER_QUERY_META = ("group_hash", "config_label", "mode", "teacher", "student", "dataset",
                   "protocol", "seed", "index_weight")


# --------------------------------------------------------------------------------------------
# Loaders (MLflow)
# --------------------------------------------------------------------------------------------

def load_runs(tracking_uri: str, experiment: str, where: Sequence[str] = ("",)) -> pd.DataFrame:
    """Finished job runs of one experiment, one row per run (see the module docstring).
    `where`: MLflow filter clauses, each searched on its own (MLflow's filter has no OR), and
    the runs any of them finds; by default every finished job run of the experiment."""
    from mlflow.entities import ViewType

    client = tracking.client(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise ValueError(f"experiment {experiment!r} does not exist in {tracking_uri}")
    base = f"attributes.status = 'FINISHED' and tags.`{ROLE_TAG}` = 'job'"
    rows: dict[str, dict[str, Any]] = {}
    for clause in where:
        query = f"{base} and {clause}" if clause else base
        token = None
        while True:
            page = client.search_runs([found.experiment_id], filter_string=query,
                                      run_view_type=ViewType.ACTIVE_ONLY, max_results=1000,
                                      page_token=token)
            for run in page:
                rows[run.info.run_id] = _run_row(run)
            token = page.token
            if not token:
                break
    return one_run_per_configuration(_with_short_columns(pd.DataFrame(list(rows.values()))))


def studies_on_the_same_queries(tracking_uri: str, runs: pd.DataFrame) -> list[str]:
    """The experiments of the store holding finished job runs on the study's test queries (the
    same dataset and protocol as most of its runs), the study's own included: each answer
    computed on those queries belongs to one family."""
    if runs.empty or runs["dataset"].dropna().empty or runs["protocol"].dropna().empty:
        return []
    from mlflow.entities import ViewType

    dataset, protocol = runs["dataset"].mode().iloc[0], runs["protocol"].mode().iloc[0]
    client = tracking.client(tracking_uri)
    experiments = {e.experiment_id: e.name for e in client.search_experiments()}
    query = (f"attributes.status = 'FINISHED' and tags.`{ROLE_TAG}` = 'job' and "
             f"tags.`{Tag.DATASET}` = '{dataset}' and tags.`{Tag.PROTOCOL}` = '{protocol}'")
    found = set()
    for experiment_id, name in experiments.items():
        if client.search_runs([experiment_id], filter_string=query,
                              run_view_type=ViewType.ACTIVE_ONLY, max_results=1):
            found.add(name)
    return sorted(found)


def _run_row(run: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "run_id": run.info.run_id,
        "run_name": run.info.run_name,
        "status": run.info.status,
        "start_time": pd.to_datetime(run.info.start_time, unit="ms"),
        "parent_run_id": run.data.tags.get(PARENT_TAG),
    }
    row.update({f"tags.{k}": v for k, v in run.data.tags.items()})
    row.update({f"params.{k}": v for k, v in run.data.params.items()})
    row.update({f"metrics.{k}": v for k, v in run.data.metrics.items()})
    return row


def one_run_per_configuration(runs: pd.DataFrame) -> pd.DataFrame:
    """One run per configuration (`config_hash`): the newest that did not fall back, else the
    newest (a configuration re-run once its teacher was installed counts once). Runs without a
    hash are kept as they are."""
    if runs.empty or "config_hash" not in runs:
        return runs
    ranked = runs.assign(_fell_back=runs["fallback"].map(Fallback.degraded)).sort_values(
        ["_fell_back", "start_time"], ascending=[True, False])
    hashed = ranked["config_hash"].notna()
    kept = pd.concat([ranked[hashed].drop_duplicates("config_hash"), ranked[~hashed]])
    return runs.loc[sorted(kept.index)].reset_index(drop=True)


def _with_short_columns(raw: pd.DataFrame) -> pd.DataFrame:
    short = pd.DataFrame(index=raw.index)
    for name, param in _SHORT_COLUMNS.items():
        col = raw.get(f"tags.{name}")
        if param is not None and f"params.{param}" in raw:
            col = raw[f"params.{param}"] if col is None else col.fillna(raw[f"params.{param}"])
        short[str(name)] = col if col is not None else pd.Series(np.nan, index=raw.index,
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
_LABEL_IGNORES = (*NOT_IDENTITY, "seed", "dataset.path")


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


_DOCUMENT_WEIGHT = "params.index.document_weight"  # the documents as the identity sees them


def _parsed(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError:
        return value


def _config_of(row: pd.Series, params: Sequence[str]) -> dict[str, Any]:
    """A run's nested configuration, rebuilt from its logged params."""
    config: dict[str, Any] = {}
    for column in params:
        if pd.isna(row[column]):
            continue
        *path, last = column.removeprefix("params.").split(".")
        node = config
        for part in path:
            node = node.setdefault(part, {})
        if isinstance(node, dict):
            node[last] = _parsed(row[column])
    return config


def _excluded(row: pd.Series, params: Sequence[str]) -> tuple[str, ...]:
    """The identity's view of the keys that do not apply to a configuration (falling back to
    its mode's ignored keys where the params are too few to rebuild it)."""
    try:
        return excluded_keys(_config_of(row, params))
    except (KeyError, TypeError, ValueError):
        mode = row.get("mode")
        return (*NOT_IDENTITY, *(Mode(mode).ignored_keys if mode in MODE_ORDER else ()))


def _document_weight(row: pd.Series) -> float | None:
    try:
        from chelation.settings import IndexSettings

        return IndexSettings(**_config_of(row, [c for c in row.index
                                                if c.startswith("params.index.")])
                             .get("index", {})).document_weight
    except (TypeError, ValueError, KeyError):
        return None


def label_legend(runs: pd.DataFrame) -> pd.DataFrame:
    """A short label per configuration (`<mode>-<n>`, numbered within its mode in label order)
    with its full label and the settings in which it differs from the study's most common
    value: only keys that apply to it (the identity's view, `chelation.identity.excluded_keys`;
    the indexed documents as the teacher's share, `index.document_weight`) and whose value is
    not the common one among the configurations they apply to. What figures and reports print,
    and the table that says what each short label means.
    Columns: group_hash, short_label, config_label, differs."""
    if runs.empty:
        return pd.DataFrame(columns=["group_hash", "short_label", "config_label", "differs"])
    groups = runs.drop_duplicates("group_hash").copy()
    params = [c for c in runs.columns if c.startswith("params.")]
    if any(c.startswith("params.index.") for c in params):
        groups[_DOCUMENT_WEIGHT] = [_document_weight(g) for _, g in groups.iterrows()]
    shown_params = [c for c in groups.columns if c.startswith("params.")
                    and not c.removeprefix("params.").startswith(
                        (*_LABEL_IGNORES, "training.mode", "index.documents",
                         "index.teacher_weight"))]
    applies = {}
    for i, g in groups.iterrows():
        excluded = _excluded(g, params)
        applies[i] = {c for c in shown_params if pd.notna(g[c])
                      and (c == _DOCUMENT_WEIGHT
                           or not c.removeprefix("params.").startswith(excluded))}
    common: dict[str, str] = {}
    for c in shown_params:
        values = groups.loc[[i for i in groups.index if c in applies[i]], c].dropna()
        values = values.map(lambda v: f"{v:g}" if isinstance(v, float) else str(v))
        if values.nunique() > 1:
            common[c] = values.mode().iloc[0]
    rank = {m: i for i, m in enumerate(MODE_ORDER)}
    groups["_rank"] = groups["mode"].map(rank).fillna(len(rank))
    groups = groups.sort_values(["_rank", "config_label"], kind="stable")
    rows, counts = [], {}
    for i, g in groups.iterrows():
        mode = g["mode"] if pd.notna(g["mode"]) else "run"
        counts[mode] = counts.get(mode, 0) + 1
        shown = []
        for c in common:
            if c not in applies[i]:
                continue
            value = f"{g[c]:g}" if isinstance(g[c], float) else str(g[c])
            if value != common[c]:
                shown.append(f"{c.removeprefix('params.')}={value}")
        rows.append({"group_hash": g["group_hash"], "short_label": f"{mode}-{counts[mode]}",
                     "config_label": g["config_label"], "differs": ", ".join(shown)})
    return pd.DataFrame(rows)


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
    client = tracking.client(tracking_uri)
    rows = [(run_id, m.step, m.value, m.timestamp)
            for run_id in run_ids for m in client.get_metric_history(run_id, metric)]
    frame = pd.DataFrame(rows, columns=["run_id", "step", "value", "timestamp"])
    frame = frame.sort_values(["run_id", "step", "timestamp"])
    frame = frame.drop_duplicates(["run_id", "step"], keep="last")
    return frame.drop(columns="timestamp").reset_index(drop=True)


def per_query_table(tracking_uri: str, run_id: str, artifact: str = PER_QUERY_ARTIFACT
                    ) -> pd.DataFrame:
    """A run's per-query artifact: columns run_id, cycle, query_id (str), ndcg_at_10, and
    `fold` (the fold that tested the query; in `selection_ndcg.csv` the fold that may choose
    on it) where the run logged one."""
    client = tracking.client(tracking_uri)
    with tempfile.TemporaryDirectory() as tmp:
        path = client.download_artifacts(run_id, artifact, tmp)
        table = pd.read_csv(path, dtype={"query_id": str})
    table.insert(0, "run_id", run_id)
    return table


def load_per_query(tracking_uri: str, runs: pd.DataFrame,
                   artifact: str = PER_QUERY_ARTIFACT) -> pd.DataFrame:
    """Per-query tables of all `runs`, with each run's configuration columns joined on. A run
    without the artifact is skipped with a warning."""
    parts = []
    for run_id in runs["run_id"]:
        try:
            parts.append(per_query_table(tracking_uri, run_id, artifact))
        except Exception as err:  # noqa: BLE001 - one missing artifact must not sink the study
            log.warning("run %s has no readable %s (%s); skipped", run_id, artifact, err)
    if not parts:
        return pd.DataFrame(columns=["run_id", "cycle", "query_id", "ndcg_at_10", "fold",
                                     *_PER_QUERY_META])
    meta = runs[["run_id", *[c for c in _PER_QUERY_META if c in runs]]]
    return pd.concat(parts, ignore_index=True).merge(meta, on="run_id", how="left")


def load_selection(tracking_uri: str, runs: pd.DataFrame) -> pd.DataFrame:
    """The runs' selection scores (`selection_ndcg.csv`: per fold, the training-side queries
    that fold may choose on), shaped like `load_per_query` with a `fold` column."""
    return load_per_query(tracking_uri, runs, SELECTION_ARTIFACT)


