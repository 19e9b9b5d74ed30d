"""Selection nested inside each fold: the study's answer without a test query in the choice.

Each outer fold (and each seed, since a seed draws the folds) chooses one configuration using
only that fold's training-side queries, as each run logged them (`selection_ndcg.csv`), and
scores its own test queries with that choice. Every candidate is judged on the same selection
queries, none of which trained it or decided one of its updates (`selection.method`: a holdout
slice set apart before anything is fitted, or inner folds; see chelation.protocol.make_folds).
Exact ties go to the cheaper configuration: one that does not train before one that does, then
the lower teacher share of the indexed documents.
The procedure's result is the pooled per-query test NDCG@10 of those choices: one estimate,
compared with the frozen student by one paired test (no multiplicity correction, since nothing
it reports was chosen on a test query). `official` and `split` have
one fold: one choice per seed.

The choice reads scores only through a `SelectionScores` (which queries a configuration has a
score for in a fold, and its mean over given queries); the queries of the fold's test set are
taken out before any score is read.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import pandas as pd

from chelation.analysis.stats import mean_ci, paired_comparison, seed_spread
from chelation.kinds import MODES, Mode

log = logging.getLogger(__name__)

PROCEDURE_LABEL = "nested selection"


class SelectionScores(Protocol):
    """What a fold may choose on: per configuration, seed and fold, per-query scores."""

    def queries(self, group_hash: str, seed: int, fold: int) -> frozenset[str]:
        """The query ids with a selection score (ids only: no score is read)."""
        ...

    def mean_score(self, group_hash: str, seed: int, fold: int,
                   query_ids: Collection[str]) -> float:
        """The mean selection score over `query_ids`."""
        ...


class FrameSelectionScores:
    """`SelectionScores` over a frame with columns group_hash, seed, fold, query_id, ndcg_at_10
    (one row per run's final cycle, as `final_selection` gives)."""

    def __init__(self, frame: pd.DataFrame):
        self._scores: dict[tuple[str, int, int], pd.Series] = {
            (str(g), int(s), int(f)): part.groupby("query_id")["ndcg_at_10"].mean()
            for (g, s, f), part in frame.groupby(["group_hash", "seed", "fold"])}

    def queries(self, group_hash: str, seed: int, fold: int) -> frozenset[str]:
        found = self._scores.get((group_hash, int(seed), int(fold)))
        return frozenset() if found is None else frozenset(found.index)

    def mean_score(self, group_hash: str, seed: int, fold: int,
                   query_ids: Collection[str]) -> float:
        return float(self._scores[(group_hash, int(seed), int(fold))].loc[list(query_ids)].mean())


# selection means closer than this are one score (float noise), so the cheaper one is chosen
TIE_TOLERANCE = 1e-9


def cost_rank(mode: str, index_weight: float, label: str) -> tuple[bool, float, int, str]:
    """How a tie is broken: a configuration that does not train before one that does, then the
    lower teacher share of the indexed documents, then the simpler mode, then the label."""
    order = {m: i for i, m in enumerate(MODES)}
    trains = Mode(mode).trains if mode in order else True
    return trains, float(index_weight), order.get(mode, len(order)), label


def final_cycle(frame: pd.DataFrame) -> pd.DataFrame:
    """Each run's rows at its own final cycle."""
    if frame.empty:
        return frame
    key = "run_id" if "run_id" in frame else "group_hash"
    return frame[frame["cycle"] == frame.groupby(key)["cycle"].transform("max")]


@dataclass
class NestedSelection:
    """The procedure's outcome. `choices`: one row per (seed, fold): seed, fold, group_hash,
    config_label, mode, selection_score, selection_queries. `cells`: the procedure's test
    scores, one row per (seed, query_id) with the fold that tested it and the configuration it
    chose. `candidates`: group_hash -> config_label of every configuration it could choose."""

    choices: pd.DataFrame
    cells: pd.DataFrame
    candidates: dict[str, str] = field(default_factory=dict)

    @property
    def nothing_to_choose(self) -> bool:
        return len(self.candidates) < 2

    def agreement(self) -> tuple[str, int, int]:
        """(the most often chosen configuration's label, how many (seed, fold) cells chose it,
        how many cells there are)."""
        if self.choices.empty:
            return "", 0, 0
        counts = self.choices["config_label"].value_counts()
        return str(counts.index[0]), int(counts.iloc[0]), int(len(self.choices))


def nested_selection(test: pd.DataFrame, selection: SelectionScores,
                     candidates: pd.DataFrame) -> NestedSelection:
    """Choose per (seed, fold) among `candidates` (rows with group_hash, mode, config_label) on
    `selection` only, and score each fold's test queries with its choice.

    `test`: per-query test scores at each run's final cycle, with columns group_hash, seed,
    query_id, fold, ndcg_at_10. Only its ids and folds are read before a choice (to keep the
    fold's test queries out of the choice); its scores are read only for the chosen
    configuration, after. Every candidate of a (seed, fold) is judged on the same queries: those
    that all of them have a selection score for (a candidate logged with other selection
    queries is warned about and judged on the common ones). Ties within TIE_TOLERANCE go to the
    cheaper configuration (`cost_rank`)."""
    cands = candidates.drop_duplicates("group_hash")
    labels = dict(zip(cands["group_hash"].astype(str), cands["config_label"].astype(str),
                      strict=True))
    modes = dict(zip(cands["group_hash"].astype(str), cands["mode"], strict=True))
    weights = dict(zip(cands["group_hash"].astype(str),
                       cands.get("index_weight", pd.Series(0.0, index=cands.index)).fillna(0.0),
                       strict=True))
    test = test[test["group_hash"].astype(str).isin(labels)]
    choices, cells = [], []
    for (seed, fold), held in test.groupby(["seed", "fold"]):
        test_ids = frozenset(held["query_id"].astype(str))
        offered = {g: selection.queries(g, seed, fold)
                   for g in sorted(set(held["group_hash"].astype(str)))}
        offered = {g: ids for g, ids in offered.items() if ids}
        if not offered:
            continue
        common = frozenset.intersection(*offered.values()) - test_ids
        for g, ids in offered.items():
            if ids & test_ids:
                log.warning("configuration %s, seed %s, fold %s: %d selection queries are test "
                            "queries of that fold; left out of the choice", labels[g], seed, fold,
                            len(ids & test_ids))
            if ids - test_ids != common:
                log.warning("configuration %s, seed %s, fold %s: selection scores for %d queries "
                            "the other candidates lack; judged on the %d common ones", labels[g],
                            seed, fold, len(ids - test_ids - common), len(common))
        if not common:
            continue
        query_ids = sorted(common)
        scores = {g: selection.mean_score(g, seed, fold, query_ids) for g in offered}
        best = max(scores.values())
        tied = [g for g, score in scores.items() if best - score <= TIE_TOLERANCE]
        chosen = min(tied, key=lambda g: cost_rank(modes[g], weights[g], labels[g]))
        choices.append({"seed": int(seed), "fold": int(fold), "group_hash": chosen,
                        "config_label": labels[chosen], "mode": modes[chosen],
                        "selection_score": scores[chosen], "selection_queries": len(query_ids)})
        mine = held[held["group_hash"].astype(str) == chosen]
        cells.append(mine[["seed", "query_id", "fold", "ndcg_at_10"]].assign(group_hash=chosen))
    cell_frame = (pd.concat(cells, ignore_index=True) if cells else
                  pd.DataFrame(columns=["seed", "query_id", "fold", "ndcg_at_10", "group_hash"]))
    return NestedSelection(choices=pd.DataFrame(choices), cells=cell_frame, candidates=labels)


def _per_seed_query(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.groupby(["seed", "query_id"], as_index=False)["ndcg_at_10"].mean()


def summarise_nested(result: NestedSelection, test: pd.DataFrame,
                     reference: pd.DataFrame | None, reference_label: str | None = None,
                     confidence: float = 0.95, scipy_tests: bool = True) -> dict[str, Any]:
    """The procedure's figures: pooled test NDCG@10 with its interval (per query, averaged over
    seeds) and its spread over seeds (`seed_sd`: the standard deviation of the per-seed means),
    the paired difference from the reference (per query, the one inferential test; its spread
    over seeds beside it), the choices' agreement and the regret (best candidate on test minus
    the procedure, with its paired interval over queries: `tied` when that interval holds 0).
    `test` as for `nested_selection`; `reference`: the reference's per-query rows (seed,
    query_id, ndcg_at_10), or None."""
    out: dict[str, Any] = {"n_candidates": len(result.candidates),
                           "nothing_to_choose": result.nothing_to_choose}
    if result.cells.empty:
        return out
    cells = _per_seed_query(result.cells)
    per_query = cells.groupby("query_id")["ndcg_at_10"].mean()
    mean, low, high = mean_ci(per_query.to_numpy(), confidence)
    label, agreeing, n_cells = result.agreement()
    out.update(ndcg_mean=mean, ci_low=low, ci_high=high, n_queries=int(per_query.size),
               n_seeds=int(cells["seed"].nunique()), modal_choice=label, agreeing=agreeing,
               n_choices=n_cells, distinct_choices=int(result.choices["group_hash"].nunique()),
               seed_sd=seed_spread(cells.groupby("seed")["ndcg_at_10"].mean()))
    seeds = set(cells["seed"])
    pooled = []
    for g, label_g in result.candidates.items():
        rows = test[(test["group_hash"].astype(str) == g) & test["seed"].isin(seeds)]
        if rows.empty or set(rows["seed"]) != seeds:
            continue
        by_query = _per_seed_query(rows).groupby("query_id")["ndcg_at_10"].mean()
        pooled.append((float(by_query.mean()), label_g, by_query))
    if pooled:
        best, best_label, best_queries = max(pooled, key=lambda item: (item[0], item[1]))
        paired = pd.concat([best_queries.rename("a"), per_query.rename("b")], axis=1,
                           join="inner")
        gap = paired_comparison(paired["a"].to_numpy(), paired["b"].to_numpy(), confidence,
                                scipy_tests=False)
        out.update(best_on_test=best, best_on_test_label=best_label, regret=best - mean,
                   regret_ci_low=gap["ci_low"], regret_ci_high=gap["ci_high"],
                   tied=bool(best - mean <= 1e-12 or gap["ci_low"] <= 0.0))
    if reference is None or reference.empty:
        return out
    ref = _per_seed_query(reference.assign(query_id=reference["query_id"].astype(str)))
    common = seeds & set(ref["seed"])
    if not common:
        return out
    m = cells[cells["seed"].isin(common)].merge(ref[ref["seed"].isin(common)],
                                                on=["seed", "query_id"], suffixes=("_a", "_b"))
    m = m.rename(columns={"ndcg_at_10_a": "a", "ndcg_at_10_b": "b"})
    by_query = m.groupby("query_id")[["a", "b"]].mean()
    res = paired_comparison(by_query["a"].to_numpy(), by_query["b"].to_numpy(), confidence,
                            scipy_tests)
    by_seed = m.groupby("seed")[["a", "b"]].mean()
    out.update(reference=reference_label or "reference", reference_mean=res["mean_b"],
               n_paired=res["n"], diff=res["mean_diff"], diff_ci_low=res["ci_low"],
               diff_ci_high=res["ci_high"], p_ttest=res["p_ttest"],
               p_permutation=res["p_permutation"], p_wilcoxon=res["p_wilcoxon"],
               diff_seed_sd=seed_spread(by_seed["a"] - by_seed["b"]))
    return out


# what the choice reads of a candidate: its identity, its label, and what ranks it in a tie
_CANDIDATE_COLUMNS = ["group_hash", "mode", "config_label", "index_weight"]


def candidate_configurations(runs: pd.DataFrame, student: str | None = None) -> pd.DataFrame:
    """The configurations a study chooses among: every configuration whose queries the study's
    student encodes (default: the student of most runs), so that the choice never buys quality
    with a costlier query encoder; the frozen student itself is one."""
    if runs.empty:
        return pd.DataFrame(columns=_CANDIDATE_COLUMNS)
    if student is None and runs["student"].notna().any():
        student = runs["student"].mode().iloc[0]
    pool = runs if student is None else runs[runs["student"] == student]
    return pool.drop_duplicates("group_hash").reindex(columns=_CANDIDATE_COLUMNS)


def frozen_student_group(runs: pd.DataFrame, student: str | None = None) -> str | None:
    """The study's reference: the frozen arm of its student with the student's own documents."""
    if runs.empty:
        return None
    if student is None and runs["student"].notna().any():
        student = runs["student"].mode().iloc[0]
    frozen = runs[(runs["mode"] == Mode.FROZEN) & (runs["student"] == student)]
    if "index_weight" in frozen:
        frozen = frozen[frozen["index_weight"].fillna(0.0) == 0.0]
    if frozen.empty:
        return None
    seeds = frozen.groupby("group_hash")["seed"].nunique()
    return sorted(seeds.index, key=lambda g: (-seeds[g], g))[0]


def choices_text(result: NestedSelection) -> str:
    """'label x n (folds x seeds), ...', most often chosen first."""
    counts = result.choices["config_label"].value_counts() if not result.choices.empty else {}
    return ", ".join(f"{label} x{n}" for label, n in counts.items())


def choices_table(result: NestedSelection, seeds: Sequence[int] | None = None) -> pd.DataFrame:
    """The choice of each (seed, fold) as a table: rows seeds, columns folds."""
    if result.choices.empty:
        return pd.DataFrame()
    frame = result.choices if seeds is None else result.choices[result.choices["seed"].isin(seeds)]
    return frame.pivot(index="seed", columns="fold", values="config_label")


def study_answer(runs: pd.DataFrame, per_query: pd.DataFrame, selection: pd.DataFrame,
                 confidence: float = 0.95,
                 scipy_tests: bool = True) -> tuple[NestedSelection | None, dict[str, Any]]:
    """The nested procedure over a study's runs (`load_runs`), their per-query test scores
    (`load_per_query`) and their selection scores (`load_selection`): (the procedure, its
    summary, with `choices` and `versus`: the procedure against every other frozen model), or
    (None, {"why": ...}) when the runs do not carry what it needs. The reference is the frozen
    student; without one, cycle 0 of the chosen runs (the same models before any training)."""
    candidates = candidate_configurations(runs)
    if candidates.empty:
        return None, {"why": "no finished job runs"}
    if per_query.empty or "fold" not in per_query or per_query["fold"].isna().all():
        return None, {"why": "the runs' per-query tables carry no fold (logged before nested "
                             "selection); re-run them"}
    if "params.selection.method" not in runs or runs["params.selection.method"].isna().any():
        return None, {"why": "some runs were logged before every candidate was judged on the "
                             "same selection queries (no selection.method param); re-run them"}
    if selection.empty:
        return None, {"why": "no run logged selection scores (selection_ndcg.csv)"}
    test = final_cycle(per_query).dropna(subset=["fold"]).astype({"fold": int})
    test = test.assign(query_id=test["query_id"].astype(str))
    result = nested_selection(test, FrameSelectionScores(final_cycle(selection)), candidates)
    if result.choices.empty:
        return None, {"why": "no configuration had selection scores for any fold"}
    reference = frozen_student_group(runs)
    label = dict(zip(runs["group_hash"], runs["config_label"], strict=False))
    if result.nothing_to_choose and set(result.candidates) <= {reference} | set(
            runs.loc[runs["mode"] == Mode.FROZEN, "group_hash"]):
        # one frozen configuration (a teacher run as its own retriever, say): nothing to
        # choose and nothing to compare it with but itself
        ref_rows, ref_label = None, None
    elif reference is not None:
        ref_rows, ref_label = _final_rows(per_query, reference), label.get(reference)
    else:
        ref_rows, ref_label = _cycle_zero_of(per_query, result), "cycle 0 (same runs)"
    summary = summarise_nested(result, test, ref_rows, ref_label, confidence, scipy_tests)
    summary["choices"] = result.choices.to_dict("records")
    others = runs[(runs["mode"] == Mode.FROZEN) & (runs["group_hash"] != reference)]
    if "index_weight" in others:
        others = others[others["index_weight"].fillna(0.0) == 0.0]
    summary["versus"] = []
    for g in others["group_hash"].unique():
        other = summarise_nested(result, test, _final_rows(per_query, g), label.get(g),
                                 confidence, scipy_tests)
        if "diff" in other:
            summary["versus"].append({k: other[k] for k in (
                "reference", "reference_mean", "diff", "diff_ci_low", "diff_ci_high", "p_ttest",
                "p_permutation", "diff_seed_sd", "n_paired")})
    return result, summary


def _final_rows(per_query: pd.DataFrame, group_hash: str) -> pd.DataFrame:
    """One configuration's final-cycle per-query test rows."""
    return final_cycle(per_query[per_query["group_hash"] == group_hash])


def _cycle_zero_of(per_query: pd.DataFrame, result: NestedSelection) -> pd.DataFrame:
    """Cycle 0 of the runs the procedure chose, at the queries it scored with them."""
    zero = per_query[per_query["cycle"] == 0].assign(
        query_id=lambda f: f["query_id"].astype(str), group_hash=lambda f: f["group_hash"]
        .astype(str))
    keys = result.cells[["group_hash", "seed", "query_id"]]
    return zero.merge(keys, on=["group_hash", "seed", "query_id"])
