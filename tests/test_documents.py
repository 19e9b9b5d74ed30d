"""The index's documents: the pure blend, and the whole pipeline with a real 768-wide stand-in
teacher, real MiniLM and the real Qdrant index (synthetic collection)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from chelation.data import RetrievalDataset
from chelation.documents import STUDENT_DOCUMENTS_FALLBACK, blend_documents, document_vectors
from chelation.encoders import CachedEncoder
from chelation.protocol import make_folds, run_job
from chelation.retriever import ChelatedRetriever, EncodedDataset
from chelation.settings import (
    ChelationSettings,
    IndexSettings,
    RunSettings,
    TeacherSettings,
    TrainingSettings,
)
from chelation.targets import mean_cosine
from chelation.teacher import Teacher
from tests.helpers import unit_rows

# --- the pure blend -------------------------------------------------------------------------


@pytest.mark.parametrize("w", [0.2, 0.8])
def test_blend_is_the_weighted_sum_in_the_right_order(w: float) -> None:
    rng = np.random.default_rng(0)
    s, t = unit_rows(rng, 50, 16), unit_rows(rng, 50, 16)
    expected = (1 - w) * s.astype(np.float64) + w * t
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(blend_documents(s, t, w), expected, atol=1e-6)
    # swapping the arguments (or using 1 - w) gives other vectors at these weights
    assert np.abs(blend_documents(t, s, w) - expected).max() > 1e-2


def test_cosine_to_the_teacher_rises_with_the_weight() -> None:
    rng = np.random.default_rng(1)
    s, t = unit_rows(rng, 200, 32), unit_rows(rng, 200, 32)
    cosines = [mean_cosine(blend_documents(s, t, w), t) for w in (0, 0.25, 0.5, 0.75, 1)]
    assert all(a < b for a, b in zip(cosines, cosines[1:], strict=False))
    assert cosines[-1] == pytest.approx(1.0, abs=1e-6)


def test_blend_at_zero_is_the_student_bit_for_bit() -> None:
    rng = np.random.default_rng(2)
    s, t = unit_rows(rng, 20, 8), unit_rows(rng, 20, 8)
    np.testing.assert_array_equal(blend_documents(s, t, 0.0), s)


def test_blend_rejects_other_widths_and_weights() -> None:
    s = np.ones((3, 4), dtype=np.float32)
    with pytest.raises(ValueError, match="project the teacher"):
        blend_documents(s, np.ones((3, 8), dtype=np.float32), 0.5)
    with pytest.raises(ValueError, match="outside"):
        blend_documents(s, s, 1.5)


def test_document_weight_names_the_teacher_share() -> None:
    assert IndexSettings("student", 0.7).document_weight == 0.0
    assert IndexSettings("teacher", 0.7).document_weight == 1.0
    assert IndexSettings("blend", 0.7).document_weight == 0.7


# --- the pipeline, for real -----------------------------------------------------------------


def _settings(cache_dir: Path, teacher_path: str, mode: str = "baseline",
              index: IndexSettings | None = None) -> RunSettings:
    return RunSettings(
        cycles=2, queries_per_cycle=20, cache_dir=str(cache_dir),
        teacher=TeacherSettings(name="stand-in", model=teacher_path),
        chelation=ChelationSettings(trigger="always"),
        training=TrainingSettings(mode=mode, guard_tolerance=1.0, push=0.5, lr=1e-2),
        index=index or IndexSettings(),
    )


def _independent_blend(encoded: EncodedDataset, teacher_raw: np.ndarray, w: float) -> np.ndarray:
    """Procrustes and blend written out here in float64, not through the library."""
    s = encoded.student_docs.astype(np.float64)
    u, _, vt = np.linalg.svd(teacher_raw.astype(np.float64).T @ s, full_matrices=False)
    projected = teacher_raw @ (u @ vt)
    projected /= np.linalg.norm(projected, axis=1, keepdims=True)
    blended = (1 - w) * s + w * projected
    return blended / np.linalg.norm(blended, axis=1, keepdims=True)


@pytest.mark.parametrize("mode", ["baseline", "hybrid"])
def test_index_holds_the_adapted_blend_of_every_document_after_training(
    mode: str, synthetic: RetrievalDataset, encoded_synthetic: EncodedDataset, cache_dir: Path,
    teacher768_path: str,
) -> None:
    w = 0.5
    settings = _settings(cache_dir, teacher768_path, mode, IndexSettings("blend", w))
    (fold,) = make_folds(synthetic.judged_query_ids, settings)
    teacher = Teacher(CachedEncoder(teacher768_path, cache_dir, show_progress=False))
    texts = [synthetic.corpus[d] for d in synthetic.doc_ids]
    choice = document_vectors(encoded_synthetic.docs, settings.index, teacher, texts)
    assert choice.fallback == "none"
    expected = _independent_blend(encoded_synthetic, teacher.encoder.encode(texts), w)
    np.testing.assert_allclose(choice.vectors, expected, atol=1e-5)

    r = ChelatedRetriever(encoded_synthetic.with_documents(choice.vectors), settings, teacher,
                          fold.guard)
    try:
        r.run_queries(fold.fit[:20])
        result = r.sediment(0.5)
        assert result.n_targets > 0 and not result.rollback
        stored = r.index.stored_vectors()
        np.testing.assert_allclose(stored, r.adapter.apply(expected.astype(np.float32)),
                                   atol=1e-5)
        # training moved the index away from the untrained blend, so the check has teeth
        assert np.abs(stored - expected).max() > 1e-3
    finally:
        r.close()


def test_blend_weight_zero_reproduces_student_documents_to_the_last_digit(
    synthetic: RetrievalDataset, cache_dir: Path, teacher768_path: str
) -> None:
    runs = {}
    for name, index in (("default", None), ("blend0", IndexSettings("blend", 0.0))):
        settings = _settings(cache_dir, teacher768_path, "hybrid", index)
        runs[name] = run_job(synthetic, settings, show_progress=False)
    default, blend0 = runs.values()
    assert [c.per_query for c in default.cycles] == [c.per_query for c in blend0.cycles]
    assert [c.train_loss for c in default.cycles[1:]] == [c.train_loss for c in blend0.cycles[1:]]
    assert all(c.n_targets > 0 for c in default.cycles[1:])


def test_teacher_documents_change_retrieval_and_unloadable_teacher_falls_back(
    synthetic: RetrievalDataset, cache_dir: Path, teacher768_path: str
) -> None:
    student = run_job(synthetic, _settings(cache_dir, teacher768_path, "frozen"),
                      show_progress=False)
    teacher = run_job(synthetic, _settings(cache_dir, teacher768_path, "frozen",
                                           IndexSettings("teacher")), show_progress=False)
    missing = run_job(synthetic, _settings(cache_dir, "/nonexistent/teacher", "frozen",
                                           IndexSettings("teacher")), show_progress=False)
    assert teacher.cycles[0].per_query != student.cycles[0].per_query
    assert teacher.fallback == "none"
    assert missing.fallback == STUDENT_DOCUMENTS_FALLBACK
    assert [c.per_query for c in missing.cycles] == [c.per_query for c in student.cycles]


def test_projection_fitted_with_train_queries_sees_only_the_fold_fit_queries(
    synthetic: RetrievalDataset, encoded_synthetic: EncodedDataset, cache_dir: Path,
    teacher768_path: str,
) -> None:
    teacher = Teacher(CachedEncoder(teacher768_path, cache_dir, show_progress=False))
    texts = [synthetic.corpus[d] for d in synthetic.doc_ids]
    seen: list[str] = []
    real_embed = teacher.embed

    def recording_embed(batch):
        seen.extend(batch)
        return real_embed(batch)

    teacher.embed = recording_embed  # the real teacher, observed
    settings = _settings(cache_dir, teacher768_path, "frozen",
                         IndexSettings("teacher", fit_queries=True))
    (fold,) = make_folds(synthetic.judged_query_ids, settings)
    corpus_only = document_vectors(encoded_synthetic.docs, IndexSettings("teacher"), teacher,
                                   texts)
    with_queries = document_vectors(
        encoded_synthetic.docs, settings.index, teacher, texts,
        [synthetic.queries[q] for q in fold.fit], encoded_synthetic.query_matrix(fold.fit))
    query_texts = set(seen) - set(texts)
    assert query_texts == {synthetic.queries[q] for q in fold.fit}
    assert not query_texts & {synthetic.queries[q] for q in fold.guard + fold.test}
    assert np.abs(with_queries.vectors - corpus_only.vectors).max() > 1e-4
    assert math.isclose(float(np.linalg.norm(with_queries.vectors[0])), 1.0, rel_tol=1e-5)
