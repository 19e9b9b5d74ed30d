"""SciFact, the original benchmark's dataset, under the official protocol: the frozen student
through the engine's Qdrant index reproduces the figure MTEB publishes for all-MiniLM-L6-v2 on the
300 test claims (NDCG@10 0.6451, ../shared/datasets/README.md). Encodes 5,183 abstracts once."""

from __future__ import annotations

from pathlib import Path

import pytest

from chelation.data import load_dataset
from chelation.protocol import run_job
from chelation.settings import DatasetSpec, RunSettings, TrainingSettings

SCIFACT = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "scifact"
MTEB_MINILM_NDCG10 = 0.6451  # MTEB's published all-MiniLM-L6-v2 SciFact test figure

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not SCIFACT.is_dir(),
                                                  reason="shared SciFact copy not present")]


def test_frozen_minilm_on_the_300_test_claims_matches_mteb(cache_dir: Path) -> None:
    dataset = load_dataset(DatasetSpec(name="scifact", kind="beir", path=str(SCIFACT),
                                       train_split="train"))
    settings = RunSettings(protocol="official", cycles=0, cache_dir=str(cache_dir),
                           training=TrainingSettings(mode="frozen"), query_cost_sample=4)
    result = run_job(dataset, settings, show_progress=False)
    (cycle0,) = result.cycles
    assert len(cycle0.per_query) == 300
    assert set(cycle0.per_query) == set(dataset.judged_query_ids)
    assert cycle0.ndcg_at_10 == pytest.approx(MTEB_MINILM_NDCG10, abs=0.002)
    # the validation slice is train claims: scored, and never a test claim
    assert 0.0 < cycle0.val_ndcg_at_10 < 1.0
    assert result.query_cost is not None and result.query_cost.n_queries == 4
    assert result.query_cost.encode_ms > 0 and result.query_cost.search_ms > 0
