"""The sweeper's configuration, registered as `hydra/sweeper=chelation_optuna`."""

# no `from __future__ import annotations`: Hydra loads plugin modules outside sys.modules,
# where a dataclass cannot resolve string annotations
from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore


@dataclass
class OptunaSweeperConf:
    _target_: str = ("hydra_plugins.chelation_optuna_sweeper.optuna_sweeper."
                     "OptunaSweeper")
    # the study lives in this storage under this name; the same pair resumes it
    storage: str = "sqlite:///optuna.db"
    study_name: str = "chelation"
    direction: str = "maximize"
    n_trials: int = 20  # COMPLETE trials the study must hold when the search ends
    n_jobs: int = 1  # trials asked at once and launched together (parallel with joblib)
    seed: int = 0  # TPE's seed; a resumed search offsets it by the trials already made
    n_startup_trials: int = 10  # random trials before TPE models the history
    # search space in Hydra's sweep grammar, e.g. training.lr: tag(log, interval(1e-4, 1e-2));
    # a plain value is passed to every trial unchanged
    params: dict[str, str] = field(default_factory=dict)


ConfigStore.instance().store(group="hydra/sweeper", name="chelation_optuna",
                             node=OptunaSweeperConf, provider="chelation")
