"""The concurrency protocol between jobs that share a tracking store: a new run claims its
configuration (or steps aside for a rival that finished or started first), and runs whose owner
is gone (see chelation.run_owner) are retired as KILLED."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from chelation.kinds import Fallback
from chelation.run_owner import owner_alive
from chelation.tags import PARENT_TAG, ROLE_TAG, Tag

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)


def claim(client: MlflowClient, experiment_id: str, hash_: str, run_id: str,
          parent_run_id: str | None) -> bool:
    """After creating `run_id`, decide whether it owns its configuration: not if a run of the same
    config has finished meanwhile, nor if a run of it that started earlier is still running with
    a live owner, in this sweep or any other (a finished run that fell back is replaced, not a
    rival). Runs made before owners were recorded count as live when they are siblings in this
    sweep. A run that loses ends KILLED and deletes itself."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.{Tag.CONFIG_HASH} = '{hash_}' and attributes.status != 'KILLED'",
    )
    rivals = []
    for run in runs:
        if run.info.run_id == run_id:
            continue
        if run.info.status == "FINISHED":
            # a run that fell back is no rival: resume re-runs it once its model is back
            if not Fallback.degraded(run.data.tags.get(Tag.FALLBACK)):
                rivals.append((0, "", run.info.run_id))
        elif run.info.status == "RUNNING":
            alive = owner_alive(run.data.tags)
            if alive is None:
                alive = bool(parent_run_id) and run.data.tags.get(PARENT_TAG) == parent_run_id
            if alive:
                rivals.append((run.info.start_time, run.info.run_id, run.info.run_id))
    mine = client.get_run(run_id).info
    if any(r[:2] < (mine.start_time, run_id) for r in rivals):
        # ended before it is deleted: a lost claim leaves no RUNNING run, deleted or not
        client.set_terminated(run_id, "KILLED")
        client.delete_run(run_id)
        return False
    return True


def retire_stale_runs(client: MlflowClient, experiment_id: str) -> int:
    """Mark KILLED the runs (jobs and sweeps) still RUNNING whose owner is gone: a killed process
    on this host, or no heartbeat within the lease from another. A run made before owners were
    recorded is retired when it is a job under a sweep that is no longer running."""
    stale = client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'")
    retired = 0
    for run in stale:
        alive = owner_alive(run.data.tags)
        if alive is None:
            parent = run.data.tags.get(PARENT_TAG)
            alive = not (run.data.tags.get(ROLE_TAG) == "job" and parent
                         and client.get_run(parent).info.status != "RUNNING")
        if not alive:
            client.set_terminated(run.info.run_id, "KILLED")
            retired += 1
    if retired:
        log.info("marked %d runs left by killed processes as KILLED", retired)
    return retired
