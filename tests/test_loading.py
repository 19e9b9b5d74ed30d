"""Large packages load with the cyclic collector paused, then frozen out of later collections
(chelation.loading); shown on the real store's and the protocol's imports in a fresh process."""

from __future__ import annotations

import gc
import subprocess
import sys
from pathlib import Path

from chelation.loading import collector_paused, import_paused


def test_the_pause_restores_the_collector_and_freezes_what_is_alive() -> None:
    frozen = gc.get_freeze_count()
    try:
        with collector_paused():
            assert not gc.isenabled()
            kept = [[] for _ in range(1000)]  # tracked containers, alive on the way out
        assert gc.isenabled() and gc.get_freeze_count() >= frozen + len(kept)
        gc.disable()
        with collector_paused():
            pass
        assert not gc.isenabled()  # a collector the caller had off stays off
    finally:
        gc.enable()
        gc.unfreeze()


def test_a_module_already_loaded_is_looked_up_without_a_pause() -> None:
    gc.unfreeze()
    assert import_paused("json") is sys.modules["json"]
    assert gc.get_freeze_count() == 0


PROBE = """
import gc, sys
full = []
gc.callbacks.append(lambda phase, info: phase == "stop" and info["generation"] == 2
                    and full.append(1))
from chelation import tracking
from chelation.loading import import_paused
tracking.prepare_store(sys.argv[1], "probe")          # MLflow and its SQL store
import_paused("chelation.protocol")                   # torch
assert "mlflow.store.tracking.sqlalchemy_store" in sys.modules and "torch" in sys.modules
print(len(full), gc.get_freeze_count(), gc.isenabled())
"""


def test_mlflow_store_and_torch_load_without_a_full_collection(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", PROBE, f"sqlite:///{tmp_path}/mlflow.db"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    full, frozen, enabled = done.stdout.split()
    # with the collector on, these imports ran 6-7 full collections (results/job_cost.md)
    assert int(full) == 0 and enabled == "True"
    assert int(frozen) > 100_000  # what they loaded is out of every later collection
