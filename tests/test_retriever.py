"""The chelated retriever per mode on real data: the synthetic collection, the real MiniLM student,
a real 768-wide stand-in teacher and Qdrant's embedded engine."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import chelation.retriever as retriever_module
from chelation.data import RetrievalDataset
from chelation.encoders import CachedEncoder
from chelation.protocol import Fold, make_folds, run_job
from chelation.retriever import ChelatedRetriever, EncodedDataset
from chelation.settings import (
    ChelationSettings,
    EngineSettings,
    RunSettings,
    TeacherSettings,
    TrainingSettings,
    WeightSchedule,
)
from chelation.targets import homeostatic_targets, mean_cosine
from chelation.teacher import Teacher
from tests.helpers import states_equal

N_BATCH = 20


def _settings(cache_dir: Path, mode: str = "baseline", trigger: str = "always",
              teacher_model: str | None = None, weight: float = 0.5, **training) -> RunSettings:
    teacher = TeacherSettings(name="stand-in", model=teacher_model) if teacher_model else \
        TeacherSettings()
    return RunSettings(
        seed=0,
        cycles=2,
        queries_per_cycle=N_BATCH,
        cache_dir=str(cache_dir),
        teacher=teacher,
        weight=WeightSchedule(value=weight),
        chelation=ChelationSettings(trigger=trigger),
        training=TrainingSettings(mode=mode, **training),
    )


@pytest.fixture(scope="module")
def fold(synthetic: RetrievalDataset, cache_dir: Path) -> Fold:
    (only,) = make_folds(synthetic.judged_query_ids, _settings(cache_dir))
    assert len(only.fit) >= N_BATCH and only.guard and only.test
    return only


@pytest.fixture()
def make_teacher(teacher768_path: str, cache_dir: Path):
    def build() -> Teacher:
        encoder = CachedEncoder(teacher768_path, cache_dir, batch_size=32, show_progress=False)
        return Teacher(encoder, "procrustes")

    return build


def _assert_index_is_adapted_raw(r: ChelatedRetriever, encoded: EncodedDataset) -> None:
    np.testing.assert_allclose(r.index.stored_vectors(), r.adapter.apply(encoded.docs), atol=1e-5)


# --- baseline, frozen and the trigger -------------------------------------------------------


def test_baseline_always_chelates_trains_and_reindexes(
    encoded_synthetic: EncodedDataset, cache_dir: Path, fold: Fold
) -> None:
    settings = _settings(cache_dir, "baseline", "always", guard_tolerance=1.0)
    r = ChelatedRetriever(encoded_synthetic, settings, None, fold.guard)
    try:
        before = r.adapter.snapshot()
        stored_before = r.index.stored_vectors()
        phase = r.run_queries(fold.fit[:N_BATCH])
        assert phase.n_queries == N_BATCH
        assert phase.n_chelated == N_BATCH
        assert r.collapses.n_events == N_BATCH * settings.chelation.scout_k
        for q, ids in phase.rankings.items():
            assert q in fold.fit
            assert len(ids) == settings.chelation.scout_k == len(set(ids))
        logged = {d for ids in phase.rankings.values() for d in ids}
        result = r.sediment(0.0)
        assert result.n_targets == len(logged) > 0  # every document of every neighbourhood
        assert not result.rollback
        assert result.fallback == "none"
        assert math.isfinite(result.train_loss)
        assert not states_equal(before, r.adapter.state_dict())
        assert np.abs(r.index.stored_vectors() - stored_before).max() > 1e-4
        _assert_index_is_adapted_raw(r, encoded_synthetic)
        assert r.collapses.n_events == 0  # the log starts afresh each cycle
    finally:
        r.close()


def test_trigger_never_logs_no_events_and_does_not_train(
    encoded_synthetic: EncodedDataset, cache_dir: Path, fold: Fold
) -> None:
    settings = _settings(cache_dir, "baseline", "never", guard_tolerance=1.0)
    r = ChelatedRetriever(encoded_synthetic, settings, None, fold.guard)
    try:
        before = r.adapter.snapshot()
        phase = r.run_queries(fold.fit[:N_BATCH])
        assert phase.n_chelated == 0
        assert r.collapses.n_events == 0
        result = r.sediment(0.0)
        assert result.n_targets == 0
        assert states_equal(before, r.adapter.state_dict())
    finally:
        r.close()


def test_adaptive_trigger_chelates_only_dense_neighbourhoods(
    encoded_synthetic: EncodedDataset, cache_dir: Path, fold: Fold
) -> None:
    settings = _settings(cache_dir, "baseline", "adaptive")
    r = ChelatedRetriever(encoded_synthetic, settings, None, fold.guard)
    try:
        phase = r.run_queries(fold.fit[:N_BATCH])
        # the first batch sets the threshold itself: its median entropy (quantile 0.5)
        assert phase.n_chelated == N_BATCH // 2
        assert math.isfinite(phase.threshold)
    finally:
        r.close()


def test_frozen_chelates_at_query_time_but_never_trains(
    encoded_synthetic: EncodedDataset, cache_dir: Path, fold: Fold
) -> None:
    r = ChelatedRetriever(encoded_synthetic, _settings(cache_dir, "frozen"), None, fold.guard)
    try:
        before = r.adapter.snapshot()
        assert r.run_queries(fold.fit[:N_BATCH]).n_chelated == N_BATCH
        result = r.sediment(0.0)
        assert result.n_targets == 0
        assert states_equal(before, r.adapter.state_dict())
        # the untrained adapter is the identity: the index holds the raw unit embeddings
        np.testing.assert_allclose(r.index.stored_vectors(), encoded_synthetic.docs, atol=1e-5)
    finally:
        r.close()


# --- hybrid and offline with a 768-wide teacher ---------------------------------------------


def test_hybrid_targets_blend_homeostatic_and_projected_teacher(
    encoded_synthetic: EncodedDataset, synthetic: RetrievalDataset, cache_dir: Path, fold: Fold,
    make_teacher, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """At w = 0.2 and 0.8 (where swapped arguments or 1 - w give other vectors) the targets are
    the blend written out here, and their cosine to the teacher rises with w."""
    settings = _settings(cache_dir, "hybrid", "always", guard_tolerance=1.0)
    real_fit = retriever_module.fit_adapter
    to_teacher = {}
    for w in (0.2, 0.8):
        teacher = make_teacher()
        r = ChelatedRetriever(encoded_synthetic, settings, teacher, fold.guard)
        seen: list[tuple[np.ndarray, np.ndarray]] = []

        def recording_fit(adapter, raw, targets, *args, seen=seen, **kwargs):  # observed
            seen.append((raw.copy(), targets.copy()))
            return real_fit(adapter, raw, targets, *args, **kwargs)

        monkeypatch.setattr(retriever_module, "fit_adapter", recording_fit)
        try:
            r.run_queries(fold.fit[:N_BATCH])
            positions = r.collapses.frequent(settings.training.collapse_threshold)
            homeostatic = homeostatic_targets(
                r.adapter.apply(encoded_synthetic.docs[positions]),
                r.collapses.mean_centres(positions), settings.training.push)
            result = r.sediment(w)
            assert result.fallback == "none"
            assert result.teacher_weight == w
            assert result.n_targets == len(positions) > 0
            assert teacher.teacher_dim == 768 and teacher.matrix.shape == (768, 384)
            projected = teacher.targets(
                [synthetic.corpus[synthetic.doc_ids[p]] for p in positions])
            (raw, targets), = seen
            np.testing.assert_array_equal(raw, encoded_synthetic.docs[positions])
            expected = (1 - w) * homeostatic.astype(np.float64) + w * projected
            expected /= np.linalg.norm(expected, axis=1, keepdims=True)
            np.testing.assert_allclose(targets, expected, atol=1e-5)
            swapped = w * homeostatic.astype(np.float64) + (1 - w) * projected
            swapped /= np.linalg.norm(swapped, axis=1, keepdims=True)
            assert np.abs(targets - swapped).max() > 1e-2
            to_teacher[w] = mean_cosine(targets, projected)
            assert mean_cosine(homeostatic, projected) < to_teacher[w] < 1.0
            assert math.isfinite(result.teacher_alignment)
            _assert_index_is_adapted_raw(r, encoded_synthetic)
        finally:
            r.close()
    assert to_teacher[0.2] < to_teacher[0.8]


def test_hybrid_weight_changes_what_is_learned(
    encoded_synthetic: EncodedDataset, cache_dir: Path, fold: Fold, make_teacher
) -> None:
    settings = _settings(cache_dir, "hybrid", "always", guard_tolerance=1.0)
    learned = {}
    for w in (0.0, 0.5, 1.0):
        r = ChelatedRetriever(encoded_synthetic, settings, make_teacher(), fold.guard)
        try:
            r.run_queries(fold.fit[:N_BATCH])
            assert r.sediment(w).n_targets > 0
            learned[w] = r.index.stored_vectors()
        finally:
            r.close()
    for a, b in ((0.0, 0.5), (0.5, 1.0), (0.0, 1.0)):
        assert np.abs(learned[a] - learned[b]).max() > 1e-3, (a, b)


def test_offline_distils_through_projection_and_runs_cycles(
    encoded_synthetic: EncodedDataset, cache_dir: Path, fold: Fold, make_teacher
) -> None:
    settings = _settings(cache_dir, "offline", "always", guard_tolerance=1.0)
    teacher = make_teacher()
    r = ChelatedRetriever(encoded_synthetic, settings, teacher, fold.guard)
    try:
        stored0 = r.index.stored_vectors()
        distilled = r.distill(fold.fit)
        assert distilled.fallback == "none" and not distilled.notes
        assert distilled.n_targets == len(encoded_synthetic.docs) + len(fold.fit)
        assert teacher.matrix.shape == (768, 384)
        stored1 = r.index.stored_vectors()
        assert np.abs(stored1 - stored0).max() > 1e-3
        teacher_docs = teacher.targets([r.dataset.corpus[d] for d in r.dataset.doc_ids])
        # distillation moved the documents towards the teacher
        assert mean_cosine(stored1, teacher_docs) > mean_cosine(stored0, teacher_docs) + 1e-3
        assert distilled.teacher_alignment == pytest.approx(mean_cosine(stored1, teacher_docs),
                                                            abs=1e-4)
        for cycle in range(2):
            batch = fold.fit[cycle * 10:(cycle + 1) * 10]
            assert r.run_queries(batch).n_chelated == len(batch)
            result = r.sediment(1.0)
            assert result.fallback == "none"
            assert result.n_targets > 0
            _assert_index_is_adapted_raw(r, encoded_synthetic)
        assert np.abs(r.index.stored_vectors() - stored1).max() > 1e-4
    finally:
        r.close()


# --- invariants across modes ----------------------------------------------------------------


@pytest.mark.parametrize("mode", ["frozen", "baseline", "hybrid", "offline"])
def test_index_always_holds_adapter_of_raw_after_cycles(
    mode: str, encoded_synthetic: EncodedDataset, cache_dir: Path, fold: Fold, make_teacher
) -> None:
    """With the default collapse guard (rollbacks allowed), the stored vectors are re-derived
    from raw after every update, never the adapter applied to already adapted vectors."""
    settings = _settings(cache_dir, mode, "always", push=0.5, lr=1e-2)
    teacher = make_teacher() if mode in ("hybrid", "offline") else None
    r = ChelatedRetriever(encoded_synthetic, settings, teacher, fold.guard)
    try:
        if mode == "offline":
            r.distill(fold.fit)
            _assert_index_is_adapted_raw(r, encoded_synthetic)
        for cycle in range(3):
            r.run_queries(fold.fit[cycle * 8:(cycle + 1) * 8])
            r.sediment(0.5)
            _assert_index_is_adapted_raw(r, encoded_synthetic)
        # searching through the index gives the exact cosine order of adapted vectors
        queries = r.adapter.apply(encoded_synthetic.query_matrix(fold.test[:5]))
        hits = r.index.search(queries, 10)
        docs = r.adapter.apply(encoded_synthetic.docs)
        expected = np.argsort(-(queries @ docs.T), axis=1)[:, :10]
        assert hits.doc_ids == [[r.dataset.doc_ids[j] for j in row] for row in expected]
    finally:
        r.close()


def test_collapse_guard_compares_with_the_better_of_last_accepted_and_untrained(
    encoded_synthetic: EncodedDataset, cache_dir: Path, fold: Fold,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Scripted validation scores 0.500 (untrained) -> 0.497 -> 0.494, tolerance 0.005: update 1
    is kept (0.003 down), update 2 is rolled back (0.003 below update 1, but 0.006 below the
    untrained score), and the index goes back to update 1's vectors."""
    settings = _settings(cache_dir, "baseline", "always", guard_tolerance=0.005, push=0.5,
                         lr=1e-2)
    r = ChelatedRetriever(encoded_synthetic, settings, None, fold.guard)
    scripted = iter([0.500, 0.497, 0.494])
    real_evaluate = ChelatedRetriever.evaluate

    def scripted_evaluate(self, query_ids):
        result = real_evaluate(self, query_ids)
        if list(query_ids) == list(fold.guard):
            result.ndcg_at_10 = next(scripted)
        return result

    monkeypatch.setattr(ChelatedRetriever, "evaluate", scripted_evaluate)
    try:
        r.run_queries(fold.fit[:N_BATCH])
        first = r.sediment(0.0)
        assert (first.val_before, first.val_after, first.rollback) == (0.500, 0.497, False)
        after_first = r.index.stored_vectors()
        state_first = r.adapter.snapshot()
        r.run_queries(fold.fit[N_BATCH:2 * N_BATCH])
        second = r.sediment(0.0)
        assert second.n_targets > 0
        assert (second.val_before, second.val_after, second.rollback) == (0.497, 0.494, True)
        assert states_equal(state_first, r.adapter.state_dict())
        np.testing.assert_allclose(r.index.stored_vectors(), after_first, atol=1e-6)
        assert r.validation_ndcg() == 0.497
    finally:
        r.close()


def test_collapse_guard_rolls_back_a_destructive_update(
    encoded_synthetic: EncodedDataset, cache_dir: Path, fold: Fold
) -> None:
    destructive = {"lr": 1.0, "push": 5.0, "epochs": 10}
    outcomes = {}
    for tolerance in (0.001, 1.0):
        settings = _settings(cache_dir, "baseline", "always", guard_tolerance=tolerance,
                             **destructive)
        r = ChelatedRetriever(encoded_synthetic, settings, None, fold.guard)
        try:
            before = r.adapter.snapshot()
            stored_before = r.index.stored_vectors()
            val_before = r.evaluate(fold.guard).ndcg_at_10
            r.run_queries(fold.fit[:N_BATCH])
            result = r.sediment(0.0)
            outcomes[tolerance] = result
            assert result.n_targets > 0
            assert result.val_before == pytest.approx(val_before)
            if tolerance == 1.0:  # guard off: the same update is kept, and it is destructive
                assert not result.rollback
                assert result.val_after < val_before - 0.05
                assert np.abs(r.index.stored_vectors() - stored_before).max() > 1e-2
            else:
                assert result.rollback
                assert result.val_after < result.val_before - 0.001  # the drop stays on record
                assert states_equal(before, r.adapter.state_dict())
                np.testing.assert_allclose(r.index.stored_vectors(), stored_before, atol=1e-6)
                assert r.evaluate(fold.guard).ndcg_at_10 == pytest.approx(val_before)
        finally:
            r.close()
    assert outcomes[0.001].train_loss == pytest.approx(outcomes[1.0].train_loss)


# --- whole jobs -----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["hybrid", "offline"])
def test_unloadable_teacher_falls_back_to_baseline(
    mode: str, synthetic: RetrievalDataset, encoded_synthetic: EncodedDataset, cache_dir: Path
) -> None:
    settings = _settings(cache_dir, mode, "always", teacher_model="/nonexistent/teacher",
                         guard_tolerance=1.0)
    seen = []
    result = run_job(synthetic, settings, on_cycle=seen.append, show_progress=False)
    assert [c.cycle for c in result.cycles] == [0, 1, 2]
    assert seen == result.cycles
    for record in result.cycles[1:]:
        assert record.fallback == "baseline"
        assert record.n_targets > 0  # homeostatic targets were used instead
        assert math.isfinite(record.ndcg_at_10)
        assert math.isnan(record.teacher_alignment)
    if mode == "hybrid":
        assert result.fallback == "baseline"
    else:  # nothing homeostatic to distil before any query ran
        assert result.fallbacks[0] == "no_update"
        assert result.fallback == "baseline,no_update"
    assert result.n_encoded == 0  # the student came from the session cache


def test_same_settings_and_seed_give_identical_metrics(
    synthetic: RetrievalDataset, cache_dir: Path, teacher768_path: str
) -> None:
    # the guard off: every update is kept, so the runs compare trained models
    settings = _settings(cache_dir, "hybrid", "always", teacher_model=teacher768_path,
                         push=0.5, lr=1e-2, guard_tolerance=1.0)
    first = run_job(synthetic, settings, show_progress=False)
    second = run_job(synthetic, settings, show_progress=False)
    assert [c.ndcg_at_10 for c in first.cycles] == [c.ndcg_at_10 for c in second.cycles]
    assert [c.per_query for c in first.cycles] == [c.per_query for c in second.cycles]
    assert [c.n_targets for c in first.cycles] == [c.n_targets for c in second.cycles]
    # not trivially equal: training happened and changed what the test queries retrieve
    assert all(c.n_targets > 0 for c in first.cycles[1:])
    assert any(c.per_query != first.cycles[0].per_query for c in first.cycles[1:])
    assert second.n_encoded == 0 and second.n_cached == len(synthetic.corpus) + len(
        synthetic.judged_query_ids)


@pytest.mark.parametrize("mode", ["baseline", "offline"])
def test_training_never_sees_test_or_validation_queries(
    mode: str, synthetic: RetrievalDataset, cache_dir: Path, fold: Fold, teacher768_path: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[str] = []
    distilled: list[str] = []
    real_queries, real_distill = ChelatedRetriever.run_queries, ChelatedRetriever.distill

    # the job's own model (fold 0); the inner folds' models have the recording test above
    def recording_queries(self, query_ids):
        if self.seed == 0:
            asked.extend(query_ids)
        return real_queries(self, query_ids)

    def recording_distill(self, train_query_ids=()):
        if self.seed == 0:
            distilled.extend(train_query_ids)
        return real_distill(self, train_query_ids)

    monkeypatch.setattr(ChelatedRetriever, "run_queries", recording_queries)
    monkeypatch.setattr(ChelatedRetriever, "distill", recording_distill)
    settings = _settings(cache_dir, mode, teacher_model=teacher768_path)
    result = run_job(synthetic, settings, show_progress=False)
    assert len(asked) == 2 * N_BATCH
    assert set(asked) <= set(fold.fit)
    if mode == "offline":  # the query texts distilled are the fit slice's, and only those
        assert sorted(distilled) == sorted(fold.fit)
        assert result.fallback == "none"
    assert set(result.cycles[-1].per_query) == set(fold.test)


def test_kfold_folds_each_get_their_own_index_in_memory_or_on_disk(
    synthetic: RetrievalDataset, cache_dir: Path, tmp_path: Path
) -> None:
    """Every fold trains its own adapter, so each needs its own index: on disk two folds cannot
    share one folder, and on a server they must not share one collection."""
    results = {}
    for where in (":memory:", str(tmp_path / "qdrant")):
        settings = _settings(cache_dir, "baseline", "always", push=0.5, lr=1e-2)
        settings.protocol, settings.folds, settings.cycles = "kfold", 2, 1
        settings.engine = EngineSettings(location=where)
        settings.validate()
        results[where] = run_job(synthetic, settings, show_progress=False)
    memory, disk = results.values()
    for result in (memory, disk):
        # every judged query is scored once per cycle, by the fold that did not train on it
        assert [set(c.per_query) for c in result.cycles] == [set(synthetic.judged_query_ids)] * 2
        assert result.cycles[1].n_targets > 0
    assert [c.per_query for c in memory.cycles] == [c.per_query for c in disk.cycles]


def test_listwise_term_changes_offline_distillation(
    encoded_synthetic: EncodedDataset, cache_dir: Path, teacher768_path: str, fold: Fold
) -> None:
    states = {}
    for weight in (0.0, 1.0):
        settings = _settings(cache_dir, "offline", "never", teacher768_path,
                             guard_tolerance=1.0, listwise_weight=weight)
        teacher = Teacher(CachedEncoder(teacher768_path, cache_dir), "procrustes")
        r = ChelatedRetriever(encoded_synthetic, settings, teacher, fold.guard)
        try:
            result = r.distill(fold.fit)
            assert result.n_targets > 0 and not result.rollback
            states[weight] = r.index.stored_vectors()
            np.testing.assert_allclose(states[weight], r.adapter.apply(encoded_synthetic.docs),
                                       atol=1e-5)
        finally:
            r.close()
    assert np.abs(states[1.0] - states[0.0]).max() > 1e-3


def test_official_protocol_trains_on_train_queries_and_tests_every_test_query(
    synthetic: RetrievalDataset, cache_dir: Path
) -> None:
    settings = _settings(cache_dir)
    settings.protocol = "official"
    settings.selection.method = "holdout"
    ids = synthetic.judged_query_ids
    train, test = ids[: len(ids) // 2], ids[len(ids) // 2:]
    (fold,) = make_folds(test, settings, train)
    assert fold.test == test
    assert sorted(fold.training_side) == sorted(train)
    assert fold.select and not set(fold.select) & set(fold.fit + fold.guard)
    assert fold.guard and not set(fold.fit) & set(fold.guard)
    with pytest.raises(ValueError, match="protocol=official needs a dataset with its own train"):
        make_folds(test, settings)


def _recording_run(data: RetrievalDataset, settings, monkeypatch: pytest.MonkeyPatch):
    """Run a job with every retriever's entry points spied on: per retriever (one per fold,
    inner folds included), the queries it trained on, the queries its guard judged, and every
    query it scored outside its guard (test and selection). Returns (result, trained, guarded,
    scored)."""
    from collections import defaultdict

    trained: dict[int, set[str]] = defaultdict(set)
    scored: dict[int, set[str]] = defaultdict(set)
    guarded: dict[int, set[str]] = defaultdict(set)
    real = {name: getattr(ChelatedRetriever, name) for name in
            ("run_queries", "distill", "evaluate")}

    def spy_queries(self, query_ids):
        trained[id(self)].update(query_ids)
        return real["run_queries"](self, query_ids)

    def spy_distill(self, train_query_ids=()):
        trained[id(self)].update(train_query_ids)
        return real["distill"](self, train_query_ids)

    def spy_evaluate(self, query_ids):
        if list(query_ids) == list(self.val_query_ids):
            guarded[id(self)].update(query_ids)
        else:
            scored[id(self)].update(query_ids)
        return real["evaluate"](self, query_ids)

    for name, spy in (("run_queries", spy_queries), ("distill", spy_distill),
                      ("evaluate", spy_evaluate)):
        monkeypatch.setattr(ChelatedRetriever, name, spy)
    result = run_job(data, settings, show_progress=False)
    return result, trained, guarded, scored


@pytest.mark.parametrize("method", ["holdout", "inner"])
@pytest.mark.parametrize("protocol", ["split", "kfold", "official"])
def test_no_model_scores_a_query_it_trained_on_or_guarded(
    protocol: str, method: str, synthetic: RetrievalDataset, cache_dir: Path,
    teacher768_path: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every score a job logs, test or selection, comes from some retriever's `evaluate`: the
    recording reader checks, per retriever, that none of them read a query that trained that
    model or decided one of its updates, against the spied calls rather than make_folds."""
    from dataclasses import replace as dc_replace

    data = synthetic
    if protocol == "official":
        ids = synthetic.judged_query_ids
        data = dc_replace(synthetic, train_query_ids=tuple(ids[::3]))
    settings = _settings(cache_dir, "offline", teacher_model=teacher768_path)
    settings.protocol, settings.folds, settings.cycles = protocol, 3, 1
    settings.selection.method = method
    settings.validate()
    result, trained, guarded, scored = _recording_run(data, settings, monkeypatch)

    outer = 3 if protocol == "kfold" else 1
    assert len(trained) == outer * (1 + (settings.selection.inner_folds if method == "inner"
                                         else 0))
    for model in trained:
        assert trained[model] and guarded[model] and scored[model]
        assert not scored[model] & (trained[model] | guarded[model])
        assert not trained[model] & guarded[model]
    last = result.cycles[-1]
    tests = set(last.per_query)
    if protocol == "kfold":  # the test sets partition the judged queries
        assert tests == set(data.judged_query_ids)
    if protocol == "official":
        assert tests == set(data.judged_query_ids)
        assert set().union(*trained.values(), *guarded.values()) <= set(data.train_query_ids)
    for fold, chosen_on in last.selection.items():
        fold_tests = {q for q, k in last.test_fold.items() if k == fold}
        assert chosen_on and not set(chosen_on) & fold_tests


def test_a_trained_and_a_frozen_arm_are_chosen_on_the_same_queries(
    synthetic: RetrievalDataset, cache_dir: Path
) -> None:
    """Inside each fold every configuration is scored on the same selection queries, under
    both methods: the holdout slice, or (inner) the fold's whole training side."""
    for method in ("holdout", "inner"):
        chosen_on = {}
        for mode in ("frozen", "baseline"):
            settings = _settings(cache_dir, mode, "always", push=0.5, lr=1e-2)
            settings.protocol, settings.folds, settings.cycles = "kfold", 3, 1
            settings.selection.method = method
            settings.validate()
            result = run_job(synthetic, settings, show_progress=False)
            chosen_on[mode] = {i: set(s) for i, s in result.cycles[-1].selection.items()}
        folds = make_folds(synthetic.judged_query_ids, settings)
        assert chosen_on["frozen"] == chosen_on["baseline"]
        for i, f in enumerate(folds):
            expected = set(f.select) if method == "holdout" else set(f.training_side)
            assert chosen_on["frozen"][i] == expected
            assert not expected & set(f.test)


def test_frozen_cycles_repeat_cycle_zero_which_is_what_running_them_scores(
    synthetic: RetrievalDataset, encoded_synthetic: EncodedDataset, cache_dir: Path, fold: Fold
) -> None:
    settings = _settings(cache_dir, "frozen", "always")
    result = run_job(synthetic, settings, show_progress=False)
    assert [c.cycle for c in result.cycles] == [0, 1, 2]
    assert all(c.per_query == result.cycles[0].per_query for c in result.cycles)
    # running the cycles' phases for real changes nothing a frozen run scores
    r = ChelatedRetriever(encoded_synthetic, settings, None, fold.guard)
    try:
        for cycle in range(2):
            r.run_queries(fold.fit[cycle * N_BATCH:(cycle + 1) * N_BATCH])
            r.sediment(0.0)
        assert r.evaluate(fold.test).per_query == result.cycles[-1].per_query
    finally:
        r.close()
