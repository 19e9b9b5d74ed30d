"""The claim (one run per configuration within a sweep) and the retirement of orphaned runs, on
a real temporary SQLite MLflow store with hand-made runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from chelation import tracking

HASH = "cafe0000cafe0000"


@pytest.fixture
def store(tmp_path: Path) -> tuple[MlflowClient, str]:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    experiment_id = tracking.prepare_store(uri, "claims")
    return MlflowClient(tracking.with_busy_timeout(uri)), experiment_id


def _run(client: MlflowClient, experiment_id: str, start: int, parent: str | None = None,
         role: str = "job", config_hash: str | None = HASH, status: str = "RUNNING") -> str:
    tags = {tracking.ROLE_TAG: role}
    if config_hash:
        tags["config_hash"] = config_hash
    if parent:
        tags[tracking.PARENT_TAG] = parent
    run_id = client.create_run(experiment_id, start_time=start, tags=tags).info.run_id
    if status != "RUNNING":
        client.set_terminated(run_id, status)
    return run_id


def _status(client: MlflowClient, run_id: str) -> str:
    return client.get_run(run_id).info.status


def _deleted(client: MlflowClient, run_id: str) -> bool:
    return client.get_run(run_id).info.lifecycle_stage == "deleted"


def test_an_earlier_sibling_of_the_same_sweep_wins(store) -> None:
    client, exp = store
    parent = _run(client, exp, 1, role="sweep", config_hash=None)
    earlier = _run(client, exp, 100, parent)
    mine = _run(client, exp, 200, parent)
    assert not tracking.claim(client, exp, HASH, mine, parent)
    assert _deleted(client, mine)
    assert tracking.claim(client, exp, HASH, earlier, parent)
    assert not _deleted(client, earlier)


def test_a_running_job_of_another_sweep_does_not_take_the_claim(store) -> None:
    client, exp = store
    other_parent = _run(client, exp, 1, role="sweep", config_hash=None)
    my_parent = _run(client, exp, 2, role="sweep", config_hash=None)
    _run(client, exp, 100, other_parent)
    mine = _run(client, exp, 200, my_parent)
    assert tracking.claim(client, exp, HASH, mine, my_parent)


def test_a_finished_rival_wins_whatever_its_sweep(store) -> None:
    client, exp = store
    parent = _run(client, exp, 1, role="sweep", config_hash=None)
    _run(client, exp, 500, None, status="FINISHED")  # finished later, in no sweep at all
    mine = _run(client, exp, 100, parent)
    assert not tracking.claim(client, exp, HASH, mine, parent)
    assert _deleted(client, mine)


def test_equal_start_times_are_settled_by_run_id(store) -> None:
    client, exp = store
    parent = _run(client, exp, 1, role="sweep", config_hash=None)
    a, b = sorted([_run(client, exp, 100, parent), _run(client, exp, 100, parent)])
    assert tracking.claim(client, exp, HASH, a, parent)
    assert not tracking.claim(client, exp, HASH, b, parent)


def test_other_configurations_and_killed_runs_never_compete(store) -> None:
    client, exp = store
    parent = _run(client, exp, 1, role="sweep", config_hash=None)
    _run(client, exp, 50, parent, config_hash="0000000000000000")
    _run(client, exp, 60, parent, status="KILLED")
    mine = _run(client, exp, 100, parent)
    assert tracking.claim(client, exp, HASH, mine, parent)


def test_an_orphan_under_an_ended_sweep_is_retired(store) -> None:
    client, exp = store
    ended = _run(client, exp, 1, role="sweep", config_hash=None)
    orphan = _run(client, exp, 10, ended)
    done = _run(client, exp, 11, ended, status="FINISHED")
    client.set_terminated(ended, "FINISHED")
    live = _run(client, exp, 2, role="sweep", config_hash=None)
    running = _run(client, exp, 20, live)
    assert tracking.retire_orphaned_runs(client, exp) == 1
    assert _status(client, orphan) == "KILLED"
    assert _status(client, done) == "FINISHED"
    assert _status(client, running) == "RUNNING"


@pytest.mark.xfail(strict=True, reason="reliability issue: a killed sweep leaves its parent "
                   "RUNNING, and retirement only looks under parents that have ended")
def test_the_jobs_of_a_killed_sweep_are_retired(store) -> None:
    client, exp = store
    killed_parent = _run(client, exp, 1, role="sweep", config_hash=None)  # never ended
    orphan = _run(client, exp, 10, killed_parent)
    assert tracking.retire_orphaned_runs(client, exp) == 1
    assert _status(client, orphan) == "KILLED"
