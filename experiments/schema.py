"""The structured config Hydra composes into: the library's RunSettings plus the data and tracking
choices of a job. Registered as `schema` and named first in conf/config.yaml's defaults, so every
value is type-checked when Hydra composes and range-checked when the job builds its settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore

from chelation.settings import RunSettings, SettingsError

DATASET_KINDS = ("synthetic", "beir", "mteb")


@dataclass
class DatasetConfig:
    name: str = "synthetic"
    kind: str = "synthetic"
    path: str | None = None
    split: str = "test"
    task: str | None = None
    seed: int = 0


@dataclass
class TrackingConfig:
    uri: str = "sqlite:///mlflow.db"
    experiment: str = "chelation"
    resume: bool = True
    enabled: bool = True


@dataclass
class ExperimentConfig(RunSettings):
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    show_progress: bool = True

    def validate(self) -> ExperimentConfig:
        super().validate()
        if self.dataset.kind not in DATASET_KINDS:
            raise SettingsError(f"dataset.kind={self.dataset.kind!r} is invalid: expected one of "
                                f"{list(DATASET_KINDS)}")
        return self


def register() -> None:
    ConfigStore.instance().store(name="schema", node=ExperimentConfig)
