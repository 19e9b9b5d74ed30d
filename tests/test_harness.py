"""The Hydra + MLflow harness run for real: configs composed as a user types them, multirun
sweeps as subprocesses into a temporary SQLite store, read back with MLflow's own API."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException, MissingConfigException
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from chelation import tracking
from chelation.identity import as_mapping, flatten
from chelation.kinds import MODES
from chelation.settings import DEFAULT_STUDENT, JobConfig, SettingsError
from experiments.schema import register
from experiments.train import job_config

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"


def compose_with(*overrides: str):
    register()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def test_default_config_composes_into_valid_settings() -> None:
    settings = job_config(compose_with())
    assert settings.training.mode == "baseline"
    assert settings.dataset.kind == "synthetic"
    assert settings.teacher.name == "minilm"


@pytest.mark.parametrize(("overrides", "expected"), [
    (["mode=hybrid", "teacher=mpnet", "weight=linear"],
     {"training.mode": "hybrid", "teacher.name": "mpnet",
      "teacher.model": "sentence-transformers/all-mpnet-base-v2", "weight.schedule": "linear",
      "weight.start": 1.0, "weight.end": 0.0}),
    (["+experiment=teacher_weight_sweep"],
     {"training.mode": "hybrid", "weight.schedule": "constant",
      "tracking.experiment": "teacher_weight_sweep"}),
    (["mode=offline", "teacher.projection=truncate"],
     {"training.mode": "offline", "teacher.projection": "truncate", "teacher.name": "minilm",
      "teacher.model": DEFAULT_STUDENT}),
    (["protocol=kfold", "folds=3", "weight=cosine"],
     {"protocol": "kfold", "folds": 3, "weight.schedule": "cosine", "training.mode": "baseline"}),
    (["+experiment=first_run", "+arm=blended_index"],
     {"training.mode": "frozen", "index.documents": "blend", "teacher.name": "mpnet",
      "dataset.name": "synthetic_hard", "cycles": 3}),
    (["+experiment=first_run", "+arm=hybrid"],
     {"training.mode": "hybrid", "index.documents": "student"}),
])
def test_menu_choices_compose_to_what_they_name(overrides: list[str],
                                                expected: dict[str, object]) -> None:
    settings = job_config(compose_with(*overrides))
    settings.validate()
    composed = flatten(as_mapping(settings))
    assert {key: composed[key] for key in expected} == expected


def test_config_yaml_restates_the_schemas_defaults_exactly(monkeypatch) -> None:
    """conf/config.yaml's own values (not its groups' options) are the schema's defaults: a
    default changed in one place and not the other fails here, naming the key."""
    for variable in ("CHELATION_CACHE", "MLFLOW_TRACKING_URI"):  # their fallbacks are compared
        monkeypatch.delenv(variable, raising=False)
    written = OmegaConf.load(CONF / "config.yaml")
    del written["defaults"], written["hydra"]
    yaml_values = flatten(OmegaConf.to_container(written, resolve=True))
    schema = flatten(OmegaConf.to_container(OmegaConf.structured(JobConfig)))
    assert set(yaml_values) <= set(schema), set(yaml_values) - set(schema)
    assert {k: v for k, v in yaml_values.items() if schema[k] != v} == {}


def test_unknown_mode_names_the_group_and_value() -> None:
    with pytest.raises(MissingConfigException) as err:
        compose_with("mode=nope")
    assert "mode/nope" in str(err.value)


@pytest.mark.parametrize(
    ("override", "key"),
    [("weight.value=1.5", "weight.value"), ("training.epochs=-1", "training.epochs"),
     ("weight.end=-0.2", "weight.end"), ("chelation.trigger=sometimes", "chelation.trigger"),
     ("teacher.projection=pad", "teacher.projection")],
)
def test_out_of_range_values_fail_naming_the_key(override: str, key: str) -> None:
    cfg = compose_with(override)
    with pytest.raises(SettingsError, match=key.replace(".", r"\.")):
        job_config(cfg)


def test_typo_in_a_key_fails_when_composing() -> None:
    with pytest.raises(ConfigCompositionException) as err:
        compose_with("training.epoch=3")
    assert "epoch" in str(err.value)


def test_wrong_type_fails_when_composing() -> None:
    with pytest.raises(ConfigCompositionException) as err:
        compose_with("cycles=many")
    assert "cycles" in str(err.value)


def _train(tmp: Path, *overrides: str, wait: bool = True) -> subprocess.Popen | str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "experiments.train", *overrides,
           f"tracking.uri=sqlite:///{tmp}/mlflow.db", "show_progress=false"]
    if not wait:
        return subprocess.Popen(cmd, cwd=tmp, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
    done = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


def _job_runs(client: MlflowClient, experiment: str, status: str = "FINISHED"):
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id],
                              filter_string=f"attributes.status = '{status}'")
    return [r for r in runs if r.data.tags.get("chelation.role") == "job"], \
        [r for r in runs if r.data.tags.get("chelation.role") == "sweep"]


@pytest.fixture(scope="module")
def sweep_store(tmp_path_factory: pytest.TempPathFactory, request) -> Path:
    """A real multirun: 2 modes x 2 teacher weights, synthetic data, 2 cycles, parallel jobs."""
    tmp = tmp_path_factory.mktemp("sweep")
    cache = os.environ["CHELATION_TEST_CACHE"]
    output = _train(tmp, "-m", "mode=offline,hybrid", "weight.value=0.2,0.8", "cycles=2",
                    "queries_per_cycle=20", "teacher.projection=procrustes",
                    "tracking.experiment=sweep", f"cache_dir={cache}",
                    "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                    f"hydra.sweep.dir={tmp}/multirun")
    (tmp / "sweep.log").write_text(output)
    return tmp


@pytest.mark.slow
def test_multirun_logs_parent_children_metrics_and_artifacts(sweep_store: Path) -> None:
    client = MlflowClient(f"sqlite:///{sweep_store}/mlflow.db")
    jobs, parents = _job_runs(client, "sweep")
    assert len(parents) == 1
    # offline ignores the teacher weight: the two offline jobs are one configuration, run once.
    labels = sorted(r.data.tags["config_label"] for r in jobs)
    assert labels == ["hybrid/minilm/constant:0.2/procrustes",
                      "hybrid/minilm/constant:0.8/procrustes", "offline/minilm/procrustes"]
    # the 4th job (offline again) was skipped, as a sibling's or a finished configuration
    job_logs = "".join(p.read_text() for p in (sweep_store / "multirun").glob("*/*.log"))
    assert job_logs.count("skipping offline") == 1
    # the sweep ends with a table of the jobs that ran, and each job with its summary
    assert "vs cycle 0" in (sweep_store / "sweep.log").read_text()
    assert job_logs.count("rollbacks by the guard") == 3
    assert len(list((sweep_store / "multirun").glob("*/results.json"))) == 3
    # the MLflow view: the experiment's kind, the parent named after the sweep with its table,
    # each job's dataset as an input
    assert client.get_experiment_by_name("sweep").tags["mlflow.experimentKind"] == \
        "custom_model_development"
    assert parents[0].info.run_name.startswith("sweep mode=offline,hybrid")
    assert "sweep_table.txt" in {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    for run in jobs:
        (used,) = run.inputs.dataset_inputs
        assert used.dataset.name == "synthetic" and len(used.dataset.digest) == 16
    for run in jobs:
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert run.data.params["training.mode"] == run.data.tags["mode"]
        for metric in ("ndcg_at_10", "ndcg_at_10_std", "recall_at_100", "query_time_s",
                       "sediment_time_s", "eval_time_s", "n_targets", "rollback"):
            steps = [m.step for m in client.get_metric_history(run.info.run_id, metric)]
            assert sorted(steps) == [0, 1, 2], (metric, steps)
        alignment = client.get_metric_history(run.info.run_id, "teacher_alignment")
        assert sorted(m.step for m in alignment) == [1, 2]
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"config.yaml", "per_query_ndcg.csv", "results.json", "adapters"} <= artifacts
        assert [a.path for a in client.list_artifacts(run.info.run_id, "adapters")] == \
            ["adapters/fold_0.pt"]
        table = Path(client.download_artifacts(run.info.run_id, "per_query_ndcg.csv",
                                               str(sweep_store / run.info.run_id)))
        lines = table.read_text().splitlines()
        assert lines[0] == "cycle,query_id,ndcg_at_10,fold"
        assert {line.split(",")[0] for line in lines[1:]} == {"0", "1", "2"}
        # what the nested selection reads: per fold, never one of that fold's test queries
        chosen_on = pd.read_csv(client.download_artifacts(
            run.info.run_id, "selection_ndcg.csv", str(sweep_store / run.info.run_id)),
            dtype={"query_id": str})
        tested = pd.read_csv(table, dtype={"query_id": str})
        assert not chosen_on.empty and set(chosen_on["fold"]) == set(tested["fold"]) == {0}
        assert not set(chosen_on["query_id"]) & set(tested["query_id"])
    weights = {r.data.tags["config_label"]: r.data.metrics.get("teacher_weight") for r in jobs}
    assert weights["hybrid/minilm/constant:0.2/procrustes"] == pytest.approx(0.2)
    assert weights["hybrid/minilm/constant:0.8/procrustes"] == pytest.approx(0.8)
    # the parent's answer: one fold (split), so one choice, the best final validation score
    # (ties: the simpler mode, then the label); with one seed its test NDCG@10 is that job's own
    best = min(jobs, key=lambda r: (-r.data.metrics["val_ndcg_at_10"],
                                    MODES.index(r.data.tags["mode"]),
                                    r.data.tags["config_label"]))
    parent = parents[0].data
    assert parent.tags["sweep_chosen_config"] == best.data.tags["config_label"]
    assert parent.metrics["sweep_chosen_test_ndcg_at_10"] == pytest.approx(
        best.data.metrics["ndcg_at_10"], abs=1e-9)
    low, high = (parent.metrics[f"sweep_chosen_test_ndcg_at_10_ci_{s}"] for s in ("low", "high"))
    assert low < parent.metrics["sweep_chosen_test_ndcg_at_10"] < high
    assert parent.tags["sweep_chosen_reference"] == "cycle 0 (same runs)"  # no frozen arm here
    assert parent.metrics["sweep_jobs"] == 3
    console = (sweep_store / "sweep.log").read_text()
    assert f"chosen inside each fold: {best.data.tags['config_label']} (1 of 1 " in console
    assert "vs cycle 0 (same runs) (p " in console
    assert f"/#/experiments/{parents[0].info.experiment_id}/runs?workflowType=machine_learning" \
        in console


@pytest.mark.slow
def test_rerunning_a_finished_sweep_runs_nothing(sweep_store: Path) -> None:
    cache = os.environ["CHELATION_TEST_CACHE"]
    output = _train(sweep_store, "-m", "mode=offline,hybrid", "weight.value=0.2,0.8",
                    "cycles=2", "queries_per_cycle=20", "tracking.experiment=sweep",
                    f"cache_dir={cache}", f"hydra.sweep.dir={sweep_store}/multirun-again")
    client = MlflowClient(f"sqlite:///{sweep_store}/mlflow.db")
    jobs, parents = _job_runs(client, "sweep")
    assert len(jobs) == 3 and len(parents) == 2
    assert output.count("skipping") == 4
    # the second sweep skipped every job, and still stands for the runs it found
    first, again = sorted(parents, key=lambda r: r.info.start_time)
    assert again.data.tags["sweep_chosen_config"] == first.data.tags["sweep_chosen_config"]
    assert again.data.metrics["sweep_jobs"] == 3


@pytest.mark.slow
def test_interrupted_sweep_is_completed_without_duplicates(tmp_path: Path) -> None:
    cache = os.environ["CHELATION_TEST_CACHE"]
    seeds = "seed=" + ",".join(str(s) for s in range(8))
    args = ("-m", "mode=baseline", seeds, "cycles=3", "queries_per_cycle=20",
            "tracking.experiment=resume", f"cache_dir={cache}")
    # the store exists before the sweep: this test's own polling must not race its migrations
    tracking.prepare_store(f"sqlite:///{tmp_path}/mlflow.db", "resume")
    proc = _train(tmp_path, *args, f"hydra.sweep.dir={tmp_path}/first", wait=False)
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    deadline = time.time() + 300
    finished = 0
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
        try:
            finished = len(_job_runs(client, "resume")[0])
        except Exception:  # noqa: BLE001 - the store may not exist yet
            continue
        if finished >= 1:
            os.killpg(proc.pid, signal.SIGKILL)
            break
    proc.wait(timeout=60)
    done_before = len(_job_runs(client, "resume")[0])
    assert 1 <= done_before < 8, "the sweep was not interrupted midway"
    # the kill lands inside a job (its run is left RUNNING) or between two (nothing is)
    cut_short = {r.info.run_id for r in _job_runs(client, "resume", status="RUNNING")[0]}

    output = _train(tmp_path, *args, f"hydra.sweep.dir={tmp_path}/second")
    jobs, _ = _job_runs(client, "resume")
    seeds_done = sorted(int(r.data.tags["seed"]) for r in jobs)
    assert seeds_done == list(range(8))
    assert output.count("skipping") == done_before
    left_running, parents_running = _job_runs(client, "resume", status="RUNNING")
    assert left_running == [] and parents_running == []  # the killed sweep's included
    killed, killed_parents = _job_runs(client, "resume", status="KILLED")
    assert {r.info.run_id for r in killed} == cut_short
    assert len(killed_parents) == 1  # the first sweep's parent: its process is gone


@pytest.mark.slow
def test_notebook_reads_the_real_sweep(sweep_store: Path) -> None:
    from experiments.analyse import execute_notebook

    out = sweep_store / "analysis"
    report = out / "RESULTS.md"
    execute_notebook({"TRACKING_URI": f"sqlite:///{sweep_store}/mlflow.db",
                      "EXPERIMENT": "sweep", "OUTPUT_DIR": str(out),
                      "RESULTS_MD": str(report), "POST_HOC": None}, out)
    for name in ("ndcg_vs_weight.png", "ndcg_per_cycle.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    text = report.read_text()
    for label in ("hybrid/minilm/constant:0.2/procrustes", "offline/minilm/procrustes"):
        assert label in text


@pytest.mark.slow
def test_console_script_runs_a_first_job(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "chelation-train"
    if not script.exists():
        pytest.skip("the package is not installed with its console scripts")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    cache = os.environ["CHELATION_TEST_CACHE"]
    done = subprocess.run([str(script), "cycles=1", "show_progress=false", f"cache_dir={cache}",
                           f"tracking.uri=sqlite:///{tmp_path}/mlflow.db"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = list((tmp_path / "outputs").glob("*/*/results.json"))
    assert len(results) == 1
    assert '"cycle": 1' in results[0].read_text()


def _compose_job(*overrides: str):
    """The config a job of these overrides receives, and its sweep grid: as Hydra runs it, with
    the Hydra node set (presets interpolate it) and then removed."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf, open_dict

    register()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    params = cfg.hydra.sweeper.params
    grid = OmegaConf.to_container(params) if params else {}
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, grid


@pytest.mark.parametrize("preset", sorted(p.stem for p in (CONF / "experiment").glob("*.yaml")))
def test_every_experiment_preset_composes_into_valid_settings(preset: str) -> None:
    """As a user types it: `+experiment=<preset>` composes and validates, and so does every value
    of each key its sweep grid names."""
    cfg, grid = _compose_job(f"+experiment={preset}")
    job_config(cfg).validate()
    for key, values in grid.items():
        for value in str(values).split(","):
            job, _ = _compose_job(f"+experiment={preset}", f"{key}={value}")
            job_config(job).validate()


def test_sweep_table_lists_each_job_best_first(tmp_path: Path) -> None:
    from chelation.job_files import JobSummary
    from experiments.callbacks import sweep_jobs, sweep_table

    jobs = [("baseline", 0, 0.30, 0.31, [0, 1, 1], 0, "none"),
            ("frozen/x", 0, 0.33, 0.33, [0, 0, 0], 0, "none"),
            ("offline/t/procrustes", 1, 0.30, 0.30, [0, 0, 1], 1, "baseline")]
    for i, (label, seed, first, final, rollbacks, distill, fallback) in enumerate(jobs):
        job = tmp_path / str(i)
        job.mkdir()
        (job / "config.yaml").write_text(f"seed: {seed}\n")
        JobSummary(config_hash=f"h{i}", group_hash=f"g{i}", config_label=label,
                   totals={"final_ndcg_at_10": final, "distill_rollback": distill,
                           "fallback": fallback},
                   cycles=[{"cycle": c, "ndcg_at_10": first, "rollback": r}
                           for c, r in enumerate(rollbacks)]).write(job)
    (tmp_path / "3").mkdir()  # a skipped job writes no results
    lines = sweep_table(sweep_jobs(tmp_path)).splitlines()
    assert lines[1].split() == ["frozen/x", "0", "0.3300", "+0.0000", "0", "none"]
    assert lines[2].split() == ["baseline", "0", "0.3100", "+0.0100", "2", "none"]
    assert lines[3].split() == ["offline/t/procrustes", "1", "0.3000", "+0.0000", "2", "baseline"]
    assert len(lines) == 5 and "collapse guard" in lines[4]


def test_the_sweep_is_named_after_its_preset_or_the_overrides_that_decide_its_jobs() -> None:
    from experiments.callbacks import sweep_name

    assert sweep_name(["+experiment=study_arms", "seed=0,1"]) == "sweep study_arms"
    assert sweep_name(["mode=frozen,hybrid", "seed=0,1", "tracking.uri=sqlite:///x.db",
                       "tracking.experiment=e", "show_progress=false", "cache_dir=/c",
                       "hydra.launcher.n_jobs=2"]) == "sweep mode=frozen,hybrid seed=0,1"
