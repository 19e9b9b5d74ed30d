"""Nested selection (chelation.analysis.nested) and the report's honesty on frozen-only studies
(issue 24), on fabricated frames: what the choice reads, the seed test where seeds change
nothing, the frozen references, the legend's "differs from" column."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from chelation import analysis as ca

QUERIES = [f"q{i:02d}" for i in range(30)]
FOLDS = {f: QUERIES[10 * f:10 * (f + 1)] for f in range(3)}  # fold f tests these queries
STUDENT = "sentence-transformers/all-MiniLM-L6-v2"


def _val_slice(fold: int) -> list[str]:
    """The fold's validation slice: four queries of each other fold (training side)."""
    return [q for other, qs in FOLDS.items() if other != fold for q in qs[:4]]


def _fabricated_grid() -> tuple[dict[str, dict[str, float]], pd.DataFrame]:
    """Three frozen configurations, scores independent of the fold (nothing trains): F the
    student, A a blend far better on fold 0's queries only and worse elsewhere, B a blend a
    little better everywhere. Returns (scores per configuration and query, the runs table with
    the validation metric each job would log: the mean over folds of its slice's mean)."""
    base = dict(zip(QUERIES, np.random.default_rng(7).uniform(0.2, 0.6, len(QUERIES)),
                    strict=True))
    truth = {
        "F": dict(base),
        "A": {q: s + (0.30 if q in FOLDS[0] else -0.05) for q, s in base.items()},
        "B": {q: s + 0.02 for q, s in base.items()},
    }
    labels = {"F": "frozen/all-MiniLM-L6-v2", "A": "frozen/all-MiniLM-L6-v2/docs:mpnet@0.5",
              "B": "frozen/all-MiniLM-L6-v2/docs:mpnet@0.25"}
    runs = pd.DataFrame([{
        "run_id": f"run-{g}", "group_hash": g, "config_label": labels[g], "mode": "frozen",
        "student": STUDENT, "seed": 0, "index_weight": {"F": 0.0, "A": 0.5, "B": 0.25}[g],
        "metrics.val_ndcg_at_10": float(np.mean([np.mean([scores[q] for q in _val_slice(f)])
                                                 for f in FOLDS])),
    } for g, scores in truth.items()])
    return truth, runs


def _test_frame(truth: dict[str, dict[str, float]]) -> pd.DataFrame:
    return pd.DataFrame([{"group_hash": g, "seed": 0, "query_id": q, "fold": f,
                          "ndcg_at_10": scores[q]}
                         for g, scores in truth.items() for f, qs in FOLDS.items() for q in qs])


class RecordingScores:
    """A selection source that offers every query's score in every fold (as a leaky log
    would), records each read, and fails the test on reading a fold's test query."""

    def __init__(self, truth: dict[str, dict[str, float]]):
        self.truth = truth
        self.reads: list[tuple[str, int, frozenset[str]]] = []

    def queries(self, group_hash: str, seed: int, fold: int) -> frozenset[str]:
        return frozenset(self.truth[group_hash])

    def mean_score(self, group_hash, seed, fold, query_ids) -> float:
        leaked = set(query_ids) & set(FOLDS[fold])
        assert not leaked, f"fold {fold} read its test queries {sorted(leaked)}"
        self.reads.append((group_hash, fold, frozenset(query_ids)))
        return float(np.mean([self.truth[group_hash][q] for q in query_ids]))


def test_nested_selection_never_reads_a_test_query_and_differs_from_pooled_selection():
    truth, runs = _fabricated_grid()
    # the old procedure: one choice for all folds from the pooled validation metric, which for
    # a frozen configuration averages queries that other folds test
    pooled = ca.select_on_validation(runs)
    assert pooled["group_hash"] == "A"

    source = RecordingScores(truth)
    result = ca.nested_selection(_test_frame(truth), source, runs)
    chosen = dict(zip(result.choices["fold"], result.choices["group_hash"], strict=True))
    # fold 0's training side holds none of A's good queries: it chooses otherwise
    assert chosen[0] != pooled["group_hash"]
    assert chosen == {0: "B", 1: "A", 2: "A"}
    # what was read: every configuration in every fold, exactly the fold's training side
    assert {(g, f) for g, f, _ in source.reads} == {(g, f) for g in truth for f in FOLDS}
    for _, fold, ids in source.reads:
        assert ids == frozenset(QUERIES) - frozenset(FOLDS[fold])
    # each fold's test queries are scored by its own choice
    cells = result.cells.set_index("query_id")
    for fold, qs in FOLDS.items():
        assert (cells.loc[qs, "group_hash"] == chosen[fold]).all()
        assert cells.loc[qs, "ndcg_at_10"].tolist() == [truth[chosen[fold]][q] for q in qs]


def test_the_leak_guard_is_what_keeps_test_queries_out():
    """The same source with the guard bypassed (a procedure that reads what it is offered)
    trips the recorder: the test above can fail."""
    truth, _ = _fabricated_grid()
    source = RecordingScores(truth)
    with pytest.raises(AssertionError, match="read its test queries"):
        source.mean_score("A", 0, 0, sorted(source.queries("A", 0, 0)))


def test_nested_summary_pairs_the_procedure_with_the_frozen_student():
    truth, runs = _fabricated_grid()
    test = _test_frame(truth)
    result = ca.nested_selection(test, RecordingScores(truth), runs)
    summary = ca.summarise_nested(result, test, test[test["group_hash"] == "F"],
                                  "frozen/all-MiniLM-L6-v2")
    expected = np.mean([truth[{0: "B", 1: "A", 2: "A"}[f]][q] for f, qs in FOLDS.items()
                        for q in qs])
    assert summary["ndcg_mean"] == pytest.approx(expected)
    assert summary["diff"] == pytest.approx(expected - np.mean(list(truth["F"].values())))
    assert summary["modal_choice"] == "frozen/all-MiniLM-L6-v2/docs:mpnet@0.5"
    assert (summary["agreeing"], summary["n_choices"]) == (2, 3)
    best = max(np.mean(list(s.values())) for s in truth.values())
    assert summary["regret"] == pytest.approx(best - expected)
    # one seed: no spread over seeds, and no test over seeds at all
    assert math.isnan(summary["seed_sd"]) and "p_seeds" not in summary
    # beside the t-test, the paired randomization test of the same difference
    assert 0 < summary["p_permutation"] <= 1


# --------------------------------------------------------------------------------------------
# A frozen-only study (issue 24): a blend grid over three seeds and the teacher run frozen
# --------------------------------------------------------------------------------------------

TEACHER = "sentence-transformers/all-mpnet-base-v2"


def _frozen_only_runs() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Runs and per-query rows of a frozen-only kfold study: the student's documents blended
    with the teacher's at w = 0, 0.5, 1 and the teacher as its own retriever, seeds 0-2. A frozen
    arm scores every query the same whatever the seed."""
    rng = np.random.default_rng(3)
    base = rng.uniform(0.2, 0.6, len(QUERIES))
    arms = [  # group, student, documents, teacher_weight, shift
        ("g0", STUDENT, "blend", 0.0, 0.0), ("g5", STUDENT, "blend", 0.5, 0.02),
        ("g10", STUDENT, "blend", 1.0, -0.01), ("gT", TEACHER, "student", 0.5, 0.03)]
    noise = {g: rng.normal(0, 0.02, len(QUERIES)) for g, *_ in arms}
    runs, rows = [], []
    for g, student, docs, w, shift in arms:
        share = 0.0 if docs == "student" else w
        name = student.split("/")[-1]
        label = f"frozen/{name}" + (f"/docs:mpnet@{share:g}" if share else "")
        for seed in (0, 1, 2):
            runs.append({
                "run_id": f"{g}-{seed}", "group_hash": g, "config_label": label, "mode": "frozen",
                "student": student, "dataset": "toy", "protocol": "kfold", "seed": seed,
                "index_weight": share, "params.training.mode": "frozen",
                "params.student.model": student, "params.index.documents": docs,
                "params.index.teacher_weight": str(w),
                # a key that does not apply to the teacher's own documents differs there
                "params.index.fit_queries": str(g == "gT"),
                "params.teacher.name": "mpnet", "params.weight.value": "0.5",
                "params.protocol": "kfold", "params.seed": str(seed),
                "params.selection.method": "inner"})
            rows += [{"run_id": f"{g}-{seed}", "group_hash": g, "config_label": label,
                      "mode": "frozen", "student": student, "dataset": "toy",
                      "protocol": "kfold", "seed": seed, "index_weight": share, "cycle": 0,
                      "query_id": q, "ndcg_at_10": b + shift + n}
                     for q, b, n in zip(QUERIES, base, noise[g], strict=True)]
    return pd.DataFrame(runs), pd.DataFrame(rows)


def test_seeds_get_a_spread_and_never_a_p_value():
    """Seeds that share their test queries do not sample queries again: the table reports the
    spread of the per-seed mean difference (0 where the seeds change nothing), no test."""
    _, per_query = _frozen_only_runs()
    table = ca.compare_to_reference(per_query).set_index("group_hash")
    compared = table[table["reference"] != "(reference)"]
    assert len(compared) == 3
    assert (compared["seed_sd"] == 0).all()
    assert "p_seeds" not in table
    report = ca.results_markdown(table.reset_index())
    assert "p (seeds)" not in report and "seed sd" in report
    varied = per_query.copy()
    varied.loc[(varied["group_hash"] == "g5"), "ndcg_at_10"] += varied["seed"] * 0.01
    row = ca.compare_to_reference(varied).set_index("group_hash").loc["g5"]
    assert row["seed_sd"] == pytest.approx(0.01)


def test_the_teacher_is_compared_with_the_student_never_with_itself():
    _, per_query = _frozen_only_runs()
    table = ca.compare_to_reference(per_query).set_index("group_hash")
    assert table.loc["gT", "reference"] == "frozen/all-MiniLM-L6-v2"
    assert (table["reference"] == "(reference)").sum() == 1
    assert table.loc["g0", "reference"] == "(reference)"


def test_the_frozen_references_section_is_in_a_frozen_only_study():
    _, per_query = _frozen_only_runs()
    frozen = ca.frozen_models_table(per_query)
    assert set(frozen["student"]) == {STUDENT, TEACHER}
    teacher = frozen[frozen["student"] == TEACHER].iloc[0]
    assert teacher["diff_vs_frozen"] == pytest.approx(0.03, abs=0.01)
    assert teacher["diff_ci_low"] < teacher["diff_vs_frozen"] < teacher["diff_ci_high"]
    assert 0 <= teacher["p_ttest"] <= 1
    report = ca.results_markdown(ca.compare_to_reference(per_query), frozen=frozen)
    section = report.split("## The models frozen, for reference")[1].split("##")[0]
    line = next(r for r in section.splitlines() if r.startswith(f"| `{TEACHER}`"))
    assert f"{teacher['diff_vs_frozen']:+.4f}" in line and "deterministic" not in line
    assert "the frozen student (the reference)" in section


def test_the_legend_lists_only_keys_that_apply_and_differ():
    runs, _ = _frozen_only_runs()
    legend = ca.label_legend(runs).set_index("group_hash")
    # the common setting (the student, blended documents) is never listed
    assert not legend["differs"].str.contains("all-MiniLM").any()
    assert not legend["differs"].str.contains("index.documents").any()
    # the teacher's row: its own model, and no document weight that does not apply to it
    # the teacher's row: its own model; its documents are its own (share 0, the common value),
    # so neither the share nor how the teacher's projection is fitted applies
    assert legend.loc["gT", "differs"] == f"student.model={TEACHER}"
    assert legend.loc["g5", "differs"] == "index.document_weight=0.5"
    assert legend.loc["g10", "differs"] == "index.document_weight=1"
    assert legend.loc["g0", "differs"] == ""


def test_a_single_frozen_configuration_chooses_nothing_and_is_not_compared_with_itself():
    runs, per_query = _frozen_only_runs()
    teacher_runs = runs[runs["group_hash"] == "gT"]
    rows = per_query[per_query["group_hash"] == "gT"].assign(
        fold=lambda f: f["query_id"].map({q: fold for fold, qs in FOLDS.items() for q in qs}))
    selection = pd.concat([rows.assign(fold=f) for f in FOLDS])
    selection = selection[[q not in FOLDS[f] for q, f in
                           zip(selection["query_id"], selection["fold"], strict=True)]]
    result, answer = ca.study_answer(teacher_runs, rows, selection)
    assert result.nothing_to_choose and "diff" not in answer
    assert answer["ndcg_mean"] == pytest.approx(rows.groupby("query_id")["ndcg_at_10"].mean()
                                                .mean())
    text = ca.results_markdown(ca.compare_to_reference(rows), answer)
    assert "nothing to choose among" in text and "no other reference" in text
    assert "regret" not in text
    # runs logged before every candidate was judged on the same queries are refused
    result, answer = ca.study_answer(teacher_runs.drop(columns="params.selection.method"), rows,
                                     selection)
    assert result is None and "re-run" in answer["why"]


# --------------------------------------------------------------------------------------------
# Every candidate judged on the same queries; ties to the cheaper configuration (issue 29)
# --------------------------------------------------------------------------------------------

def _identical_trained_and_frozen(seeds=(0, 1, 2)):
    """A trained arm T whose every update was rolled back: on every query, selection and test,
    it scores exactly what the frozen arm F scores; a blend B a little worse. Each (seed, fold)
    offers every candidate the same selection queries (the fold's training side)."""
    rng = np.random.default_rng(11)
    base = dict(zip(QUERIES, rng.uniform(0.2, 0.6, len(QUERIES)), strict=True))
    truth = {"F": dict(base), "T": dict(base), "B": {q: s - 0.01 for q, s in base.items()}}
    runs = pd.DataFrame([
        {"group_hash": "F", "mode": "frozen", "config_label": "frozen/all-MiniLM-L6-v2",
         "index_weight": 0.0},
        # a label that sorts first, so that only the cost rule can keep it out
        {"group_hash": "T", "mode": "baseline", "config_label": "baseline", "index_weight": 0.0},
        {"group_hash": "B", "mode": "frozen", "config_label": "frozen/docs:mpnet@0.5",
         "index_weight": 0.5}])
    test = pd.concat([_test_frame(truth).assign(seed=s) for s in seeds], ignore_index=True)
    selection = pd.DataFrame([
        {"group_hash": g, "seed": s, "fold": f, "query_id": q, "ndcg_at_10": scores[q]}
        for s in seeds for g, scores in truth.items() for f in FOLDS
        for q in QUERIES if q not in FOLDS[f]])
    return truth, runs, test, selection


def test_a_trained_arm_identical_to_a_frozen_arm_is_chosen_in_no_cell():
    _, runs, test, selection = _identical_trained_and_frozen()
    # listed first, so that only the tie rule can keep it out
    runs = runs.iloc[[1, 0, 2]]
    result = ca.nested_selection(test, ca.FrameSelectionScores(selection), runs)
    assert len(result.choices) == 9
    assert (result.choices["group_hash"] == "F").all()


def test_a_tie_goes_to_the_lower_teacher_share():
    truth, _, test, selection = _identical_trained_and_frozen(seeds=(0,))
    runs = pd.DataFrame([
        {"group_hash": "W5", "mode": "frozen", "config_label": "a", "index_weight": 0.5},
        {"group_hash": "W2", "mode": "frozen", "config_label": "b", "index_weight": 0.25}])
    same = selection[selection["group_hash"] == "F"]
    sel = pd.concat([same.assign(group_hash="W5"), same.assign(group_hash="W2")])
    tst = test[test["group_hash"] == "F"]
    tst = pd.concat([tst.assign(group_hash="W5"), tst.assign(group_hash="W2")])
    result = ca.nested_selection(tst, ca.FrameSelectionScores(sel), runs)
    assert (result.choices["group_hash"] == "W2").all()


def test_candidates_are_judged_on_the_queries_they_all_have():
    """A candidate logged with more selection queries than the others (an old, leaky log) is
    judged on the common ones only: every mean the choice reads is over the same queries."""
    truth, runs, test, selection = _identical_trained_and_frozen(seeds=(0,))
    extra = pd.DataFrame([{"group_hash": "B", "seed": 0, "fold": 0, "query_id": "q99",
                           "ndcg_at_10": 1.0}])
    reads: list[tuple[str, int, frozenset[str]]] = []
    scores = ca.FrameSelectionScores(pd.concat([selection, extra], ignore_index=True))

    class Recorder:
        def queries(self, g, seed, fold):
            return scores.queries(g, seed, fold)

        def mean_score(self, g, seed, fold, query_ids):
            reads.append((g, fold, frozenset(query_ids)))
            return scores.mean_score(g, seed, fold, query_ids)

    ca.nested_selection(test, Recorder(), runs)
    for fold in FOLDS:
        read = {ids for g, f, ids in reads if f == fold}
        assert read == {frozenset(QUERIES) - frozenset(FOLDS[fold])}


def test_the_summary_says_when_the_choice_and_the_best_are_tied_within_noise():
    truth, runs, test, selection = _identical_trained_and_frozen()
    result = ca.nested_selection(test, ca.FrameSelectionScores(selection), runs)
    summary = ca.summarise_nested(result, test, test[test["group_hash"] == "F"], "F")
    assert summary["regret"] == pytest.approx(0.0) and summary["tied"]
    assert summary["seed_sd"] == pytest.approx(0.0)
