"""What resume does with a configuration's finished runs: skip it, run it, or run it again.

A finished run stands for its configuration unless it fell back for a model it could not load
(a missing teacher): then, once that model can be had, the configuration runs again and the
new run replaces the degraded one (the analysis keeps one run per configuration).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from chelation.kinds import Fallback
from chelation.tags import Tag


@dataclass(frozen=True)
class ResumeDecision:
    """`done`: the finished run that stands for the configuration (skip the job); `rerun_of`:
    the degraded finished run that the job about to run replaces. Both None: a first run."""

    done: Any | None = None
    rerun_of: Any | None = None


def fell_back(run: Any) -> bool:
    """The run finished without a model it needed (its `fallback` tag says how)."""
    return Fallback.degraded(run.data.tags.get(Tag.FALLBACK))


def decide(finished: Sequence[Any], models_ready: bool) -> ResumeDecision:
    """`finished`: the configuration's finished runs, newest first; `models_ready`: whether the
    models the job needs can be had now. A complete run is done; a degraded one is done only
    while they still cannot."""
    complete = [r for r in finished if not fell_back(r)]
    if complete:
        return ResumeDecision(done=complete[0])
    if not finished:
        return ResumeDecision()
    if models_ready:
        return ResumeDecision(rerun_of=finished[0])
    return ResumeDecision(done=finished[0])
