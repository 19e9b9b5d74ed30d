"""The default sweeper (hydra/sweeper=chelation_grid): Hydra's grid with each job's config composed
once. Run through Hydra's own config loader, sweeper setup and basic launcher on the real menu
(conf/); the task is a stand-in that records the config each job received."""

from __future__ import annotations

from pathlib import Path

import cloudpickle
import pytest
from hydra._internal.callbacks import Callbacks
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.utils import create_config_search_path
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.plugins import Plugins
from hydra.errors import ConfigCompositionException
from hydra.types import HydraContext, RunMode
from omegaconf import DictConfig

from experiments.schema import register
from hydra_plugins.chelation_grid_sweeper.grid_sweeper import ComposedOnce, GridSweeper

CONF = Path(__file__).resolve().parents[1] / "conf"


class CountingLoader(ConfigLoaderImpl):
    def __init__(self) -> None:
        super().__init__(config_search_path=create_config_search_path(str(CONF)))
        self.composed: list[tuple[str, ...]] = []

    def load_sweep_config(self, master_config: DictConfig,
                          sweep_overrides: list[str]) -> DictConfig:
        self.composed.append(tuple(sweep_overrides))
        return super().load_sweep_config(master_config, sweep_overrides)


def _sweep(tmp_path: Path, *arguments: str) -> tuple[CountingLoader, list[str]]:
    """A multirun of the real menu (`-m` with these arguments) through the sweeper that config.yaml
    selects; returns the loader's composition log and each job's training.mode + seed."""
    register()
    GlobalHydra.instance().clear()
    loader = CountingLoader()
    config = loader.load_configuration(
        "config", [f"hydra.sweep.dir={tmp_path}", "hydra.job.chdir=false",
                   # the launcher configures logging for its jobs: here it must leave the test
                   # process's loggers as they are (`disabled` would switch off every logger)
                   "hydra/job_logging=none", "hydra/hydra_logging=none"], RunMode.MULTIRUN)
    HydraConfig.instance().set_config(config)
    ran: list[str] = []

    def task(job: DictConfig) -> None:
        ran.append(f"{job.training.mode} {job.seed}")

    context = HydraContext(config_loader=loader, callbacks=Callbacks())
    sweeper = Plugins.instance().instantiate_sweeper(hydra_context=context, task_function=task,
                                                     config=config)
    # Hydra loads plugins in a module of its own: the class is the same code, not the same object
    assert type(sweeper).__qualname__ == GridSweeper.__qualname__
    sweeper.sweep(list(arguments))
    return loader, ran


def test_each_job_is_composed_once_and_gets_its_own_config(tmp_path: Path) -> None:
    loader, ran = _sweep(tmp_path, "mode=baseline,offline", "seed=3,4")
    assert sorted(ran) == ["baseline 3", "baseline 4", "offline 3", "offline 4"]
    assert len(loader.composed) == 4 and len(set(loader.composed)) == 4


def test_a_bad_value_fails_the_sweep_before_any_job_runs(tmp_path: Path) -> None:
    with pytest.raises(ConfigCompositionException, match="cycles"):
        loader, ran = _sweep(tmp_path, "seed=0,1", "cycles=2,many")
    # nothing launched: the error came from composing the batch up front
    assert not list(tmp_path.glob("*/.hydra"))


def test_a_config_not_kept_is_composed_and_the_loader_travels_without_its_kept_configs() -> None:
    register()
    loader = CountingLoader()
    master = loader.load_configuration("config", [], RunMode.MULTIRUN)
    composed = ComposedOnce(loader)
    composed.keep(master, ["seed=7"])
    assert composed.load_sweep_config(master, ["seed=7"]).seed == 7  # kept: not composed again
    assert composed.load_sweep_config(master, ["seed=7"]).seed == 7  # asked again: composed
    assert loader.composed == [("seed=7",), ("seed=7",)]
    composed.keep(master, ["seed=8"])
    # as Ray's launcher ships it to its workers (cloudpickle: Hydra's plugin scan loads the module
    # a second time, so pickle's lookup by name finds another class object)
    shipped = cloudpickle.loads(cloudpickle.dumps(composed))
    assert shipped.kept == {} and composed.kept.keys() == {("seed=8",)}
