"""Who runs an MLflow run, and whether they still do: every run this harness creates carries its
owner (host, pid, the process's start time) and a heartbeat refreshed while the owner lives. A
RUNNING run whose owner is gone (a dead process on this host, or no heartbeat within the lease
from another host) was left by a kill, and can be retired."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Mapping

import psutil

HOST_TAG = "chelation.host"
PID_TAG = "chelation.pid"
PROCESS_START_TAG = "chelation.process_start"
HEARTBEAT_TAG = "chelation.heartbeat"
HEARTBEAT_S = 30.0
LEASE_S = 300.0  # ten missed heartbeats: the owner is gone


def owner_tags() -> dict[str, str]:
    """This process as the owner of a run, heartbeat included."""
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid()),
            PROCESS_START_TAG: f"{psutil.Process().create_time():.3f}",
            HEARTBEAT_TAG: str(int(time.time() * 1000))}


def owner_alive(tags: Mapping[str, str], now_s: float | None = None) -> bool | None:
    """True or False for a run with an owner; None for a run made before owners were recorded."""
    if HOST_TAG not in tags:
        return None
    if tags[HOST_TAG] == socket.gethostname():
        try:
            process = psutil.Process(int(tags[PID_TAG]))
            # a pid can be reused: the same pid with another start time is another process
            return abs(process.create_time() - float(tags[PROCESS_START_TAG])) < 1.0 \
                and process.status() != psutil.STATUS_ZOMBIE
        except (psutil.NoSuchProcess, psutil.AccessDenied, KeyError, ValueError):
            return False
    now_s = time.time() if now_s is None else now_s
    try:
        return now_s - int(tags[HEARTBEAT_TAG]) / 1000 < LEASE_S
    except (KeyError, ValueError):
        return False


class Heartbeat:
    """Refreshes a run's heartbeat tag from a daemon thread until stopped."""

    def __init__(self, client, run_id: str, period_s: float = HEARTBEAT_S):
        self._client, self._run_id, self._period = client, run_id, period_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True,
                                         name=f"heartbeat-{run_id[:8]}")
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self._period):
            try:
                self._client.set_tag(self._run_id, HEARTBEAT_TAG, str(int(time.time() * 1000)))
            except Exception:  # noqa: BLE001 - a missed beat only shortens the lease
                pass

    def stop(self) -> None:
        self._stop.set()
