"""Train and evaluate one configuration (or a sweep with -m), logging every cycle to MLflow.

    python -m chelation_harness.train mode=hybrid teacher=mpnet weight.value=0.3 dataset=cranfield
    python -m chelation_harness.train -m mode=baseline,hybrid weight.value=0.1,0.5 seed=0,1,2
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from chelation.job import TrackingTarget, run_tracked_job
from chelation.settings import SettingsError
from chelation_harness.callbacks import parent_run_id
from chelation_harness.schema import ExperimentConfig, register

log = logging.getLogger(__name__)
register()


def settings_from(cfg: DictConfig) -> ExperimentConfig:
    """Typed, range-checked settings; a bad value or a key the schema lacks raises naming it."""
    unknown = unknown_keys(OmegaConf.to_container(cfg, resolve=False),
                           OmegaConf.to_container(OmegaConf.structured(ExperimentConfig)))
    if unknown:
        raise SettingsError(f"unknown setting(s) {unknown}: the schema "
                            "(chelation_harness/schema.py) has no such key; check the spelling "
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


# An absolute path: a console script gives Hydra no calling file to resolve "conf" against.
CONF = str(Path(__file__).resolve().parent / "conf")


@hydra.main(config_path=CONF, config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    settings = settings_from(cfg)
    hydra_cfg = HydraConfig.get()
    config = OmegaConf.to_container(cfg, resolve=True)
    parent = parent_run_id(hydra_cfg.sweep.dir, config["tracking"]) \
        if hydra_cfg.mode == RunMode.MULTIRUN else None
    summary = run_tracked_job(
        dataset_spec=config["dataset"],
        settings=settings,
        config=config,
        target=TrackingTarget(**config["tracking"]),
        output_dir=hydra_cfg.runtime.output_dir,
        parent_run_id=parent,
        show_progress=settings.show_progress,
    )
    return summary.get("final_ndcg_at_10", summary.get("ndcg_at_10"))


if __name__ == "__main__":
    main()
