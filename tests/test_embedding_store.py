"""The embedding store on disk: round trips, interrupted and concurrent appends, damaged files
(detected, named, healed), unreadable manifests and caches of the older shard format."""

from __future__ import annotations

import logging
import multiprocessing
from pathlib import Path

import numpy as np
import pytest

from chelation.embedding_store import MANIFEST, EmbeddingStore, text_keys


def _rows(seed: int, n: int, dim: int = 8) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _texts(prefix: str, n: int) -> list[str]:
    return [f"{prefix} text {i}" for i in range(n)]


def _filled(folder: Path, chunks: int = 3, per_chunk: int = 10) -> tuple[list[str], np.ndarray]:
    store = EmbeddingStore(folder)
    texts, vectors = _texts("t", chunks * per_chunk), _rows(0, chunks * per_chunk)
    for c in range(chunks):
        part = slice(c * per_chunk, (c + 1) * per_chunk)
        store.append(text_keys(texts[part]), vectors[part])
    return texts, vectors


def test_round_trip_in_any_order_and_absent_keys(tmp_path: Path) -> None:
    texts, vectors = _filled(tmp_path)
    store = EmbeddingStore(tmp_path)
    assert len(store) == 30 and store.dim == 8
    order = np.random.default_rng(1).permutation(30)
    rows = store.lookup(text_keys([texts[i] for i in order]))
    np.testing.assert_array_equal(store.vectors(rows), vectors[order])
    assert store.lookup(text_keys(["never stored", texts[4]])).tolist() == [-1, 4]
    assert EmbeddingStore(tmp_path / "empty").lookup(text_keys(["x"])).tolist() == [-1]


def test_bytes_of_an_append_that_never_committed_are_ignored_then_overwritten(
        tmp_path: Path) -> None:
    texts, vectors = _filled(tmp_path, chunks=1)
    with open(tmp_path / "vectors-0.f32", "ab") as fh:  # killed after writing, before the manifest
        fh.write(b"\x7f" * 4 * 8 * 3)
    store = EmbeddingStore(tmp_path)
    assert len(store) == 10
    more, more_vectors = _texts("more", 2), _rows(5, 2)
    store.append(text_keys(more), more_vectors)
    again = EmbeddingStore(tmp_path)
    np.testing.assert_array_equal(again.vectors(again.lookup(text_keys(more))), more_vectors)
    np.testing.assert_array_equal(again.vectors(again.lookup(text_keys(texts))), vectors)


@pytest.mark.parametrize("damage", ["vectors to half", "vectors to zero", "vectors overwritten",
                                    "keys overwritten"])
def test_damaged_files_are_named_dropped_and_healed(tmp_path: Path, damage: str,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    texts, vectors = _filled(tmp_path)
    path = tmp_path / ("keys-0.bin" if damage.startswith("keys") else "vectors-0.f32")
    data = bytearray(path.read_bytes())
    if damage == "vectors to half":
        data = data[: len(data) // 2]          # chunk 0 intact, chunk 1 cut, chunk 2 gone
        intact = slice(0, 10)
    elif damage == "vectors to zero":
        data = bytearray()
        intact = slice(0, 0)
    else:
        data[len(data) // 2] ^= 0xFF           # one byte in the middle chunk
        intact = None
    path.write_bytes(bytes(data))

    with caplog.at_level(logging.WARNING, logger="chelation.embedding_store"):
        store = EmbeddingStore(tmp_path)
    assert str(path) in caplog.text
    assert "damaged" in caplog.text
    rows = store.lookup(text_keys(texts))
    if intact is None:
        assert (rows[10:20] == -1).all() and (rows[:10] >= 0).all() and (rows[20:] >= 0).all()
        keep = np.r_[0:10, 20:30]
    else:
        assert (rows[intact] >= 0).all() and (rows[intact.stop:] == -1).all()
        keep = np.arange(intact.stop)
    np.testing.assert_array_equal(store.vectors(rows[keep]), vectors[keep])  # never wrong ones

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="chelation.embedding_store"):
        healed = EmbeddingStore(tmp_path)
    assert caplog.text == "" and len(healed) == len(keep)
    assert (tmp_path / (path.name + ".damaged")).exists()  # moved aside, not deleted
    healed.append(text_keys([texts[i] for i in range(30) if i not in keep]),
                  vectors[[i for i in range(30) if i not in keep]])
    full = EmbeddingStore(tmp_path)
    np.testing.assert_array_equal(full.vectors(full.lookup(text_keys(texts))), vectors)


def test_unreadable_manifest_starts_afresh_with_its_files_kept_aside(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _filled(tmp_path)
    data = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.suffix in (".f32", ".bin")}
    assert data
    (tmp_path / MANIFEST).write_text('{"format": 1, "dim": 8, "chunks": [[10, ')
    with caplog.at_level(logging.WARNING, logger="chelation.embedding_store"):
        store = EmbeddingStore(tmp_path)
    assert str(tmp_path / MANIFEST) in caplog.text and ".damaged" in caplog.text
    assert len(store) == 0
    for name, content in data.items():  # set aside as they were, like a damaged chunk's files
        assert (tmp_path / f"{name}.damaged").read_bytes() == content
    assert (tmp_path / f"{MANIFEST}.damaged").exists()
    store.append(text_keys(["a"]), _rows(0, 1))
    assert len(EmbeddingStore(tmp_path)) == 1


def test_width_mismatch_is_refused(tmp_path: Path) -> None:
    store = EmbeddingStore(tmp_path)
    store.append(text_keys(["a"]), _rows(0, 1, dim=8))
    with pytest.raises(ValueError, match="9 wide.*holds 8"):
        store.append(text_keys(["b"]), _rows(0, 1, dim=9))


def test_shards_of_the_older_format_are_moved_in_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import hashlib

    texts, vectors = _texts("old", 5), _rows(3, 5)
    hexkeys = [hashlib.sha1(t.encode()).hexdigest() for t in texts]
    np.savez(tmp_path / "shard-1-1.npz", keys=np.asarray(hexkeys[:3]), vectors=vectors[:3])
    np.savez(tmp_path / "shard-2-1.npz", keys=np.asarray(hexkeys[3:]), vectors=vectors[3:])
    (tmp_path / "shard-3-1.npz").write_bytes(b"PK\x03\x04 half a zip")
    with caplog.at_level(logging.WARNING, logger="chelation.embedding_store"):
        store = EmbeddingStore(tmp_path)
    assert "older format" in caplog.text and "shard-3-1.npz" in caplog.text
    np.testing.assert_array_equal(store.vectors(store.lookup(text_keys(texts))), vectors)
    assert not list(tmp_path.glob("shard-*.npz"))


def _append_from_a_process(folder: str, worker: int) -> None:
    store = EmbeddingStore(folder)
    for c in range(5):
        texts = _texts(f"w{worker}c{c}", 7)
        store.append(text_keys(texts), _rows(100 * worker + c, 7))


def test_concurrent_appends_from_processes_all_land(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_append_from_a_process, args=(str(tmp_path), w))
               for w in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
        assert w.exitcode == 0
    store = EmbeddingStore(tmp_path)
    assert len(store) == 4 * 5 * 7
    for w in range(4):
        for c in range(5):
            rows = store.lookup(text_keys(_texts(f"w{w}c{c}", 7)))
            np.testing.assert_array_equal(store.vectors(rows), _rows(100 * w + c, 7))
