"""Registers the library's JobConfig as the structured config Hydra composes into (`schema`, named
first in conf/config.yaml's defaults), so every value is type-checked when Hydra composes and
range-checked when the job's typed config is built."""

from __future__ import annotations

import functools

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from chelation.settings import JobConfig


def register() -> None:
    ConfigStore.instance().store(name="schema", node=JobConfig)


@functools.cache
def schema_keys() -> dict:
    """The schema's keys as a nested dict, built once per process (every job of a sweep checks
    its overrides against it). Here, not in the entry point: a launcher that pickles the job's
    function (joblib) pickles what it calls by reference, which `__main__` cannot give."""
    return OmegaConf.to_container(OmegaConf.structured(JobConfig))
