"""MLflow tracking for jobs and sweeps, through MLflow's own client API (no global active run).

A run's identity is the hash of its resolved configuration (`config_hash` tag), which is what
resume looks for; `group_hash` is the same hash without the seed, so the analysis can pair seeds.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import FileLock

from chelation.loading import collector_paused
from chelation.run_owner import Heartbeat, owner_tags
from chelation.tags import PARENT_TAG, ROLE_TAG, SWEEP_DIR_TAG, Tag

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient
# mlflow itself (about 2 s of imports) loads with the first client: a job that tracks nothing, or
# a command that only reads its settings, never imports it

log = logging.getLogger(__name__)

EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
_BATCH = 100

# MLflow 3.17's UI shows GenAI or training views by its own switch (the URL's workflowType, else
# the browser's last choice, GenAI at first), whatever the experiment's kind; sorted by a metric,
# the runs list shows every job instead of folding them under their sweep's run.
UI_RUNS_QUERY = ("workflowType=machine_learning&orderByKey=metrics.%60ndcg_at_10%60"
                 "&orderByAsc=false")


def ui_link(experiment_id: str, base: str = "http://127.0.0.1:5000") -> str:
    """The experiment's training runs in `mlflow ui` (at `base`), every job listed, best first."""
    return f"{base}/#/experiments/{experiment_id}/runs?{UI_RUNS_QUERY}"


def with_busy_timeout(uri: str, seconds: int = 60) -> str:
    """SQLite URIs get a busy timeout, so parallel jobs wait for the lock instead of failing
    with 'database is locked'."""
    if uri.startswith("sqlite:") and "timeout=" not in uri:
        return f"{uri}{'&' if '?' in uri else '?'}timeout={seconds}"
    return uri


@functools.cache
def client(uri: str) -> MlflowClient:
    """One client per store and process: every job of a multirun in this process shares it."""
    with collector_paused():  # MLflow and its SQL store load here, once (chelation.loading)
        from mlflow.tracking import MlflowClient

        return MlflowClient(with_busy_timeout(uri))


_prepared: dict[tuple[str, str], str] = {}


class TrackingUnavailable(RuntimeError):
    """The store named by `tracking.uri` cannot be opened or created."""


def store_errors() -> tuple[type[BaseException], ...]:
    """What a store that is gone or stops answering raises (a server's connection errors are
    OSErrors); asked only once a store was opened, so mlflow is imported already."""
    import sqlalchemy.exc
    from mlflow.exceptions import MlflowException

    return (TrackingUnavailable, MlflowException, OSError, sqlalchemy.exc.SQLAlchemyError)


@contextmanager
def errors_reported_by_caller() -> Iterator[None]:
    """MLflow's SQL store logs each database error with its traceback before raising it; within
    this block that log is silenced, for a caller that says what failed itself, on one line."""
    logger = logging.getLogger("mlflow.store.db.utils")
    previous, logger.disabled = logger.disabled, True
    try:
        yield
    finally:
        logger.disabled = previous


def sqlite_path(uri: str) -> Path | None:
    """The database file of a SQLite URI (None for any other store)."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///").split("?")[0]).expanduser()


def prepare_store(uri: str, experiment: str) -> str:
    """Create the store (schema migrations included) and the experiment once per store: for
    SQLite under a lock file beside the database, so sweeps started together never race on the
    migrations; once per process after that. Returns the experiment id; raises
    TrackingUnavailable naming `tracking.uri` when the store cannot be opened or created."""
    if (uri, experiment) in _prepared:
        return _prepared[uri, experiment]
    path = sqlite_path(uri)
    try:
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            with FileLock(f"{path}.lock", timeout=300):
                experiment_id = _experiment_id(uri, experiment)
        else:
            experiment_id = _experiment_id(uri, experiment)
    except Exception as err:  # noqa: BLE001 - whatever the cause, the job must not start
        client.cache_clear()
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise TrackingUnavailable(f"tracking.uri={uri!r}: cannot open the MLflow store "
                                  f"({reason}); fix the URI or set tracking.enabled=false") \
            from None
    _prepared[uri, experiment] = experiment_id
    return experiment_id


def _experiment_id(uri: str, experiment: str) -> str:
    found = client(uri).get_experiment_by_name(experiment)  # first: MLflow loads with the client
    from mlflow.exceptions import MlflowException

    if found is not None:
        return found.experiment_id
    try:
        # the kind MLflow's UI labels the experiment with (3.17 opens views by ui_link's switch)
        return client(uri).create_experiment(experiment,
                                             tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
    except MlflowException:
        # created by a store that takes no lock (a server) between our lookup and create
        return client(uri).get_experiment_by_name(experiment).experiment_id


def git_commit(folder: str | Path = ".") -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True,
                             text=True, check=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=folder, capture_output=True, text=True, timeout=10).stdout
        return out.stdout.strip() + ("-dirty" if dirty.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def finished_runs(client: MlflowClient, experiment_id: str, hash_: str) -> list:
    """The finished runs with this config hash, newest first (what resume decides on)."""
    return client.search_runs(
        [experiment_id],
        filter_string=f"tags.{Tag.CONFIG_HASH} = '{hash_}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
    )


def find_open_sweep(client: MlflowClient, experiment_id: str, sweep_dir: str) -> str | None:
    """The id of the running sweep (parent) run that writes into `sweep_dir`, if any: how a
    worker without the sweep folder's files finds the run to nest under."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{ROLE_TAG}` = 'sweep' and tags.{SWEEP_DIR_TAG} = '{sweep_dir}' "
                      "and attributes.status = 'RUNNING'",
        order_by=["attributes.start_time DESC"], max_results=1,
    )
    return runs[0].info.run_id if runs else None


def start_parent_run(uri: str, experiment_id: str, name: str, tags: Mapping[str, str]) -> str:
    run = client(uri).create_run(experiment_id, run_name=name,
                                 tags={ROLE_TAG: "sweep", **owner_tags(), **tags})
    return run.info.run_id


def end_run(uri: str, run_id: str, status: str = "FINISHED") -> None:
    client(uri).set_terminated(run_id, status)


class JobRun:
    """One job's MLflow run: params and tags at start, metrics per cycle, artifacts at the end.
    Marked FAILED if the job raises, so resume runs it again."""

    def __init__(self, uri: str, experiment_id: str, name: str, params: Mapping[str, Any],
                 tags: Mapping[str, str], parent_run_id: str | None = None):
        from mlflow.entities import Param

        self.client = client(uri)
        all_tags = {ROLE_TAG: "job", **owner_tags(), **tags}
        if parent_run_id:
            all_tags[PARENT_TAG] = parent_run_id
        self.run_id = self.client.create_run(experiment_id, run_name=name,
                                             tags=all_tags).info.run_id
        self._heartbeat = Heartbeat(self.client, self.run_id)
        items = [Param(k, _param_value(v)) for k, v in params.items()]
        for i in range(0, len(items), _BATCH):
            self.client.log_batch(self.run_id, params=items[i:i + _BATCH])

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Finite values only (NaN means 'not applicable this cycle')."""
        from mlflow.entities import Metric

        ts = _now_ms()
        items = [Metric(k, float(v), ts, step) for k, v in metrics.items()
                 if v is not None and math.isfinite(float(v))]
        for i in range(0, len(items), _BATCH):
            self.client.log_batch(self.run_id, metrics=items[i:i + _BATCH])

    def set_tags(self, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifact(self, path: str | Path, folder: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), folder)

    def log_dataset(self, name: str, digest: str, source: str) -> None:
        """The collection the job ran on, as an MLflow dataset input (name, digest, source)."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        dataset = Dataset(name=name, digest=digest, source_type="local", source=source)
        self.client.log_inputs(self.run_id, [DatasetInput(dataset, [InputTag(
            "mlflow.data.context", "evaluation")])])

    def supersede(self, old_run_id: str) -> None:
        """This run replaces `old_run_id` (a finished run that fell back): both say so."""
        self.set_tags({Tag.RERUN_OF: old_run_id})
        self.client.set_tag(old_run_id, Tag.SUPERSEDED_BY, self.run_id)

    def stop_heartbeat(self) -> None:
        self._heartbeat.stop()

    def finish(self, status: str = "FINISHED") -> None:
        from mlflow.entities import RunStatus

        self._heartbeat.stop()
        self.client.set_terminated(self.run_id, RunStatus.to_string(
            RunStatus.from_string(status)))


def _param_value(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, list | dict) else str(value)
    return text[:6000]


def _now_ms() -> int:
    return int(time.time() * 1000)
