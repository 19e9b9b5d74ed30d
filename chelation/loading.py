"""Loading a large package (MLflow's store, torch, sentence-transformers) with the cyclic garbage
collector paused, and what it loaded moved out of later collections.

Importing MLflow and opening its SQL store creates about 250,000 objects that live as long as the
process. With the collector on, the import itself runs several full collections, each walking
every object made so far, and later full collections walk them all again: in a warm 3-mode sweep
here, 7 full collections took 0.67 s, all of them during these imports (results/job_cost.md).
What a module creates while loading is not garbage, so nothing is lost by not collecting then;
`gc.freeze` afterwards puts every live object in the permanent generation, which collections
skip. Objects freed by reference counting are freed as always; only reference cycles among the
objects alive at that moment are never collected, so the pause is taken once per package, when
it first loads, not per job."""

from __future__ import annotations

import contextlib
import gc
import importlib
import sys
from collections.abc import Iterator
from types import ModuleType


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic collection inside; everything alive is frozen on the way out."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()


def import_paused(name: str) -> ModuleType:
    """`importlib.import_module(name)`, with the collector paused when the module actually
    loads (an import of a loaded module is a lookup and pauses nothing)."""
    if name in sys.modules:
        return sys.modules[name]
    with collector_paused():
        return importlib.import_module(name)
