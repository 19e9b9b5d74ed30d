"""hparams_search: the Optuna sweeper's search space and resume, the objective a job returns,
and a real search through the CLI, killed midway and resumed, against a real SQLite Optuna
storage and MLflow store."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import optuna
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from mlflow.tracking import MlflowClient
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState
from test_reliability import _cli, _finish, _runs

from chelation.run_owner import PROCESS_START_TAG, owner_tags
from chelation.tags import PARENT_TAG
from chelation.tracking import with_busy_timeout
from hydra_plugins.chelation_optuna_sweeper.optuna_sweeper import (
    RETRY_ATTR,
    _ask,
    retry_orphaned_trials,
)
from hydra_plugins.chelation_optuna_sweeper.space import as_override, search_space

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_search_space_reads_hydra_sweep_grammar() -> None:
    space, fixed = search_space([
        "training.lr=tag(log, interval(1e-4, 1e-2))", "training.epochs=int(interval(2, 20))",
        "weight.value=interval(0, 1)", "seed=range(0, 10, 3)", "teacher=minilm,mpnet",
        "mode=hybrid", "cycles=3", "cycles=interval(1, 4)",  # the later override wins
    ])
    assert space == {
        "training.lr": FloatDistribution(1e-4, 1e-2, log=True),
        "training.epochs": IntDistribution(2, 20),
        "weight.value": FloatDistribution(0.0, 1.0),
        "seed": IntDistribution(0, 9, step=3),
        "teacher": CategoricalDistribution(["minilm", "mpnet"]),
        "cycles": FloatDistribution(1.0, 4.0),
    }
    assert fixed == ["mode=hybrid"]
    for value in (1.2345678901234567e-05, 0.1, 3, "mpnet"):  # Hydra reads back what was drawn
        override = OverridesParser.create().parse_override(as_override("k", value))
        assert override.value() == value and type(override.value()) is type(value)


def _study(tmp_path: Path) -> optuna.Study:
    return optuna.create_study(storage=with_busy_timeout(f"sqlite:///{tmp_path}/optuna.db"),
                               study_name="s", direction="maximize", load_if_exists=True)


def test_trials_of_a_dead_search_are_failed_and_queued_again(tmp_path: Path) -> None:
    study = _study(tmp_path)
    space = {"training.lr": FloatDistribution(1e-4, 1e-2, log=True)}
    live = _ask(study, space)  # owned by this process
    dead = _ask(study, space)
    dead.set_user_attr(PROCESS_START_TAG, "1.0")  # this pid, another process: gone
    foreign = study.ask(space)  # no owner: another tool's trial, not ours to judge
    assert retry_orphaned_trials(study) == 1
    states = {t.number: t.state for t in study.trials}
    assert states[live.number] == states[foreign.number] == TrialState.RUNNING
    assert states[dead.number] == TrialState.FAIL
    again = _ask(study, space)  # the queued copy comes first
    assert again.params == dead.params
    assert study.trials[again.number].user_attrs[RETRY_ATTR] == dead.number
    assert study.trials[again.number].user_attrs["chelation.pid"] == owner_tags()[
        "chelation.pid"]


def test_a_job_returns_validation_and_a_skipped_job_reads_its_run_back(tmp_path: Path) -> None:
    """What a job hands its sweeper: the last cycle's validation NDCG@10, never test; a job
    skipped because its configuration already finished returns that run's value."""
    import os

    from chelation.job import run_tracked_job
    from experiments.train import job_config
    from tests.test_harness import compose_with

    cfg = compose_with("cycles=2", "queries_per_cycle=20", "show_progress=false",
                       "query_cost_sample=0", f"cache_dir={os.environ['CHELATION_TEST_CACHE']}",
                       f"tracking.uri=sqlite:///{tmp_path}/mlflow.db")
    first = run_tracked_job(job_config(cfg), tmp_path / "first")
    assert first.final_val_ndcg_at_10 == first.cycles[-1]["val_ndcg_at_10"]
    assert first.final_val_ndcg_at_10 != first.final_ndcg_at_10
    again = run_tracked_job(job_config(cfg), tmp_path / "again")
    assert again.skipped and again.run_id == first.run_id
    assert again.final_val_ndcg_at_10 == first.final_val_ndcg_at_10


def _trials(storage: str, state: TrialState) -> list[optuna.trial.FrozenTrial]:
    try:
        study = optuna.load_study(study_name="s", storage=storage)
    except KeyError:  # not created yet
        return []
    return study.get_trials(states=(state,))


@pytest.mark.slow
def test_a_killed_search_resumes_to_n_trials_on_validation_only(tmp_path: Path) -> None:
    storage = with_busy_timeout(f"sqlite:///{tmp_path}/optuna.db")
    search = ("hparams_search=tpe", "tracking.experiment=search", "hydra.sweeper.study_name=s",
              f"hydra.sweeper.storage=sqlite:///{tmp_path}/optuna.db",
              "hydra.sweeper.n_trials=6", "hydra.sweeper.n_startup_trials=3")
    first = _cli(tmp_path, *search, f"hydra.sweep.dir={tmp_path}/first", log="first.log")
    deadline = time.time() + 300
    while len(_trials(storage, TrialState.COMPLETE)) < 3:
        assert first.poll() is None and time.time() < deadline, \
            (tmp_path / "first.log").read_text()[-3000:]
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)  # the whole search, mid-trial: no handler runs
    first.wait()
    assert 3 <= len(_trials(storage, TrialState.COMPLETE)) < 6

    second = _cli(tmp_path, *search, f"hydra.sweep.dir={tmp_path}/second", log="second.log")
    assert _finish(second, 300) == 0, (tmp_path / "second.log").read_text()[-3000:]
    complete = _trials(storage, TrialState.COMPLETE)
    assert len(complete) == 6
    assert not _trials(storage, TrialState.RUNNING)
    for failed in _trials(storage, TrialState.FAIL):  # left RUNNING by the kill: run again
        assert any(t.user_attrs.get(RETRY_ATTR) == failed.number and t.params == failed.params
                   for t in complete)

    jobs = _runs(tmp_path, "search", status="FINISHED")
    assert len(jobs) == 6
    sweeps = {run.info.run_id for run in _runs(tmp_path, "search", role="sweep")}
    assert len(sweeps) == 2 and {run.data.tags[PARENT_TAG] for run in jobs} <= sweeps
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    by_lr = {run.data.params["training.lr"]: run.info.run_id for run in jobs}
    for trial in complete:
        run_id = by_lr[str(trial.params["training.lr"])]

        def last(key: str, run_id: str = run_id) -> float:
            return max(client.get_metric_history(run_id, key), key=lambda m: m.step).value

        assert trial.value == last("val_ndcg_at_10")
        assert trial.value != last("ndcg_at_10")  # the test queries never reach the search
