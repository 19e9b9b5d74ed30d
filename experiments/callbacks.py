"""Hydra callback that brackets a multirun with one MLflow parent run.

It runs once, in the launching process, before any job starts: it creates the store and the
experiment there (so parallel jobs never race on SQLite schema migration or experiment creation),
and leaves the parent's run id in the sweep folder for the jobs to nest under."""

from __future__ import annotations

import atexit
import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from chelation import tracking
from chelation.run_owner import Heartbeat

log = logging.getLogger(__name__)

PARENT_FILE = "mlflow_parent_run_id"


class MlflowSweepCallback(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._open: tuple[str, str] | None = None
        if not config.tracking.get("enabled", True):
            return
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        uri, name = config.tracking.uri, config.tracking.experiment
        experiment_id = tracking.prepare_store(uri, name)
        if retired := tracking.retire_stale_runs(tracking.client(uri), experiment_id):
            log.info("marked %d runs left by killed processes as KILLED", retired)
        overrides = " ".join(config.hydra.overrides.task)
        run_id = tracking.start_parent_run(uri, experiment_id, f"sweep {sweep_dir.name}",
                                           {"sweep_dir": str(sweep_dir), "overrides": overrides})
        (sweep_dir / PARENT_FILE).write_text(run_id)
        self._open = (uri, run_id)
        self._heartbeat = Heartbeat(tracking.client(uri), run_id)
        # a sweep stopped by a signal or an error never reaches on_multirun_end
        atexit.register(self._end, "KILLED")
        log.info("MLflow parent run %s in experiment %r (%s)", run_id, name, uri)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._end("FINISHED")

    def _end(self, status: str) -> None:
        if getattr(self, "_open", None) is None:
            return
        uri, run_id = self._open
        self._open = None
        self._heartbeat.stop()
        tracking.end_run(uri, run_id, status)


def parent_run_id(sweep_dir: str | Path) -> str | None:
    path = Path(sweep_dir) / PARENT_FILE
    return path.read_text().strip() if path.exists() else None
