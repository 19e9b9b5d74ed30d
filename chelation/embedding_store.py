"""An on-disk store of one model's embeddings: one contiguous float32 matrix (memory-mapped) and
one array of 20-byte text keys, described by a manifest that lists the chunks appended so far with
a CRC-32 of each.

Appending writes the chunk past the last committed row, then replaces the manifest atomically: a
process killed mid-append leaves bytes that no manifest counts, which the next append overwrites.
Appends from several processes are serialised by a lock file. On open every chunk is checked
against its CRC and the files' lengths; a damaged chunk is dropped with a warning that names the
file, the store is rewritten without it (the damaged files kept aside), and its texts count as
missing (so they are encoded again). Loading a million vectors reads two files and allocates no
object per vector."""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

KEY_DTYPE = np.dtype("S20")  # a SHA-1 digest of the text
MANIFEST = "manifest.json"
FORMAT = 1
_LOCK = ".lock"
_LEGACY_SHARDS = "shard-*.npz"


def text_keys(texts: Sequence[str]) -> np.ndarray:
    """The store's key of each text (SHA-1 of its UTF-8 bytes)."""
    return np.array([hashlib.sha1(t.encode("utf-8")).digest() for t in texts], dtype=KEY_DTYPE)


@dataclass(frozen=True)
class Chunk:
    rows: int
    vectors_crc: int
    keys_crc: int


@dataclass(frozen=True)
class Manifest:
    dim: int
    generation: int
    chunks: tuple[Chunk, ...]

    @property
    def rows(self) -> int:
        return sum(c.rows for c in self.chunks)

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, "dim": self.dim, "generation": self.generation,
                           "chunks": [[c.rows, c.vectors_crc, c.keys_crc] for c in self.chunks]})

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        data = json.loads(text)
        if data.get("format") != FORMAT:
            raise ValueError(f"format {data.get('format')!r}, expected {FORMAT}")
        return cls(dim=int(data["dim"]), generation=int(data["generation"]),
                   chunks=tuple(Chunk(rows=int(r), vectors_crc=int(v), keys_crc=int(k))
                                for r, v, k in data["chunks"]))


class EmbeddingStore:
    """Unit embeddings of one model, looked up by text key."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder).expanduser()
        self.folder.mkdir(parents=True, exist_ok=True)
        self._manifest: Manifest | None = None
        self._vectors = np.zeros((0, 0), dtype=np.float32)
        self._keys = np.zeros(0, dtype=KEY_DTYPE)
        self._sorted: tuple[np.ndarray, np.ndarray] | None = None
        with self._locked():
            imported = self._import_legacy_shards()  # verifies what was there before it
            self._load(verify=not imported)

    # --- reading ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def dim(self) -> int | None:
        return self._manifest.dim if self._manifest else None

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """Row of each key in the store, -1 where it is absent."""
        if self._sorted is None:
            order = np.argsort(self._keys, kind="stable")
            self._sorted = (self._keys[order], order)
        sorted_keys, order = self._sorted
        keys = np.asarray(keys, dtype=KEY_DTYPE)
        if len(sorted_keys) == 0:
            return np.full(len(keys), -1, dtype=np.int64)
        at = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
        return np.where(sorted_keys[at] == keys, order[at], -1).astype(np.int64)

    def vectors(self, rows: np.ndarray) -> np.ndarray:
        """The stored vectors of these rows, copied out of the mapped file."""
        return np.array(self._vectors[np.asarray(rows, dtype=np.int64)], dtype=np.float32)

    # --- writing ---------------------------------------------------------------------------

    def append(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        """Commit one chunk: after this returns, every later open sees it."""
        keys = np.asarray(keys, dtype=KEY_DTYPE)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if len(keys) == 0:
            return
        if vectors.ndim != 2 or len(vectors) != len(keys):
            raise ValueError(f"{len(keys)} keys for vectors of shape {vectors.shape}")
        with self._locked():
            self._load(verify=False)  # another process may have appended meanwhile
            if self._manifest and vectors.shape[1] != self._manifest.dim:
                raise ValueError(f"vectors are {vectors.shape[1]} wide, the store at "
                                 f"{self.folder} holds {self._manifest.dim}")
            self._append_unlocked(keys, vectors)
            self._load(verify=False)

    @staticmethod
    def _write_at(path: Path, offset: int, array: np.ndarray) -> None:
        with open(path, "ab"):
            pass  # create it if absent
        with open(path, "r+b") as fh:
            fh.truncate(offset)  # drops bytes of an append that never committed
            fh.seek(offset)
            fh.write(array.tobytes())
            fh.flush()
            os.fsync(fh.fileno())

    def _commit(self, manifest: Manifest) -> None:
        tmp = self.folder / f"{MANIFEST}.tmp"
        with open(tmp, "w") as fh:
            fh.write(manifest.to_json())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.folder / MANIFEST)

    # --- loading, checking and repair ----------------------------------------------------------

    def _path(self, kind: str, manifest: Manifest) -> Path:
        suffix = "f32" if kind == "vectors" else "bin"
        return self.folder / f"{kind}-{manifest.generation}.{suffix}"

    def _read_manifest(self) -> Manifest | None:
        path = self.folder / MANIFEST
        if not path.exists():
            return None
        try:
            return Manifest.from_json(path.read_text())
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            aside = self._set_aside([path, *self._data_files()])
            log.warning("embedding cache %s is unreadable (%s): starting it afresh; its texts "
                        "will be encoded again; its files are kept aside as %s", path, err,
                        ", ".join(p.name for p in aside))
            return None

    def _load(self, verify: bool) -> None:
        """Map the committed rows and check their chunks: all of them with `verify`, else only
        those added since the last load (rows only grow within a generation of files)."""
        manifest = self._read_manifest()
        same_files = bool(self._manifest and manifest
                          and manifest.generation == self._manifest.generation)
        known = len(self._keys) if same_files else 0
        self._manifest = manifest
        if not verify and same_files and known == manifest.rows:
            return  # nothing new: keep the mapping and the sorted keys
        self._sorted = None
        if manifest is None or manifest.rows == 0:
            self._vectors = np.zeros((0, manifest.dim if manifest else 0), dtype=np.float32)
            self._keys = np.zeros(0, dtype=KEY_DTYPE)
            return
        vectors, keys = self._map(manifest)
        bad = self._damaged_chunks(manifest, vectors, keys, from_row=0 if verify else known)
        if bad:
            self._rewrite_without(manifest, vectors, keys, bad)
            return self._load(verify=False)
        # both stay mapped: an append would otherwise copy every key so far
        self._vectors, self._keys = vectors, keys

    def _map(self, manifest: Manifest) -> tuple[np.ndarray, np.ndarray]:
        """The committed rows that the files still hold (a truncated file holds fewer)."""
        vec_path, key_path = self._path("vectors", manifest), self._path("keys", manifest)
        vec_rows = (vec_path.stat().st_size // (4 * manifest.dim)) if vec_path.exists() else 0
        key_rows = (key_path.stat().st_size // KEY_DTYPE.itemsize) if key_path.exists() else 0
        vec_rows, key_rows = min(vec_rows, manifest.rows), min(key_rows, manifest.rows)
        vectors = (np.memmap(vec_path, dtype=np.float32, mode="r", shape=(vec_rows, manifest.dim))
                   if vec_rows else np.zeros((0, manifest.dim), dtype=np.float32))
        keys = (np.memmap(key_path, dtype=KEY_DTYPE, mode="r", shape=(key_rows,))
                if key_rows else np.zeros(0, dtype=KEY_DTYPE))
        return vectors, keys

    def _damaged_chunks(self, manifest: Manifest, vectors: np.ndarray, keys: np.ndarray,
                        from_row: int) -> list[int]:
        bad, start = [], 0
        for i, chunk in enumerate(manifest.chunks):
            stop = start + chunk.rows
            if stop > from_row and (
                    stop > len(vectors) or stop > len(keys)
                    or zlib.crc32(vectors[start:stop]) != chunk.vectors_crc
                    or zlib.crc32(keys[start:stop]) != chunk.keys_crc):
                bad.append(i)
            start = stop
        return bad

    def _rewrite_without(self, manifest: Manifest, vectors: np.ndarray, keys: np.ndarray,
                         bad: list[int]) -> None:
        """A new generation of files holding the intact chunks only; the manifest switches to it
        in one step, then the old files are moved aside (suffix .damaged)."""
        lost = sum(manifest.chunks[i].rows for i in bad)
        log.warning("embedding cache %s or %s: %d of %d chunks are damaged (%d texts; truncated "
                    "or overwritten); keeping the %d intact texts, the rest will be encoded again",
                    self._path("vectors", manifest), self._path("keys", manifest), len(bad),
                    len(manifest.chunks), lost, manifest.rows - lost)
        keep, start, kept = np.zeros(manifest.rows, dtype=bool), 0, []
        for i, chunk in enumerate(manifest.chunks):
            if i not in bad:
                keep[start:start + chunk.rows] = True
                kept.append(chunk)
            start += chunk.rows
        fresh = Manifest(dim=manifest.dim, generation=manifest.generation + 1, chunks=tuple(kept))
        for kind, array in (("vectors", vectors), ("keys", keys)):
            rows = np.flatnonzero(keep[:len(array)])
            self._write_at(self._path(kind, fresh), 0, np.ascontiguousarray(array[rows]))
        self._commit(fresh)
        for kind in ("vectors", "keys"):  # kept aside for a look, never read again
            old = self._path(kind, manifest)
            if old.exists():
                old.rename(old.with_name(old.name + ".damaged"))

    def _data_files(self) -> list[Path]:
        return [*self.folder.glob("vectors-*.f32"), *self.folder.glob("keys-*.bin")]

    @staticmethod
    def _set_aside(paths: Sequence[Path]) -> list[Path]:
        """Rename each file to `<name>.damaged` (kept for a look, never read again)."""
        aside = []
        for path in paths:
            try:
                aside.append(path.rename(path.with_name(path.name + ".damaged")))
            except FileNotFoundError:  # set aside by another process meanwhile
                continue
        return aside

    def _import_legacy_shards(self) -> bool:
        """Caches written before this store (one .npz per 256 texts) are moved into it once;
        says whether there were any."""
        shards = sorted(self.folder.glob(_LEGACY_SHARDS))
        if not shards:
            return False
        log.warning("embedding cache %s holds %d shards of the older format: moving them into "
                    "one store (once)", self.folder, len(shards))
        self._load(verify=True)
        for shard in shards:
            try:
                with np.load(shard) as data:
                    keys = np.array([bytes.fromhex(str(k)) for k in data["keys"]],
                                    dtype=KEY_DTYPE)
                    vectors = np.asarray(data["vectors"], dtype=np.float32)
            except Exception as err:  # noqa: BLE001 - any damage means: encode those again
                log.warning("embedding cache shard %s is damaged (%s): its texts will be "
                            "encoded again", shard, err)
            else:
                self._append_unlocked(keys, vectors)
            shard.unlink()
        return True

    def _append_unlocked(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        if len(keys) == 0:
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        manifest = self._manifest or Manifest(dim=vectors.shape[1], generation=0, chunks=())
        rows = manifest.rows
        self._write_at(self._path("vectors", manifest), rows * manifest.dim * 4, vectors)
        self._write_at(self._path("keys", manifest), rows * KEY_DTYPE.itemsize, keys)
        chunk = Chunk(rows=len(keys), vectors_crc=zlib.crc32(vectors), keys_crc=zlib.crc32(keys))
        self._manifest = Manifest(dim=manifest.dim, generation=manifest.generation,
                                  chunks=manifest.chunks + (chunk,))
        self._commit(self._manifest)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.folder / _LOCK, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
