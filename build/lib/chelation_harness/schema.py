"""Registers the library's JobConfig as the structured config Hydra composes into (`schema`, named
first in conf/config.yaml's defaults), so every value is type-checked when Hydra composes and
range-checked when the job's typed config is built."""

from __future__ import annotations

from hydra.core.config_store import ConfigStore

from chelation.settings import JobConfig


def register() -> None:
    ConfigStore.instance().store(name="schema", node=JobConfig)
