"""The listwise distillation term: pure maths, and that it really trains the adapter."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from chelation.adapter import ListwiseTerm, ResidualAdapter, fit_adapter
from chelation.listwise import RankingTargets, listwise_kl, teacher_ranking
from tests.helpers import unit_rows


def test_teacher_ranking_keeps_the_teachers_top_k_and_a_distribution() -> None:
    rng = np.random.default_rng(0)
    queries, docs = unit_rows(rng, 5), unit_rows(rng, 40)
    top, probs = teacher_ranking(queries, docs, k=8, temperature=0.05)
    assert top.shape == probs.shape == (5, 8)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    scores = queries @ docs.T
    for i in range(5):
        assert set(top[i]) == set(np.argsort(-scores[i])[:8])
        # higher teacher score, higher probability
        order = np.argsort(-scores[i, top[i]])
        assert np.all(np.diff(probs[i][order]) <= 1e-7)


def test_teacher_ranking_rejects_a_non_positive_temperature() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="listwise_temperature=0"):
        teacher_ranking(unit_rows(rng, 2), unit_rows(rng, 4), k=2, temperature=0)


def test_kl_is_zero_when_the_student_ranks_as_the_teacher_and_positive_otherwise() -> None:
    rng = np.random.default_rng(1)
    q, d = unit_rows(rng, 3), unit_rows(rng, 30)
    top, probs = teacher_ranking(q, d, k=6, temperature=0.1)
    qt, dt = torch.from_numpy(q).float(), torch.from_numpy(d[top]).float()
    same = listwise_kl(qt, dt, torch.from_numpy(probs), temperature=0.1)
    assert same.item() == pytest.approx(0.0, abs=1e-5)
    other = listwise_kl(-qt, dt, torch.from_numpy(probs), temperature=0.1)
    assert other.item() > 0.1


def test_listwise_term_moves_the_students_ranking_towards_the_teacher() -> None:
    rng = np.random.default_rng(2)
    student_q, student_d = unit_rows(rng, 20), unit_rows(rng, 60)
    teacher_q, teacher_d = unit_rows(rng, 20), unit_rows(rng, 60)  # an unrelated teacher
    top, probs = teacher_ranking(teacher_q, teacher_d, k=8, temperature=0.05)
    term = ListwiseTerm(RankingTargets(student_q, top, probs), student_d, weight=1.0,
                        temperature=0.05)

    def kl(adapter: ResidualAdapter) -> float:
        with torch.no_grad():
            q = adapter(torch.from_numpy(student_q).float())
            d = adapter(torch.from_numpy(student_d[top].reshape(-1, 16)).float()).reshape(20, 8, 16)
            return listwise_kl(q, d, torch.from_numpy(probs), 0.05).item()

    adapter = ResidualAdapter(16, 32, seed=0)
    before = kl(adapter)
    # MSE targets equal to the inputs: on their own they ask for no change at all
    fit_adapter(adapter, student_d, student_d, epochs=30, lr=1e-2, batch_size=16, seed=0,
                listwise=term)
    assert kl(adapter) < 0.5 * before
