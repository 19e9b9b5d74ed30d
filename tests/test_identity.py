"""A job's identity (config hash): which keys change what a job computes, per mode. Resume skips
a job whose hash has a finished run, so a key wrongly left out would skip a different job, and a
key wrongly kept in would run the same job twice."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from chelation.identity import config_label, identity
from experiments.train import job_config
from tests.test_harness import compose_with


def _config(*overrides: str) -> dict[str, Any]:
    from omegaconf import OmegaConf

    cfg = compose_with(*overrides)
    job_config(cfg)  # the same validation a job gets
    return OmegaConf.to_container(cfg, resolve=False)


def _with(config: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(config)
    node = changed
    *path, leaf = key.split(".")
    for part in path:
        node = node[part]
    node[leaf] = value
    return changed


def _changes_hash(config: dict[str, Any], key: str, value: Any) -> bool:
    return identity(config)[0] != identity(_with(config, key, value))[0]


@pytest.mark.parametrize("mode", ["frozen", "baseline", "offline", "hybrid"])
def test_index_teacher_weight_counts_only_for_a_blend(mode: str) -> None:
    student = _config(f"mode={mode}")
    assert not _changes_hash(student, "index.teacher_weight", 0.9)
    assert not _changes_hash(student, "index.fit_queries", True)
    blend = _with(student, "index.documents", "blend")
    assert identity(blend) != identity(student)
    assert _changes_hash(blend, "index.teacher_weight", 0.9)
    assert _changes_hash(blend, "index.fit_queries", True)
    # the teacher makes the documents, whatever the mode trains on
    assert _changes_hash(blend, "teacher.model", "another/model")
    assert not _changes_hash(blend, "teacher.batch_size", 2)


def test_documents_are_identified_by_the_teacher_share() -> None:
    base = _config("mode=frozen")
    blend0 = _with(_with(base, "index.documents", "blend"), "index.teacher_weight", 0.0)
    blend1 = _with(_with(base, "index.documents", "blend"), "index.teacher_weight", 1.0)
    teacher = _with(base, "index.documents", "teacher")
    assert identity(blend0) == identity(base)
    assert identity(blend1) == identity(teacher)


def test_query_cost_sample_is_not_identity() -> None:
    assert not _changes_hash(_config(), "query_cost_sample", 0)


# key -> a different value; per mode, whether it changes what the job computes
_KEYS = {
    "teacher.model": "another/model",
    "teacher.projection": "lstsq",
    "weight.value": 0.9,
    "training.epochs": 3,
    "training.push": 0.7,
    "chelation.scout_k": 7,
    "adapter.hidden_dim": 64,
    "cycles": 5,
    "protocol": "kfold",
    "student.model": "another/student",
    "dataset.name": "other",
}
_MATTERS = {
    "frozen": {"protocol", "student.model", "dataset.name"},
    "baseline": {"training.epochs", "training.push", "chelation.scout_k", "adapter.hidden_dim",
                 "cycles", "protocol", "student.model", "dataset.name"},
    "offline": {"teacher.model", "teacher.projection", "training.epochs", "training.push",
                "chelation.scout_k", "adapter.hidden_dim", "cycles", "protocol",
                "student.model", "dataset.name"},
    "hybrid": set(_KEYS),
}
# never part of a job's identity: where results go, caches, batch sizes, progress bars
_NEVER = {"tracking.uri": "sqlite:///elsewhere.db", "tracking.experiment": "other",
          "cache_dir": "/elsewhere", "engine.location": "/tmp/x", "show_progress": False,
          "student.batch_size": 7, "teacher.batch_size": 3}


@pytest.mark.parametrize("mode", list(_MATTERS))
def test_which_keys_change_the_hash_per_mode(mode: str) -> None:
    config = _config(f"mode={mode}")
    changed = {k for k, v in _KEYS.items() if _changes_hash(config, k, v)}
    assert changed == _MATTERS[mode]
    assert not {k for k, v in _NEVER.items() if _changes_hash(config, k, v)}


@pytest.mark.parametrize("mode", list(_MATTERS))
def test_the_selection_method_and_only_its_own_setting_enter_the_hash(mode: str) -> None:
    """What a fold chooses on is logged with every run, so it is part of every mode's identity;
    the setting of the method not in use is not."""
    holdout = _config(f"mode={mode}", "selection.method=holdout")
    inner = _config(f"mode={mode}", "selection.method=inner")
    assert identity(holdout) != identity(inner)
    assert _changes_hash(holdout, "selection.fraction", 0.4)
    assert not _changes_hash(holdout, "selection.inner_folds", 5)
    assert _changes_hash(inner, "selection.inner_folds", 5)
    assert not _changes_hash(inner, "selection.fraction", 0.4)


@pytest.mark.parametrize("mode", list(_MATTERS))
def test_the_seed_changes_the_job_hash_but_not_the_group_hash(mode: str) -> None:
    config = _config(f"mode={mode}")
    other = _with(config, "seed", 7)
    assert identity(config)[0] != identity(other)[0]
    assert identity(config)[1] == identity(other)[1]


def test_a_frozen_adapter_that_starts_off_the_identity_is_another_configuration() -> None:
    frozen = _config("mode=frozen")
    assert not _changes_hash(frozen, "adapter.hidden_dim", 64)  # identity adapter: irrelevant
    scaled = _with(frozen, "adapter.init_scale", 0.1)
    assert identity(scaled)[0] != identity(frozen)[0]
    assert _changes_hash(scaled, "adapter.hidden_dim", 64)
    assert _changes_hash(scaled, "adapter.init_scale", 0.2)


@pytest.mark.parametrize("part", ["student", "teacher"])
def test_precision_enters_the_hash_only_off_its_default(part: str) -> None:
    config = _config("mode=hybrid")
    assert config[part].get("precision", "float32") == "float32"
    assert not _changes_hash(config, f"{part}.precision", "float32")
    assert _changes_hash(config, f"{part}.precision", "bfloat16")
    # forcing bfloat16 on a CPU without it is off by default and leaves earlier hashes alone
    assert config[part].get("force_precision", False) is False
    assert not _changes_hash(config, f"{part}.force_precision", False)
    assert _changes_hash(_with(config, f"{part}.precision", "bfloat16"),
                         f"{part}.force_precision", True)


def test_the_mode_type_says_what_each_mode_needs() -> None:
    from chelation.kinds import MODES, Mode

    assert MODES == ("frozen", "baseline", "offline", "hybrid")  # the order reports use
    assert [m for m in Mode if not m.trains] == [Mode.FROZEN]
    assert [m for m in Mode if m.teacher_targets] == [Mode.OFFLINE, Mode.HYBRID]
    assert [m for m in Mode if m.distils_first] == [Mode.OFFLINE]
    assert [m for m in Mode if m.blends_targets] == [Mode.HYBRID]
    assert Mode("hybrid") == "hybrid" and {Mode.FROZEN: 1}["frozen"] == 1  # a string in configs


def test_the_typed_config_hashes_like_the_dict_hydra_composes() -> None:
    """The job hashes its JobConfig; runs made when the dict was hashed keep their identity."""
    from omegaconf import OmegaConf

    for overrides in (("mode=hybrid", "teacher=mpnet", "weight=linear"),
                      ("mode=frozen", "index.documents=blend", "adapter.init_scale=0.1"),
                      ("mode=offline", "student.precision=bfloat16", "seed=4")):
        cfg = compose_with(*overrides)
        assert identity(job_config(cfg)) == identity(OmegaConf.to_container(cfg, resolve=True))


@pytest.mark.parametrize(("overrides", "label"), [
    (("mode=frozen",), "frozen/all-MiniLM-L6-v2"),
    (("mode=baseline",), "baseline"),
    (("mode=offline", "teacher=mpnet"), "offline/mpnet/procrustes"),
    (("mode=hybrid", "weight.value=0.3"), "hybrid/minilm/constant:0.3/procrustes"),
    (("mode=hybrid", "weight=linear", "teacher.projection=lstsq"),
     "hybrid/minilm/linear:1->0/lstsq"),
    (("mode=frozen", "teacher=mpnet", "index.documents=blend", "index.teacher_weight=0.25"),
     "frozen/all-MiniLM-L6-v2/docs:mpnet@0.25"),
    (("mode=baseline", "teacher=mpnet", "index.documents=teacher", "index.fit_queries=true"),
     "baseline/docs:mpnet+queries@1"),
    (("mode=baseline", "student.precision=bfloat16"), "baseline/all-MiniLM-L6-v2:bfloat16"),
    # a teacher the configuration never loads does not name its precision
    (("mode=frozen", "teacher=mpnet", "teacher.precision=bfloat16"), "frozen/all-MiniLM-L6-v2"),
    (("mode=offline", "teacher=mpnet", "teacher.precision=bfloat16"),
     "offline/all-mpnet-base-v2:bfloat16/mpnet/procrustes"),
])
def test_the_label_names_the_mode_and_only_what_it_depends_on(overrides, label) -> None:
    assert config_label(job_config(compose_with(*overrides))) == label


def test_a_job_summary_reports_validation_for_a_search_and_test_for_people() -> None:
    from chelation.job_files import JobSummary

    ran = JobSummary("h", "g", "baseline", cycles=[
        {"cycle": 0, "ndcg_at_10": 0.5, "val_ndcg_at_10": 0.6},
        {"cycle": 1, "ndcg_at_10": 0.55, "val_ndcg_at_10": 0.58}],
        totals={"final_ndcg_at_10": 0.55})
    assert (ran.final_ndcg_at_10, ran.final_val_ndcg_at_10) == (0.55, 0.58)
    record = ran.to_json()
    assert record["final_ndcg_at_10"] == 0.55 and record["config_label"] == "baseline"
    assert "skipped" not in record
    # a skipped job carries the finished run's figures; no validation slice: None, not NaN
    skipped = JobSummary("h", "g", "baseline", run_id="r", skipped=True,
                         totals={"final_ndcg_at_10": 0.4})
    assert skipped.final_ndcg_at_10 == 0.4 and skipped.final_val_ndcg_at_10 is None
    assert skipped.to_json()["skipped"] is True
    no_val = JobSummary("h", "g", "baseline", cycles=[{"cycle": 0, "ndcg_at_10": 0.5,
                                                       "val_ndcg_at_10": float("nan")}])
    assert no_val.final_val_ndcg_at_10 is None


def test_a_job_summary_reads_back_what_it_wrote(tmp_path) -> None:
    from chelation.job_files import RESULTS_FILE, JobSummary

    written = JobSummary(config_hash="h", group_hash="g", config_label="hybrid",
                         cycles=[{"cycle": 0, "ndcg_at_10": 0.5, "val_ndcg_at_10": None}],
                         totals={"total_time_s": 1.5, "final_ndcg_at_10": 0.5,
                                 "fallback": "none"},
                         run_id="r", untracked=True,
                         rerun_of={"run_id": "old", "fallback": "student_targets"})
    text = written.write(tmp_path).read_text()
    read = JobSummary.read(tmp_path)
    assert read == written
    read.write(tmp_path)  # the file a reader writes again is the same file, byte for byte
    assert (tmp_path / RESULTS_FILE).read_text() == text
    (tmp_path / RESULTS_FILE).write_text('{"cycles": []}')
    with pytest.raises(ValueError, match="not a job's results"):
        JobSummary.read(tmp_path)
