"""The sweeper's configuration, registered as `hydra/sweeper=chelation_grid`: the same keys as
Hydra's basic sweeper, so `hydra.sweeper.params` and `max_batch_size` read as they always did."""

# no `from __future__ import annotations`: Hydra loads plugin modules outside sys.modules,
# where a dataclass cannot resolve string annotations
from dataclasses import dataclass
from typing import Optional

from hydra.core.config_store import ConfigStore


@dataclass
class GridSweeperConf:
    _target_: str = "hydra_plugins.chelation_grid_sweeper.grid_sweeper.GridSweeper"
    max_batch_size: Optional[int] = None  # noqa: UP045 (OmegaConf reads typing's spelling)
    params: Optional[dict[str, str]] = None  # noqa: UP045


ConfigStore.instance().store(group="hydra/sweeper", name="chelation_grid",
                             node=GridSweeperConf, provider="chelation")
