"""Train and evaluate one configuration (or a sweep with -m), logging every cycle to MLflow.

    python -m experiments.train mode=hybrid teacher=mpnet weight.value=0.3 dataset=cranfield
    python -m experiments.train -m mode=baseline,hybrid weight.value=0.1,0.5 seed=0,1,2
"""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from chelation.job import run_tracked_job
from chelation.settings import JobConfig, SettingsError
from experiments.callbacks import parent_run_id
from experiments.schema import register, schema_keys
from experiments.user_errors import USER_ERRORS, exit_for, held_stderr, release_stderr

register()


def config_dir() -> str:
    """The Hydra menu, as an absolute path (a console script gives Hydra no calling file to
    resolve a relative one against): the copy a wheel installs beside this module
    (experiments/conf), else the source tree's conf/ at the repository's top."""
    here = Path(__file__).resolve().parent
    installed = here / "conf"
    return str(installed if (installed / "config.yaml").is_file() else here.parent / "conf")


CONF = config_dir()


@hydra.main(config_path=CONF, config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    """One job; returns its final validation NDCG@10 (what a sweeper may optimise; never test)."""
    release_stderr()  # the config is composed: Hydra's errors are behind us
    try:
        return _job(cfg)
    except USER_ERRORS as err:  # one line and exit code 2; a bug keeps its traceback
        exit_for(err)


def _job(cfg: DictConfig) -> float | None:
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    config = job_config(cfg)
    summary = run_tracked_job(config, hydra_cfg.runtime.output_dir,
                              parent_run_id(hydra_cfg.sweep.dir, config.tracking) if multirun
                              else None)
    return summary.final_val_ndcg_at_10


def job_config(cfg: DictConfig) -> JobConfig:
    """The typed, range-checked job config; a bad value or a key the schema lacks raises naming
    it."""
    unknown = unknown_keys(OmegaConf.to_container(cfg, resolve=False), schema_keys())
    if unknown:
        raise SettingsError(f"unknown setting(s) {unknown}: the schema (JobConfig in "
                            "chelation/settings.py) has no such key; check the spelling "
                            "(a key added with '+' is checked like any other)")
    return OmegaConf.to_object(cfg)


def unknown_keys(given: dict, schema: dict, prefix: str = "") -> list[str]:
    """Dotted names of the keys in `given` that `schema` does not have."""
    out = []
    for key, value in given.items():
        if key not in schema:
            out.append(f"{prefix}{key}")
        elif isinstance(value, dict) and isinstance(schema[key], dict):
            out.extend(unknown_keys(value, schema[key], f"{prefix}{key}."))
    return out


def cli() -> None:
    """The console entry: `main` with Hydra's composition errors said in one line."""
    with held_stderr():
        main()


if __name__ == "__main__":
    cli()
