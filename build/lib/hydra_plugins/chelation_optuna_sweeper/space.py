"""A search space from Hydra's sweep grammar: `interval(a, b)` (float, or int when both ends are
ints: `int(interval(2, 20))`), `tag(log, interval(...))` on a log scale, `range(a, b, step)`
(stepped, `b` excluded as in Python) and `choice(...)` or `a,b,c` (categorical). A plain value
is not searched: it is passed to every trial as it is."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution


def search_space(overrides: list[str]) -> tuple[dict[str, BaseDistribution], list[str]]:
    """(distributions by override key, the fixed overrides); a later override of a key
    replaces an earlier one, so the command line wins over the config's `params`."""
    space: dict[str, BaseDistribution] = {}
    fixed: dict[str, str] = {}
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.get_key_element()
        space.pop(key, None)
        fixed.pop(key, None)
        if override.is_sweep_override():
            space[key] = distribution(override)
        else:
            fixed[key] = f"{key}={override.get_value_element_as_str()}"
    return space, list(fixed.values())


def distribution(override: Override) -> BaseDistribution:
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    sweep = override.value()
    log = "log" in getattr(sweep, "tags", set())
    if isinstance(sweep, IntervalSweep):
        if isinstance(sweep.start, int) and isinstance(sweep.end, int):
            return IntDistribution(sweep.start, sweep.end, log=log)
        return FloatDistribution(float(sweep.start), float(sweep.end), log=log)
    if isinstance(sweep, RangeSweep):
        values = list(override.sweep_iterator())
        if all(isinstance(v, int) for v in values):
            return IntDistribution(values[0], values[-1], step=int(sweep.step))
        return FloatDistribution(values[0], values[-1], step=float(sweep.step))
    if isinstance(sweep, ChoiceSweep):
        return CategoricalDistribution(list(override.sweep_iterator()))
    raise ValueError(f"{override.input_line}: not a search space Optuna can sample")


def as_override(key: str, value: object) -> str:
    """`key=value` for a sampled value, in a form Hydra parses back to the same value."""
    return f"{key}={value!r}" if isinstance(value, float) else f"{key}={value}"
