"""Hydra's basic grid sweeper, composing each job's config once instead of twice.

Before a batch runs, the basic sweeper composes every job's config to fail early on a bad
override, then throws them away; the launcher composes each again just before its job (about a
quarter of a second per job here). This sweeper validates the same way and hands the launcher
the configs it composed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_loader import ConfigLoader
from hydra.core.object_type import ObjectType
from hydra.types import HydraContext, RunMode, TaskFunction
from omegaconf import DictConfig


class GridSweeper(BasicSweeper):
    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self.composed = ComposedOnce(hydra_context.config_loader)
        super().setup(hydra_context=HydraContext(config_loader=self.composed,
                                                 callbacks=hydra_context.callbacks),
                      task_function=task_function, config=config)

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        assert self.config is not None
        for overrides in batch:
            self.composed.keep(self.config, overrides)


class ComposedOnce(ConfigLoader):
    """A config loader that keeps the sweep configs composed ahead (`keep`) until a launcher
    asks for them; everything else is the wrapped loader's."""

    def __init__(self, loader: ConfigLoader):
        self.loader = loader
        self.kept: dict[tuple[str, ...], DictConfig] = {}

    def keep(self, master_config: DictConfig, overrides: Sequence[str]) -> None:
        self.kept[tuple(overrides)] = self.loader.load_sweep_config(master_config,
                                                                    list(overrides))

    def load_sweep_config(self, master_config: DictConfig,
                          sweep_overrides: list[str]) -> DictConfig:
        # popped, not copied: a launcher writes the job's number and id into the config it gets
        kept = self.kept.pop(tuple(sweep_overrides), None)
        if kept is not None:
            return kept
        return self.loader.load_sweep_config(master_config, sweep_overrides)

    def __getstate__(self) -> dict[str, Any]:
        # launchers that ship the loader to workers (Ray) send it without the kept configs
        return {"loader": self.loader, "kept": {}}

    def load_configuration(self, config_name: str | None, overrides: list[str],
                           run_mode: RunMode, from_shell: bool = True,
                           validate_sweep_overrides: bool = True) -> DictConfig:
        return self.loader.load_configuration(config_name, overrides, run_mode, from_shell,
                                              validate_sweep_overrides)

    def get_search_path(self) -> Any:
        return self.loader.get_search_path()

    def get_sources(self) -> Any:
        return self.loader.get_sources()

    def list_groups(self, parent_name: str) -> list[str]:
        return self.loader.list_groups(parent_name)

    def get_group_options(self, group_name: str,
                          results_filter: ObjectType | None = ObjectType.CONFIG,
                          config_name: str | None = None,
                          overrides: list[str] | None = None) -> list[str]:
        return self.loader.get_group_options(group_name, results_filter, config_name, overrides)

    def compute_defaults_list(self, config_name: str | None, overrides: list[str],
                              run_mode: RunMode) -> Any:
        return self.loader.compute_defaults_list(config_name, overrides, run_mode)
