"""chelation-import's pieces without a job: the settings rebuilt from a job's config.yaml, the
folders it reads, and what it refuses."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from chelation.identity import as_mapping, identity
from chelation.job_import import NotAFinishedJob, _settings, job_folders, read_job
from chelation.settings import JobConfig


def test_a_written_config_comes_back_as_the_same_settings() -> None:
    config = JobConfig(seed=3, cycles=2)
    config.training.mode = "hybrid"
    written = yaml.safe_load(yaml.safe_dump(as_mapping(config), sort_keys=False))
    rebuilt = _settings(JobConfig, written)
    assert rebuilt == config and identity(rebuilt) == identity(config)


def test_a_sweep_folder_names_its_job_folders(tmp_path: Path) -> None:
    for name in ("0", "1"):
        (tmp_path / "sweep" / name).mkdir(parents=True)
        (tmp_path / "sweep" / name / "results.json").write_text("{}")
    (tmp_path / "sweep" / "multirun.yaml").write_text("")
    assert job_folders([tmp_path / "sweep"]) == [tmp_path / "sweep" / "0",
                                                 tmp_path / "sweep" / "1"]
    assert job_folders([tmp_path / "sweep" / "1"]) == [tmp_path / "sweep" / "1"]


def test_a_folder_without_a_finished_job_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(NotAFinishedJob, match=f"{tmp_path}: no config.yaml"):
        read_job(tmp_path)
