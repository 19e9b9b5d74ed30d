"""The residual adapter and its training step; the vector index on Qdrant's embedded engine (in a
temporary folder and in a given one) and, where `CHELATION_QDRANT_URL` names a running server, on
the server: no server binary is installable on the CI machine, so that case is skipped there."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from chelation.adapter import ResidualAdapter, fit_adapter
from chelation.collapse_log import CollapseLog
from chelation.engine import EdgeIndex, open_index
from chelation.settings import EngineSettings
from chelation.targets import l2_normalize
from tests.helpers import states_equal, unit_rows

# --- adapter ---------------------------------------------------------------------------------


def test_untrained_adapter_is_identity_on_unit_vectors() -> None:
    x = unit_rows(0, 50, 32)
    adapter = ResidualAdapter(32, hidden_dim=16, seed=3)
    out = adapter.apply(x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, x, atol=1e-6)
    # not the identity on vectors that are not unit length: it normalises
    np.testing.assert_allclose(adapter.apply(3 * x), x, atol=1e-6)


def test_adapter_with_init_scale_is_not_identity() -> None:
    x = unit_rows(0, 50, 32)
    adapter = ResidualAdapter(32, hidden_dim=16, seed=3, init_scale=0.5)
    assert np.abs(adapter.apply(x) - x).max() > 1e-2


def test_same_seed_same_init_other_seed_other_init() -> None:
    a = ResidualAdapter(24, hidden_dim=8, seed=7, init_scale=0.1)
    torch.manual_seed(999)  # the global RNG must not matter
    b = ResidualAdapter(24, hidden_dim=8, seed=7, init_scale=0.1)
    c = ResidualAdapter(24, hidden_dim=8, seed=8, init_scale=0.1)
    assert states_equal(a.state_dict(), b.state_dict())
    assert not torch.equal(a.down.weight, c.down.weight)
    assert not torch.equal(a.up.weight, c.up.weight)


def test_apply_empty_input() -> None:
    assert ResidualAdapter(5, hidden_dim=4).apply(np.zeros((0, 5))).shape == (0, 5)


def test_fit_adapter_reduces_loss_and_moves_towards_targets() -> None:
    raw = unit_rows(1, 64, 16)
    targets = l2_normalize(raw + 0.5 * unit_rows(2, 64, 16))
    adapter = ResidualAdapter(16, hidden_dim=32, seed=0)
    before_state = adapter.snapshot()
    x, y = torch.from_numpy(raw), torch.from_numpy(targets)
    with torch.no_grad():
        loss_before = F.mse_loss(adapter(x), y).item()
    last = fit_adapter(adapter, raw, targets, epochs=50, lr=1e-2, batch_size=16, seed=0)
    with torch.no_grad():
        loss_after = F.mse_loss(adapter(x), y).item()
    assert loss_after < 0.5 * loss_before
    assert last < loss_before
    assert not adapter.training  # left in eval mode
    assert not states_equal(before_state, adapter.state_dict())
    # the snapshot is a copy, not a view of the live parameters
    assert torch.count_nonzero(before_state["up.weight"]) == 0


def test_fit_adapter_is_deterministic_for_a_seed() -> None:
    raw = unit_rows(1, 40, 8)
    targets = unit_rows(2, 40, 8)
    a, b = ResidualAdapter(8, 16, seed=0), ResidualAdapter(8, 16, seed=0)
    fit_adapter(a, raw, targets, epochs=5, lr=1e-2, batch_size=8, seed=42)
    fit_adapter(b, raw, targets, epochs=5, lr=1e-2, batch_size=8, seed=42)
    assert states_equal(a.state_dict(), b.state_dict())


def test_fit_adapter_nothing_to_fit_returns_nan_and_changes_nothing() -> None:
    adapter = ResidualAdapter(8, 16, seed=0)
    before = adapter.snapshot()
    assert np.isnan(fit_adapter(adapter, np.zeros((0, 8)), np.zeros((0, 8)), 5, 1e-2, 4, 0))
    raw = unit_rows(0, 4, 8)
    assert np.isnan(fit_adapter(adapter, raw, raw, 0, 1e-2, 4, 0))
    assert states_equal(before, adapter.state_dict())


# --- collapse log ----------------------------------------------------------------------------


def test_collapse_log_counts_and_mean_centres() -> None:
    log = CollapseLog(n_docs=4, dim=2)
    log.record(np.array([0, 1]), np.array([1.0, 0.0]))
    log.record(np.array([1, 2]), np.array([0.0, 1.0]))
    assert log.n_events == 4
    np.testing.assert_array_equal(log.counts, [1, 2, 1, 0])
    np.testing.assert_array_equal(log.frequent(2), [1])
    np.testing.assert_array_equal(log.frequent(1), [0, 1, 2])
    np.testing.assert_allclose(log.mean_centres(np.array([0, 1, 2])),
                               [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])
    log.clear()
    assert log.n_events == 0 and log.frequent(1).size == 0


# --- engine ----------------------------------------------------------------------------------


_SERVER = os.environ.get("CHELATION_QDRANT_URL")


@pytest.fixture(params=["memory", "path", pytest.param("server", marks=pytest.mark.skipif(
    not _SERVER, reason="no Qdrant server: set CHELATION_QDRANT_URL to test against one"))])
def engine_settings(request: pytest.FixtureRequest, tmp_path: Path) -> EngineSettings:
    if request.param == "memory":
        return EngineSettings(location=":memory:", collection="t")
    if request.param == "server":
        return EngineSettings(url=_SERVER, collection="t")
    return EngineSettings(location=str(tmp_path / "qdrant"), collection="t")


def _brute_force(docs: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = l2_normalize(queries) @ l2_normalize(docs).T
    order = np.argsort(-scores, axis=1)[:, :k]
    return order, np.take_along_axis(scores, order, axis=1)


def test_search_returns_original_ids_in_exact_cosine_order(engine_settings) -> None:
    n, dim, k = 300, 24, 15
    docs = unit_rows(10, n, dim)
    doc_ids = [f"doc-{(7 * i) % n}x" for i in range(n)]  # not positions, not sorted
    queries = np.random.default_rng(11).normal(size=(12, dim)).astype(np.float32)
    index = open_index(dim, engine_settings)
    try:
        index.index(doc_ids, docs)
        hits = index.search(queries, k, with_vectors=True)
        order, expected_scores = _brute_force(docs, queries, k)
        assert hits.doc_ids == [[doc_ids[j] for j in row] for row in order]
        np.testing.assert_allclose(np.asarray(hits.scores), expected_scores, atol=1e-5)
        assert hits.vectors.shape == (12, k, dim)
        np.testing.assert_allclose(hits.vectors, docs[order], atol=1e-6)
        assert index.search(queries[:2], 3).vectors is None
    finally:
        index.close()


def test_replace_vectors_then_stored_vectors_round_trip(engine_settings) -> None:
    n, dim = 8200, 8  # more than one upsert batch
    index = open_index(dim, engine_settings)
    try:
        first = unit_rows(1, n, dim)
        index.index([str(i) for i in range(n)], first)
        np.testing.assert_allclose(index.stored_vectors(), first, atol=1e-6)
        second = unit_rows(2, n, dim)
        index.replace_vectors(second)
        np.testing.assert_allclose(index.stored_vectors(), second, atol=1e-6)
        # searches see the new vectors, ids unchanged
        hits = index.search(second[[5, 8199]], 1)
        assert hits.doc_ids == [["5"], ["8199"]]
        with pytest.raises(ValueError, match="8199 vectors for 8200"):
            index.replace_vectors(second[:-1])
        with pytest.raises(ValueError, match="wide"):
            index.replace_vectors(np.ones((n, dim + 1), dtype=np.float32))
    finally:
        index.close()


def test_new_index_on_existing_folder_starts_empty(tmp_path: Path) -> None:
    settings = EngineSettings(location=str(tmp_path / "q"), collection="c")
    index = open_index(4, settings)
    assert isinstance(index, EdgeIndex)
    index.index(["a", "b"], unit_rows(0, 2, 4))
    assert index.count() == 2
    index.close()
    again = open_index(4, settings)
    try:
        assert again.count() == 0
    finally:
        again.close()


def test_temporary_shard_is_removed_on_close() -> None:
    index = open_index(4, EngineSettings())
    index.index(["a"], unit_rows(0, 1, 4))
    assert index.path.exists()
    index.close()
    assert not index.path.exists()


def test_edge_top_100_matches_exact_numpy_on_a_larger_index() -> None:
    docs, queries = unit_rows(20, 5000, 64), unit_rows(21, 40, 64)
    index = open_index(64)
    try:
        index.index([str(i) for i in range(len(docs))], docs)
        hits = index.search(queries, 100)
        order, _ = _brute_force(docs, queries, 100)
        assert hits.doc_ids == [[str(j) for j in row] for row in order]
    finally:
        index.close()


def test_engine_errors_name_the_key_and_value(tmp_path: Path) -> None:
    from chelation.engine import EngineUnavailable

    with pytest.raises(EngineUnavailable, match=r"engine.url=http://127.0.0.1:1: cannot open"):
        open_index(4, EngineSettings(url="http://127.0.0.1:1"))
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(EngineUnavailable, match=rf"engine.location={blocker}/shard"):
        open_index(4, EngineSettings(location=str(blocker / "shard")))


def test_a_large_input_is_applied_in_slices_with_the_same_result() -> None:
    from chelation.adapter import _MANY_ROWS

    x = unit_rows(5, _MANY_ROWS + 123, 16)
    adapter = ResidualAdapter(16, hidden_dim=8, seed=1, init_scale=0.3)
    whole = adapter.apply(x)
    pieces = np.concatenate([adapter.apply(x[:1000]), adapter.apply(x[1000:_MANY_ROWS - 1]),
                             adapter.apply(x[_MANY_ROWS - 1:])])
    np.testing.assert_allclose(whole, pieces, atol=1e-6)
