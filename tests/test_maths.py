"""Pure maths: targets, blending, projections, chelation trigger and rerank, schedules, metrics,
and the settings schema. No model and no index."""

from __future__ import annotations

import math

import numpy as np
import pytest

from chelation.metrics import mean_and_std, per_query_scores
from chelation.neighbourhood import (
    adaptive_threshold,
    centred_rerank,
    neighbourhood_entropy,
    should_chelate,
)
from chelation.projection import (
    fit_least_squares,
    fit_procrustes,
    fit_projection,
    fit_truncate,
    project,
)
from chelation.schedules import teacher_weight_at
from chelation.settings import (
    RunSettings,
    SettingsError,
    TrainingSettings,
    WeightSchedule,
)
from chelation.targets import (
    blend_targets,
    check_teacher_weight,
    homeostatic_targets,
    l2_normalize,
    mean_cosine,
)
from tests.helpers import unit_rows

# --- targets ---------------------------------------------------------------------------------


def test_l2_normalize_rows_and_zero_rows() -> None:
    out = l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]]))
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0]], atol=1e-7)


def test_homeostatic_targets_move_away_from_centre_and_are_unit() -> None:
    rng = np.random.default_rng(0)
    v = unit_rows(rng, 20, 16)
    centres = l2_normalize(v + 0.5 * unit_rows(rng, 20, 16))
    t = homeostatic_targets(v, centres, push=0.3)
    np.testing.assert_allclose(np.linalg.norm(t, axis=1), 1.0, atol=1e-6)
    before = np.linalg.norm(v - centres, axis=1)
    after = np.linalg.norm(t - centres, axis=1)
    assert np.all(after > before)
    # the move itself points away from the centre
    assert np.all(np.sum((t - v) * (v - centres), axis=1) > 0)


def test_homeostatic_target_hand_case() -> None:
    v = np.array([[1.0, 0.0]], dtype=np.float32)
    c = np.array([[0.0, 1.0]], dtype=np.float32)
    # v - c = (1, -1) -> unit (0.7071, -0.7071); v + 0.5 * that = (1.35355, -0.35355)
    expected = np.array([[1.0 + 0.5 / math.sqrt(2), -0.5 / math.sqrt(2)]])
    expected /= np.linalg.norm(expected)
    np.testing.assert_allclose(homeostatic_targets(v, c, 0.5), expected, atol=1e-6)


def test_homeostatic_push_zero_is_identity_and_negative_push_raises() -> None:
    rng = np.random.default_rng(1)
    v = unit_rows(rng, 5, 8)
    c = unit_rows(rng, 5, 8)
    np.testing.assert_allclose(homeostatic_targets(v, c, 0.0), v, atol=1e-6)
    with pytest.raises(ValueError, match="push"):
        homeostatic_targets(v, c, -0.1)


def test_blend_targets_endpoints_and_interior() -> None:
    rng = np.random.default_rng(2)
    h = unit_rows(rng, 10, 12)
    t = unit_rows(rng, 10, 12)
    np.testing.assert_allclose(blend_targets(h, t, 0.0), h, atol=1e-6)
    np.testing.assert_allclose(blend_targets(h, t, 1.0), t, atol=1e-6)
    for w in (0.25, 0.5, 0.75):
        mid = blend_targets(h, t, w)
        np.testing.assert_allclose(np.linalg.norm(mid, axis=1), 1.0, atol=1e-6)
        assert np.abs(mid - h).max() > 1e-2
        assert np.abs(mid - t).max() > 1e-2
        np.testing.assert_allclose(mid, l2_normalize((1 - w) * h + w * t), atol=1e-6)
    # more teacher weight, closer to the teacher
    assert mean_cosine(blend_targets(h, t, 0.75), t) > mean_cosine(blend_targets(h, t, 0.25), t)


@pytest.mark.parametrize("bad", [1.5, -0.2, float("nan")])
def test_teacher_weight_outside_unit_interval_raises_naming_value(bad: float) -> None:
    rng = np.random.default_rng(3)
    h = unit_rows(rng, 3, 4)
    with pytest.raises(ValueError, match=str(bad)):
        blend_targets(h, h, bad)
    with pytest.raises(ValueError, match=str(bad)):
        check_teacher_weight(bad)


def test_check_teacher_weight_accepts_bounds() -> None:
    assert check_teacher_weight(0) == 0.0
    assert check_teacher_weight(1) == 1.0
    assert isinstance(check_teacher_weight(1), float)


def test_blend_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="project the teacher"):
        blend_targets(np.ones((2, 4)), np.ones((2, 8)), 0.5)


def test_mean_cosine() -> None:
    a = np.array([[1.0, 0.0], [0.0, 2.0]])
    b = np.array([[1.0, 0.0], [2.0, 0.0]])
    assert mean_cosine(a, b) == pytest.approx(0.5)


# --- projections -----------------------------------------------------------------------------


def _orthogonal(rng: np.random.Generator, n: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(n, n)))
    return q * np.sign(np.diag(r))


def test_procrustes_recovers_known_rotation() -> None:
    rng = np.random.default_rng(4)
    rotation = _orthogonal(rng, 8)
    teacher = rng.normal(size=(200, 8)).astype(np.float32)
    student = teacher @ rotation
    p = fit_procrustes(teacher, student)
    assert p.shape == (8, 8)
    np.testing.assert_allclose(p, rotation, atol=1e-4)
    np.testing.assert_allclose(project(teacher, p), l2_normalize(student), atol=1e-4)


def test_procrustes_768_to_384_has_orthonormal_columns_and_recovers_map() -> None:
    rng = np.random.default_rng(5)
    semi, _ = np.linalg.qr(rng.normal(size=(768, 384)))  # orthonormal columns
    # whitened teacher (T'T = n I): there the SVD solution is the exact semi-orthogonal optimum
    basis, _ = np.linalg.qr(rng.normal(size=(800, 768)))
    teacher = (basis * math.sqrt(800)).astype(np.float32)
    student = teacher @ semi
    p = fit_procrustes(teacher, student)
    assert p.shape == (768, 384)
    np.testing.assert_allclose(p.T @ p, np.eye(384), atol=1e-4)
    np.testing.assert_allclose(p, semi, atol=1e-3)
    # on unrelated data it still gives orthonormal columns
    unrelated = rng.normal(size=(800, 768)).astype(np.float32)
    p2 = fit_procrustes(unrelated, rng.normal(size=(800, 384)).astype(np.float32))
    np.testing.assert_allclose(p2.T @ p2, np.eye(384), atol=1e-4)


def test_a_projection_is_fitted_once_per_process_for_the_same_embeddings(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from chelation import projection

    rng = np.random.default_rng(8)
    teacher, student = (rng.normal(size=(60, 8)).astype(np.float32) for _ in range(2))
    calls = []
    monkeypatch.setitem(projection.PROJECTIONS, "procrustes",
                        lambda t, s: calls.append(1) or fit_procrustes(t, s))
    first = fit_projection("procrustes", teacher, student)
    first[0, 0] = 99.0  # a caller's copy: the kept fit is untouched
    again = fit_projection("procrustes", teacher.copy(), student.copy())
    assert len(calls) == 1
    np.testing.assert_array_equal(again, fit_procrustes(teacher, student))
    fit_projection("procrustes", teacher, student[::-1].copy())  # other embeddings: fitted
    assert len(calls) == 2


def test_least_squares_recovers_linear_map_that_procrustes_cannot() -> None:
    rng = np.random.default_rng(6)
    m = rng.normal(size=(8, 4))
    teacher = rng.normal(size=(100, 8))
    student = teacher @ m
    p = fit_least_squares(teacher, student)
    np.testing.assert_allclose(p, m, atol=1e-4)
    assert np.abs(fit_projection("procrustes", teacher, student) - m).max() > 0.1


def test_truncate_keeps_first_dims_or_zero_pads() -> None:
    rng = np.random.default_rng(7)
    wide = rng.normal(size=(10, 6)).astype(np.float32)
    p = fit_truncate(wide, np.zeros((10, 4)))
    np.testing.assert_array_equal(p, np.eye(6, 4))
    np.testing.assert_allclose(project(wide, p), l2_normalize(wide[:, :4]), atol=1e-6)
    narrow = rng.normal(size=(10, 3)).astype(np.float32)
    p = fit_projection("truncate", narrow, np.zeros((10, 5)))
    padded = np.hstack([narrow, np.zeros((10, 2))])
    np.testing.assert_allclose(project(narrow, p), l2_normalize(padded), atol=1e-6)


def test_projection_errors() -> None:
    with pytest.raises(ValueError, match="umap"):
        fit_projection("umap", np.ones((3, 2)), np.ones((3, 2)))
    with pytest.raises(ValueError, match="paired"):
        fit_procrustes(np.ones((3, 2)), np.ones((4, 2)))
    with pytest.raises(ValueError, match="768"):
        project(np.ones((2, 384)), np.ones((768, 384)))


# --- chelation maths -------------------------------------------------------------------------


def test_neighbourhood_entropy_hand_case_and_batches() -> None:
    single = np.array([[0.0, 1.0], [2.0, 1.0]])
    # variance per dimension (1, 0) -> mean 0.5
    assert float(neighbourhood_entropy(single)) == pytest.approx(0.5)
    batch = np.stack([single, np.ones((2, 2)), np.array([[0.0, 0.0], [4.0, 2.0]])])
    np.testing.assert_allclose(neighbourhood_entropy(batch), [0.5, 0.0, (4.0 + 1.0) / 2])


def test_adaptive_threshold() -> None:
    assert adaptive_threshold(np.array([]), 0.5) == math.inf
    assert adaptive_threshold(np.array([1.0, 2.0, 3.0]), 0.5) == pytest.approx(2.0)
    assert adaptive_threshold(np.array([1.0, 2.0, 3.0]), 1.0) == pytest.approx(3.0)
    with pytest.raises(ValueError, match="1.5"):
        adaptive_threshold(np.array([1.0]), 1.5)


def test_should_chelate_triggers() -> None:
    e = np.array([0.1, 0.5, 0.9])
    np.testing.assert_array_equal(should_chelate(e, "always", math.inf), [True, True, True])
    np.testing.assert_array_equal(should_chelate(e, "never", -math.inf), [False, False, False])
    np.testing.assert_array_equal(should_chelate(e, "adaptive", 0.5), [False, True, True])
    np.testing.assert_array_equal(should_chelate(e, "adaptive", math.inf), [False, False, False])
    with pytest.raises(ValueError, match="sometimes"):
        should_chelate(e, "sometimes", 0.5)


def test_centred_rerank_reorders_against_plain_cosine() -> None:
    neighbours = np.array([[1.0, 0.0], [0.8, 0.6], [0.8, -0.6]])
    query = np.array([0.9, 0.1])
    plain = np.argsort(-(neighbours @ query) / np.linalg.norm(neighbours, axis=1))
    np.testing.assert_array_equal(plain, [0, 1, 2])
    # centre (0.8667, 0): centred cosines are A 0.316, B 0.908, C -0.978 (worked by hand)
    order, centre = centred_rerank(query, neighbours)
    np.testing.assert_array_equal(order, [1, 0, 2])
    np.testing.assert_allclose(centre, [2.6 / 3, 0.0], atol=1e-12)


# --- schedules -------------------------------------------------------------------------------


def test_constant_schedule() -> None:
    assert [teacher_weight_at("constant", c, 4, 0.3, 0.9) for c in (1, 2, 3, 4)] == [0.3] * 4


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_anneal_endpoints_and_midpoint(kind: str) -> None:
    assert teacher_weight_at(kind, 1, 5, 1.0, 0.2) == pytest.approx(1.0)
    assert teacher_weight_at(kind, 5, 5, 1.0, 0.2) == pytest.approx(0.2)
    assert teacher_weight_at(kind, 3, 5, 1.0, 0.2) == pytest.approx(0.6)
    assert teacher_weight_at(kind, 1, 1, 0.7, 0.1) == pytest.approx(0.7)


def test_linear_and_cosine_differ_between_endpoints() -> None:
    linear = teacher_weight_at("linear", 2, 5, 1.0, 0.0)
    cosine = teacher_weight_at("cosine", 2, 5, 1.0, 0.0)
    assert linear == pytest.approx(0.75)
    assert cosine == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))


def test_schedule_errors() -> None:
    with pytest.raises(ValueError, match="cycle=0"):
        teacher_weight_at("linear", 0, 3, 1.0, 0.0)
    with pytest.raises(ValueError, match="cycle=4"):
        teacher_weight_at("linear", 4, 3, 1.0, 0.0)
    with pytest.raises(ValueError, match="1.2"):
        teacher_weight_at("constant", 1, 3, 1.2, 0.0)
    with pytest.raises(ValueError, match="step"):
        teacher_weight_at("step", 1, 3, 1.0, 0.0)


# --- metrics ---------------------------------------------------------------------------------


def _dcg(gains: list[float]) -> float:
    return sum(g / math.log2(rank + 2) for rank, g in enumerate(gains))


def test_ndcg_at_10_normalises_by_all_judged_documents() -> None:
    qrels = {"q1": {"d1": 2, "d2": 1, "d3": 1, "d4": 0}}
    # d3 (relevant) is never retrieved; "x" is unjudged
    run = {"q1": {"d1": 0.9, "x": 0.8, "d2": 0.7, "d4": 0.6}}
    dcg = _dcg([2, 0, 1, 0])
    ideal_all = _dcg([2, 1, 1])
    ideal_retrieved = _dcg([2, 1])
    expected = dcg / ideal_all
    scores = per_query_scores(qrels, run)
    assert scores["q1"]["ndcg_at_10"] == pytest.approx(expected, abs=1e-4)
    assert expected == pytest.approx(0.7985, abs=1e-4)
    # the upstream bug: normalising by the retrieved documents only reads higher
    assert abs(scores["q1"]["ndcg_at_10"] - dcg / ideal_retrieved) > 0.1
    assert scores["q1"]["recall_at_100"] == pytest.approx(2 / 3)


def test_ndcg_perfect_and_cut_at_ten() -> None:
    qrels = {"q": {"r": 1}}
    run_top = {"q": {"r": 1.0, "a": 0.5}}
    assert per_query_scores(qrels, run_top)["q"]["ndcg_at_10"] == pytest.approx(1.0)
    # relevant document at rank 11: outside the cut for NDCG@10, inside recall@100
    run_deep = {"q": {**{f"n{i:02d}": 1.0 - i / 100 for i in range(10)}, "r": 0.01}}
    got = per_query_scores(qrels, run_deep)["q"]
    assert got["ndcg_at_10"] == 0.0
    assert got["recall_at_100"] == 1.0


def test_empty_run_scores_zero_and_every_judged_query_is_reported() -> None:
    qrels = {"q1": {"d1": 1}, "q2": {"d2": 1}, "q3": {"d3": 1}}
    run = {"q1": {"d1": 1.0}, "q2": {}, "other": {"d1": 1.0}}
    scores = per_query_scores(qrels, run)
    assert set(scores) == {"q1", "q2", "q3"}
    assert scores["q1"]["ndcg_at_10"] == pytest.approx(1.0)
    for q in ("q2", "q3"):
        assert scores[q] == {"ndcg_at_10": 0.0, "recall_at_100": 0.0}


def test_mean_and_std() -> None:
    assert mean_and_std([1.0, 3.0]) == pytest.approx((2.0, math.sqrt(2.0)))
    assert mean_and_std([4.0]) == (4.0, 0.0)
    mean, std = mean_and_std([])
    assert math.isnan(mean) and math.isnan(std)


# --- settings --------------------------------------------------------------------------------


def test_default_settings_are_valid() -> None:
    settings = RunSettings()
    assert settings.validate() is settings
    assert settings.training.mode == "baseline"


@pytest.mark.parametrize(
    ("build", "key"),
    [
        (lambda: RunSettings(training=TrainingSettings(mode="teacherish")), "training.mode"),
        (lambda: RunSettings(weight=WeightSchedule(value=1.5)), "weight.value"),
        (lambda: RunSettings(weight=WeightSchedule(schedule="linear", end=-0.1)), "weight.end"),
        (lambda: RunSettings(training=TrainingSettings(epochs=-1)), "training.epochs"),
        (lambda: RunSettings(training=TrainingSettings(lr=0.0)), "training.lr"),
        (lambda: RunSettings(cycles=-2), "cycles"),
        (lambda: RunSettings(test_fraction=1.0), "test_fraction"),
    ],
)
def test_bad_settings_raise_naming_the_key(build, key: str) -> None:
    with pytest.raises(SettingsError) as err:
        build()
    assert str(err.value).startswith(f"{key}=")
    assert isinstance(err.value, ValueError)


def test_settings_mutated_after_construction_are_caught_by_validate() -> None:
    settings = RunSettings()
    settings.chelation.trigger = "sometimes"
    with pytest.raises(SettingsError, match=r"chelation\.trigger"):
        settings.validate()
