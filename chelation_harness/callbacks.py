"""Hydra callback that brackets a multirun with one MLflow parent run.

It runs once, in the launching process, before any job starts: it creates the store and the
experiment there (so parallel jobs never race on SQLite schema migration or experiment creation),
and leaves the parent's run id in the sweep folder for the jobs to nest under."""

from __future__ import annotations

import atexit
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from chelation import tracking
from chelation.run_owner import Heartbeat

log = logging.getLogger(__name__)

PARENT_FILE = "mlflow_parent_run_id"


class MlflowSweepCallback(Callback):
    # the open sweep lives in the module, not on the callback: joblib pickles the callback into
    # its workers, and a heartbeat's thread cannot be pickled
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not config.tracking.get("enabled", True):
            return
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        uri, name = config.tracking.uri, config.tracking.experiment
        experiment_id = tracking.prepare_store(uri, name)
        if retired := tracking.retire_stale_runs(tracking.client(uri), experiment_id):
            log.info("marked %d runs left by killed processes as KILLED", retired)
        overrides = " ".join(config.hydra.overrides.task)
        name = sweep_name(config.hydra.overrides.task)
        run_id = tracking.start_parent_run(uri, experiment_id, name,
                                           {"sweep_dir": str(sweep_dir), "overrides": overrides})
        (sweep_dir / PARENT_FILE).write_text(run_id)
        _open_sweep.update(uri=uri, run_id=run_id,
                           heartbeat=Heartbeat(tracking.client(uri), run_id))
        # a sweep stopped by a signal or an error never reaches on_multirun_end
        atexit.register(_end_sweep, "KILLED")
        log.info("MLflow parent run %s in experiment %r (%s)", run_id, name, uri)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        table = sweep_table(config.hydra.sweep.dir)
        if table and _open_sweep:
            try:  # the parent run carries the sweep's table as an artifact
                tracking.client(_open_sweep["uri"]).log_text(_open_sweep["run_id"], table,
                                                             "sweep_table.txt")
            except Exception as err:  # noqa: BLE001 - the table is also on the console
                log.error("could not log the sweep table to MLflow: %s", err)
        _end_sweep("FINISHED")
        _retire_killed_jobs(config.tracking)
        if table:
            log.info("sweep %s:\n%s", config.hydra.sweep.dir, table)


def sweep_name(overrides) -> str:
    """The parent run's name: the preset when the sweep is one, else its overrides."""
    overrides = list(overrides)
    presets = [o.split("=", 1)[1] for o in overrides if o.lstrip("+").startswith("experiment=")]
    return f"sweep {presets[0]}" if presets else f"sweep {' '.join(overrides)}"[:250]


def sweep_table(sweep_dir: str | Path) -> str:
    """One line per job that ran in the sweep: configuration, seed, final NDCG@10 and its change
    from cycle 0 (jobs skipped as already done wrote no results here)."""
    rows = []
    for path in sorted(Path(sweep_dir).glob("*/results.json")):
        result = json.loads(path.read_text())
        config = yaml.safe_load((path.parent / "config.yaml").read_text())
        cycles = result.get("cycles") or []
        final = result.get("final_ndcg_at_10")
        if not cycles or final is None:
            continue
        first = cycles[0].get("ndcg_at_10") or float("nan")
        rows.append((result["config_label"], config.get("seed"), final, final - first))
    if not rows:
        return ""
    width = max(len(r[0]) for r in rows)
    lines = [f"{'configuration':<{width}}  seed  NDCG@10  vs cycle 0"]
    lines += [f"{label:<{width}}  {seed!s:>4}  {final:.4f}   {change:+.4f}"
              for label, seed, final, change in sorted(rows, key=lambda r: (-r[2], r[0]))]
    return "\n".join(lines)


_open_sweep: dict[str, Any] = {}


def _end_sweep(status: str) -> None:
    if not _open_sweep:
        return
    sweep = dict(_open_sweep)
    _open_sweep.clear()
    sweep["heartbeat"].stop()
    tracking.end_run(sweep["uri"], sweep["run_id"], status)


def _retire_killed_jobs(target: Mapping[str, Any]) -> None:
    """Jobs whose worker was killed mid-sweep (a Ray task retried elsewhere, say) are marked
    KILLED when the sweep ends, not only when the next one starts."""
    if not target.get("enabled", True):
        return
    try:
        experiment_id = tracking.prepare_store(target["uri"], target["experiment"])
        if retired := tracking.retire_stale_runs(tracking.client(target["uri"]), experiment_id):
            log.info("marked %d runs left by killed processes as KILLED", retired)
    except Exception as err:  # noqa: BLE001 - the next sweep retires them as well
        log.error("could not retire the runs of killed jobs: %s", err)


def parent_run_id(sweep_dir: str | Path, target: Mapping[str, Any] | None = None) -> str | None:
    """The sweep's parent run: from the sweep folder, or, for a worker on another machine that
    does not share it, from the tracking store named by `target` (the `tracking` config)."""
    path = Path(sweep_dir) / PARENT_FILE
    if path.exists():
        return path.read_text().strip()
    if not target or not target.get("enabled", True):
        return None
    experiment_id = tracking.prepare_store(target["uri"], target["experiment"])
    return tracking.find_open_sweep(tracking.client(target["uri"]), experiment_id, str(sweep_dir))
