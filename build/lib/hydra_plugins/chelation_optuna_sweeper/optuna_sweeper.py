"""Hydra's Sweeper API driving Optuna through ask-and-tell: each trial is one Hydra job, its
return value the objective. The study lives in a database (`storage`, `study_name`), so a search
that is stopped resumes where it was: trials left RUNNING by a dead process are marked FAIL and
their parameters queued again, and the search goes on until the study holds `n_trials` COMPLETE
trials."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from chelation.run_owner import Heartbeat, owner_alive, owner_tags

from .space import as_override, search_space

log = logging.getLogger(__name__)

RETRY_ATTR = "chelation.retry_of"  # user attribute of a queued trial: the trial it repeats


class OptunaSweeper(Sweeper):
    def __init__(self, storage: str, study_name: str, direction: str, n_trials: int,
                 n_jobs: int, seed: int, n_startup_trials: int, params: dict[str, str]) -> None:
        if n_trials < 1 or n_jobs < 1:
            raise ValueError(f"hydra.sweeper: n_trials={n_trials} and n_jobs={n_jobs} must be "
                             "at least 1")
        self.storage, self.study_name, self.direction = storage, study_name, direction
        self.n_trials, self.n_jobs = n_trials, n_jobs
        self.seed, self.n_startup_trials = seed, n_startup_trials
        self.params = dict(params or {})
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.launcher = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> list[Any]:
        try:
            import optuna
        except ImportError as err:  # the `search` extra
            raise ImportError("hydra/sweeper=chelation_optuna needs Optuna: "
                              "pip install -e '.[search]'") from err
        from chelation.tracking import with_busy_timeout  # imports MLflow: not at plugin scan

        assert self.config is not None and self.launcher is not None
        space, fixed = search_space([f"{k}={v}" for k, v in self.params.items()] + arguments)
        if not space:
            raise ValueError("hydra.sweeper.params: the search space is empty")
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")

        study = optuna.create_study(
            storage=optuna.storages.RDBStorage(with_busy_timeout(self.storage)),
            study_name=self.study_name, direction=self.direction, load_if_exists=True)
        if orphans := retry_orphaned_trials(study):
            log.info("%d trials left RUNNING by a stopped search: marked FAIL and queued again",
                     orphans)
        # a resumed search must not replay the random draws the first one made
        study.sampler = optuna.samplers.TPESampler(
            seed=self.seed + len(study.trials), n_startup_trials=self.n_startup_trials)
        log.info("study %r in %s: %d of %d trials complete; searching %s", self.study_name,
                 self.storage, _complete(study), self.n_trials, sorted(space))

        returns, job_idx, failed = [], 0, 0
        while (done := _complete(study)) < self.n_trials:
            if failed > self.n_trials:
                raise RuntimeError(f"study {self.study_name!r}: {failed} trials gave no "
                                   "objective in this search; see the warnings above")
            trials = [_ask(study, space) for _ in range(min(self.n_jobs, self.n_trials - done))]
            batch = [fixed + [as_override(k, v) for k, v in t.params.items()] for t in trials]
            try:  # a composition error fails before any job starts
                self.validate_batch_is_legal(batch)
            except Exception:
                for trial in trials:
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
                raise
            results = self._launch(study, trials, batch, job_idx)
            job_idx += len(results)
            returns.append(results)
            outcomes = [_tell(study, t, r) for t, r in zip(trials, results, strict=True)]
            failed += sum(outcome is not True for outcome in outcomes)
            if errors := [outcome for outcome in outcomes if isinstance(outcome, Exception)]:
                raise errors[0]
        best = study.best_trial
        log.info("study %r: best trial %d, objective %.4f, %s", self.study_name, best.number,
                 best.value, best.params)
        return returns

    def _launch(self, study, trials, batch: list[list[str]], job_idx: int):
        beats = [Heartbeat(_TrialAttrs(trial), str(trial.number)) for trial in trials]
        try:
            return self.launcher.launch(batch, initial_job_idx=job_idx)
        except BaseException:  # Ctrl-C, SIGTERM, a launcher error: none of them completed
            for trial in trials:
                retry(study, trial.number, trial.params)
            raise
        finally:
            for beat in beats:
                beat.stop()


def _ask(study, space):
    """A new trial (queued parameters first), owned by this process from the start."""
    trial = study.ask(space)
    for key, value in owner_tags().items():
        trial.set_user_attr(key, value)
    return trial


def retry_orphaned_trials(study) -> int:
    """Mark FAIL the RUNNING trials whose owner is gone (a dead process on this host, or no
    heartbeat within the lease from another) and queue their parameters again; trials of a live
    search, and trials this sweeper did not make, are left alone."""
    import optuna

    orphans = [t for t in study.get_trials(deepcopy=False,
                                           states=(optuna.trial.TrialState.RUNNING,))
               if owner_alive(t.user_attrs) is False]
    for trial in orphans:
        retry(study, trial.number, trial.params)
    return len(orphans)


def retry(study, number: int, params: dict[str, Any]) -> None:
    """Mark a trial that never returned FAIL and queue its parameters again: if its job did
    finish, the job's own resume skips it and returns the finished run's objective, so the
    study and MLflow keep one completed trial per finished run."""
    import optuna

    study.tell(number, state=optuna.trial.TrialState.FAIL)
    study.enqueue_trial(params, user_attrs={RETRY_ATTR: number})


def _tell(study, trial, result) -> bool | Exception:
    """Record a job's outcome: True for an objective, False for none, the job's error if it
    raised one."""
    import optuna

    try:
        value = result.return_value  # re-raises the job's exception
    except Exception as err:  # noqa: BLE001 - recorded as FAIL, then raised by the sweep
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return err
    if value is None or not math.isfinite(float(value)):
        log.warning("trial %d returned no objective (%r): marked FAIL (a job without validation "
                    "queries, or skipped for a live run of its configuration)", trial.number,
                    value)
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return False
    study.tell(trial, float(value))
    log.info("trial %d: objective %.4f %s", trial.number, float(value), trial.params)
    return True


def _complete(study) -> int:
    import optuna

    return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))


class _TrialAttrs:
    """Lets run_owner.Heartbeat refresh a trial's heartbeat as it refreshes an MLflow run's tag."""

    def __init__(self, trial) -> None:
        self.trial = trial

    def set_tag(self, _: str, key: str, value: str) -> None:
        self.trial.set_user_attr(key, value)
