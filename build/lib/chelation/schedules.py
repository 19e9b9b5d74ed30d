"""Teacher weight per cycle: constant, linear anneal, or cosine anneal."""

from __future__ import annotations

import math

from chelation.kinds import Schedule, names
from chelation.targets import check_teacher_weight


def teacher_weight_at(kind: str, cycle: int, n_cycles: int, start: float, end: float) -> float:
    """Weight for training cycle `cycle` (1-based) of `n_cycles`. `constant` uses `start`;
    the anneals go from `start` at the first cycle to `end` at the last."""
    check_teacher_weight(start)
    check_teacher_weight(end)
    if not 1 <= cycle <= max(n_cycles, 1):
        raise ValueError(f"cycle={cycle} is outside 1..{n_cycles}")
    if kind == Schedule.CONSTANT:
        return start
    progress = 0.0 if n_cycles <= 1 else (cycle - 1) / (n_cycles - 1)
    if kind == Schedule.LINEAR:
        return start + (end - start) * progress
    if kind == Schedule.COSINE:
        return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"weight schedule={kind!r} is not one of {names(Schedule)}")
