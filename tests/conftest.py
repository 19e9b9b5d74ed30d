"""Shared fixtures: offline model hub, one embedding cache per test session, the real student,
a real 768-wide stand-in teacher, and the synthetic collection encoded once."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import shutil  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

# One embedding cache for the whole suite, subprocesses included (they inherit the variable):
# nothing is encoded twice. CI points it at a folder it keeps; locally a temporary one.
_OWN_CACHE = None if os.environ.get("CHELATION_TEST_CACHE") else \
    tempfile.mkdtemp(prefix="chelation-test-cache-")
if _OWN_CACHE:
    os.environ["CHELATION_TEST_CACHE"] = _OWN_CACHE

import pytest  # noqa: E402

from chelation.data import RetrievalDataset, make_synthetic  # noqa: E402
from chelation.encoders import CachedEncoder  # noqa: E402
from chelation.retriever import EncodedDataset  # noqa: E402

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
TEACHER_SEED = 1234


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    """Embedding cache shared by the whole session and its subprocesses (CHELATION_TEST_CACHE)."""
    path = Path(os.environ["CHELATION_TEST_CACHE"]).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def teacher768_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real sentence-transformers model 768 wide: MiniLM's transformer and pooling followed by
    a Dense(384, 768) layer with seeded random weights, saved to a folder and loaded by path.

    The folder name is fixed, so its cache fingerprint is the same in every session (the weights
    are seeded, hence identical) and a reused CHELATION_TEST_CACHE stays valid."""
    import torch
    from sentence_transformers import SentenceTransformer

    try:
        from sentence_transformers.sentence_transformer.modules import Dense
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers.models import Dense

    from chelation.models import resolve_model

    base = SentenceTransformer(resolve_model(MINILM), device="cpu")
    torch.manual_seed(TEACHER_SEED)
    width = getattr(base, "get_embedding_dimension", None) or base.get_sentence_embedding_dimension
    dense = Dense(width(), 768)
    teacher = SentenceTransformer(modules=[base[0], base[1], dense], device="cpu")
    path = tmp_path_factory.mktemp("models") / f"minilm-dense768-seed{TEACHER_SEED}"
    teacher.save(str(path))
    return str(path)


@pytest.fixture(scope="session")
def synthetic() -> RetrievalDataset:
    return make_synthetic(0)


@pytest.fixture(scope="session")
def encoded_synthetic(synthetic: RetrievalDataset, cache_dir: Path) -> EncodedDataset:
    """The synthetic collection's raw MiniLM embeddings (encoded once per session)."""
    from chelation.protocol import encode_dataset

    encoder = CachedEncoder(MINILM, cache_dir, show_progress=False)
    return encode_dataset(synthetic, encoder)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _OWN_CACHE:
        shutil.rmtree(_OWN_CACHE, ignore_errors=True)
