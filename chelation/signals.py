"""SIGTERM handled like Ctrl-C (SIGINT): both raise KeyboardInterrupt in the main thread, so the
code that finishes a run marks it KILLED before the process exits. A sweep's worker process ends
when the sweep's process dies (exit_with_parent)."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)


def _interrupt(signum: int, frame) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


@contextmanager
def signals_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises KeyboardInterrupt (SIGINT already does); the previous
    handler is restored after. Outside the main thread, where handlers cannot be set, a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


_watched: set[int] = set()


def exit_with_parent(parent_pid: int, period_s: float = 1.0, grace_s: float = 5.0) -> bool:
    """In a worker process started by `parent_pid` (a joblib/loky worker of a sweep): when that
    parent dies (kill -9 included), SIGTERM this process, so the job's run is marked KILLED as
    for any SIGTERM, and end it `grace_s` later whatever it does. Polls the parent pid from a
    daemon thread, once per process. A parent already gone ends the process at once; another
    process (a worker of a cluster's launcher, say) is not watched (False)."""
    if parent_pid in _watched:
        return True
    if os.getppid() != parent_pid:
        if _pid_alive(parent_pid):
            return False
        log.error("the sweep's process %d is gone: this worker (pid %d) stops", parent_pid,
                  os.getpid())
        os._exit(1)
    _watched.add(parent_pid)
    log.debug("worker %d stops when the sweep's process %d dies", os.getpid(), parent_pid)

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(period_s)
        log.error("the sweep's process %d is gone: this worker (pid %d) stops", parent_pid,
                  os.getpid())
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace_s)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name=f"parent-watch-{parent_pid}").start()
    return True


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
