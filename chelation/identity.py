"""A job's identity: the hash of what it computes (resume and the sibling claim look for it), the
same without the seed (what the analysis pairs seeds on), and its human-readable label. Pure
functions of the configuration."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, is_dataclass
from typing import Any

from chelation.kinds import Mode, Schedule, SelectionMethod
from chelation.settings import DEFAULT_PRECISION, IndexSettings, RunSettings, SelectionSettings

# Keys that do not change what a job computes: never part of its identity.
NOT_IDENTITY = ("tracking.", "cache_dir", "engine.", "show_progress", "student.batch_size",
                "teacher.batch_size", "query_cost_sample", "dataset.strict")


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mapping -> {"a.b.c": value}."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def config_hash(config: Mapping[str, Any], exclude: tuple[str, ...] = ()) -> str:
    """Stable hash of a (nested) config, ignoring keys whose dotted name starts with `exclude`."""
    flat = {k: v for k, v in flatten(config).items() if not k.startswith(exclude)}
    blob = json.dumps(flat, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def as_mapping(config: RunSettings | Mapping[str, Any]) -> dict[str, Any]:
    """A typed configuration as the nested dict that is hashed, logged and written."""
    return asdict(config) if is_dataclass(config) else dict(config)


def identity(config: RunSettings | Mapping[str, Any]) -> tuple[str, str]:
    """(config_hash, group_hash): the job's identity, and the same without the seed."""
    config = as_mapping(config)
    exclude = excluded_keys(config)
    index = IndexSettings(**config.get("index", {}))
    if index.document_weight > 0:
        config = {**config, "index_document_weight": index.document_weight}
    return config_hash(config, exclude), config_hash(config, exclude + ("seed",))


def excluded_keys(config: RunSettings | Mapping[str, Any]) -> tuple[str, ...]:
    """The dotted key prefixes that do not enter a configuration's identity: bookkeeping, keys
    its mode ignores, and settings that do not apply to it (the documents enter as one number,
    the teacher's share, added by `identity` where it is above 0)."""
    config = as_mapping(config)
    mode = Mode(config["training"]["mode"])
    exclude = NOT_IDENTITY + mode.ignored_keys
    index = IndexSettings(**config.get("index", {}))
    exclude = exclude + ("index.documents", "index.teacher_weight")
    if index.document_weight > 0:
        # the teacher makes the documents even where the mode trains on no teacher targets
        exclude = tuple(k for k in exclude if k != "teacher.")
    else:
        exclude = exclude + ("index.fit_queries",)
    if not mode.trains:
        # only the student, data and evaluation protocol decide a frozen run's figures
        exclude = exclude + ("cycles", "queries_per_cycle", "validation_fraction")
        if config.get("adapter", {}).get("init_scale", 0.0) > 0:
            # an untrained adapter that starts off the identity changes the frozen figures
            exclude = tuple(k for k in exclude if k != "adapter.")
    for part in ("student", "teacher"):
        if config.get(part, {}).get("precision", DEFAULT_PRECISION) == DEFAULT_PRECISION:
            # the default; keeps the identity of runs made before precision was a choice
            exclude = exclude + (f"{part}.precision",)
        if not config.get(part, {}).get("force_precision", False):
            # the default: bfloat16 where the CPU has it; keeps the identity of earlier runs
            exclude = exclude + (f"{part}.force_precision",)
    method = config.get("selection", {}).get("method", SelectionSettings().method)
    exclude = exclude + (("selection.inner_folds",) if method == SelectionMethod.HOLDOUT
                         else ("selection.fraction",))
    if not config["training"].get("listwise_weight"):
        # off by default; keeps the identity of runs made before the term existed
        exclude = exclude + ("training.listwise_",)
    return exclude


def _model_name(model: str) -> str:
    return model.rstrip("/").split("/")[-1]


def config_label(settings: RunSettings) -> str:
    """What a configuration is, in a few words: mode, then only what that mode depends on."""
    mode = Mode(settings.training.mode)
    parts = [mode.value]
    if not mode.trains:
        parts.append(_model_name(settings.student.model))
    used = (settings.student, settings.teacher) if settings.needs_teacher else (settings.student,)
    for part in used:
        if part.precision != DEFAULT_PRECISION:
            parts.append(f"{_model_name(part.model)}:{part.precision}")
    if settings.index.document_weight > 0:
        fit = "+queries" if settings.index.fit_queries else ""
        parts.append(f"docs:{settings.teacher.name}{fit}@{settings.index.document_weight:g}")
    if mode.teacher_targets:
        parts.append(settings.teacher.name)
    if mode.blends_targets:
        w = settings.weight
        parts.append(f"constant:{w.value:g}" if w.schedule == Schedule.CONSTANT
                     else f"{w.schedule}:{w.start:g}->{w.end:g}")
    if mode.teacher_targets:
        parts.append(settings.teacher.projection)
    return "/".join(parts)
