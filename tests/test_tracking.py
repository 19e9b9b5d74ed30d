"""The claim (one run per configuration, across sweeps) and the retirement of runs whose owner is
gone, on a real temporary SQLite MLflow store with hand-made runs: some with no owner (as made
before owners were recorded), some owned by this process, by a process that has exited, or by
another host with a fresh or a stale heartbeat."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from chelation import claims, run_owner, tracking
from chelation.tags import PARENT_TAG, ROLE_TAG

HASH = "cafe0000cafe0000"


@pytest.fixture
def store(tmp_path: Path) -> tuple[MlflowClient, str]:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    experiment_id = tracking.prepare_store(uri, "claims")
    return MlflowClient(tracking.with_busy_timeout(uri)), experiment_id


def _run(client: MlflowClient, experiment_id: str, start: int, parent: str | None = None,
         role: str = "job", config_hash: str | None = HASH, status: str = "RUNNING",
         owner: dict[str, str] | None = None) -> str:
    tags = {ROLE_TAG: role, **(owner or {})}
    if config_hash:
        tags["config_hash"] = config_hash
    if parent:
        tags[PARENT_TAG] = parent
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
    assert not claims.claim(client, exp, HASH, mine, parent)
    assert _deleted(client, mine)
    assert _status(client, mine) == "KILLED"  # never RUNNING inside the deleted lifecycle
    assert claims.claim(client, exp, HASH, earlier, parent)
    assert not _deleted(client, earlier)


def test_a_running_job_of_another_sweep_does_not_take_the_claim(store) -> None:
    client, exp = store
    other_parent = _run(client, exp, 1, role="sweep", config_hash=None)
    my_parent = _run(client, exp, 2, role="sweep", config_hash=None)
    _run(client, exp, 100, other_parent)
    mine = _run(client, exp, 200, my_parent)
    assert claims.claim(client, exp, HASH, mine, my_parent)


def test_a_finished_rival_wins_whatever_its_sweep(store) -> None:
    client, exp = store
    parent = _run(client, exp, 1, role="sweep", config_hash=None)
    _run(client, exp, 500, None, status="FINISHED")  # finished later, in no sweep at all
    mine = _run(client, exp, 100, parent)
    assert not claims.claim(client, exp, HASH, mine, parent)
    assert _deleted(client, mine)


def test_equal_start_times_are_settled_by_run_id(store) -> None:
    client, exp = store
    parent = _run(client, exp, 1, role="sweep", config_hash=None)
    a, b = sorted([_run(client, exp, 100, parent), _run(client, exp, 100, parent)])
    assert claims.claim(client, exp, HASH, a, parent)
    assert not claims.claim(client, exp, HASH, b, parent)


def test_other_configurations_and_killed_runs_never_compete(store) -> None:
    client, exp = store
    parent = _run(client, exp, 1, role="sweep", config_hash=None)
    _run(client, exp, 50, parent, config_hash="0000000000000000")
    _run(client, exp, 60, parent, status="KILLED")
    mine = _run(client, exp, 100, parent)
    assert claims.claim(client, exp, HASH, mine, parent)


def test_an_orphan_under_an_ended_sweep_is_retired(store) -> None:
    client, exp = store
    ended = _run(client, exp, 1, role="sweep", config_hash=None)
    orphan = _run(client, exp, 10, ended)
    done = _run(client, exp, 11, ended, status="FINISHED")
    client.set_terminated(ended, "FINISHED")
    live = _run(client, exp, 2, role="sweep", config_hash=None)
    running = _run(client, exp, 20, live)
    assert claims.retire_stale_runs(client, exp) == 1
    assert _status(client, orphan) == "KILLED"
    assert _status(client, done) == "FINISHED"
    assert _status(client, running) == "RUNNING"


@pytest.fixture(scope="module")
def dead_owner() -> dict[str, str]:
    """The owner tags of a process that has exited."""
    out = subprocess.run([sys.executable, "-c", "import json; from chelation import run_owner; "
                          "print(json.dumps(run_owner.owner_tags()))"],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def _remote(heartbeat_age_s: float) -> dict[str, str]:
    return {run_owner.HOST_TAG: "another-host", run_owner.PID_TAG: "1",
            run_owner.PROCESS_START_TAG: "0",
            run_owner.HEARTBEAT_TAG: str(int((time.time() - heartbeat_age_s) * 1000))}


def test_owner_liveness(dead_owner) -> None:
    mine = run_owner.owner_tags()
    assert run_owner.owner_alive(mine) is True
    assert run_owner.owner_alive(dead_owner) is False
    reused = {**mine, run_owner.PROCESS_START_TAG: "12345.000"}  # this pid, another process
    assert run_owner.owner_alive(reused) is False
    assert run_owner.owner_alive(_remote(10)) is True
    assert run_owner.owner_alive(_remote(run_owner.LEASE_S + 10)) is False
    assert run_owner.owner_alive({}) is None


def test_a_live_run_of_the_same_config_in_another_sweep_takes_the_claim(store) -> None:
    client, exp = store
    other, mine_parent = (_run(client, exp, i, role="sweep", config_hash=None,
                               owner=run_owner.owner_tags()) for i in (1, 2))
    _run(client, exp, 100, other, owner=run_owner.owner_tags())
    mine = _run(client, exp, 200, mine_parent, owner=run_owner.owner_tags())
    assert not claims.claim(client, exp, HASH, mine, mine_parent)


def test_a_dead_owners_run_does_not_take_the_claim(store, dead_owner) -> None:
    client, exp = store
    parent = _run(client, exp, 1, role="sweep", config_hash=None, owner=dead_owner)
    _run(client, exp, 100, parent, owner=dead_owner)
    _run(client, exp, 110, None, owner=_remote(run_owner.LEASE_S + 1))
    mine = _run(client, exp, 200, None, owner=run_owner.owner_tags())
    assert claims.claim(client, exp, HASH, mine, None)


def test_a_killed_sweep_and_its_jobs_are_retired_live_ones_kept(store, dead_owner) -> None:
    client, exp = store
    killed_parent = _run(client, exp, 1, role="sweep", config_hash=None, owner=dead_owner)
    orphan = _run(client, exp, 10, killed_parent, owner=dead_owner)
    stale_remote = _run(client, exp, 11, None, owner=_remote(run_owner.LEASE_S + 1))
    live_parent = _run(client, exp, 2, role="sweep", config_hash=None,
                       owner=run_owner.owner_tags())
    live = _run(client, exp, 20, live_parent, owner=run_owner.owner_tags())
    remote = _run(client, exp, 21, None, owner=_remote(5))
    assert claims.retire_stale_runs(client, exp) == 3
    for run_id in (killed_parent, orphan, stale_remote):
        assert _status(client, run_id) == "KILLED"
    for run_id in (live_parent, live, remote):
        assert _status(client, run_id) == "RUNNING"


def test_impossible_uris_fail_naming_tracking_uri(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for uri in ("garbage://x", f"sqlite:///{blocker}/sub/mlflow.db"):
        with pytest.raises(tracking.TrackingUnavailable, match="tracking.uri="):
            tracking.prepare_store(uri, "e")
