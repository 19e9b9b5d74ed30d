"""The structured config Hydra composes into: the library's RunSettings plus the data and tracking
choices of a job. Registered as `schema` and named first in conf/config.yaml's defaults, so every
value is type-checked when Hydra composes and range-checked when the job builds its settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore

from chelation.job import DatasetSpec, TrackingTarget
from chelation.settings import RunSettings, SettingsError


@dataclass
class ExperimentConfig(RunSettings):
    dataset: DatasetSpec = field(default_factory=DatasetSpec)
    tracking: TrackingTarget = field(default_factory=TrackingTarget)
    show_progress: bool = True

    def validate(self) -> ExperimentConfig:
        super().validate()
        if self.dataset.kind not in DatasetSpec.KINDS:
            raise SettingsError(f"dataset.kind={self.dataset.kind!r} is invalid: expected one of "
                                f"{list(DatasetSpec.KINDS)}")
        return self


def register() -> None:
    ConfigStore.instance().store(name="schema", node=ExperimentConfig)
