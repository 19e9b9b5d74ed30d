"""How a cost grows with the corpus: the phases of one cycle the scale benchmark times, and the
exponent of each phase's growth between corpus sizes (pure arithmetic on measured rows)."""

from __future__ import annotations

import math

PHASES = ("generate_s", "setup_s", "scout_s", "sediment_s", "reindex_s", "evaluate_s",
          "cycle_s")


def growth(rows: list[dict]) -> dict[str, list[float]]:
    """Per phase, the exponent b of cost ~ N^b between successive sizes (1 = linear). Sizes with
    a different fold count are compared per fold."""
    out: dict[str, list[float]] = {}
    for phase in PHASES[1:]:
        exps = []
        for a, b in zip(rows, rows[1:], strict=False):
            ta, tb = a[phase] / a["folds"], b[phase] / b["folds"]
            exps.append(math.log(tb / ta) / math.log(b["n_docs"] / a["n_docs"])
                        if ta > 0 and tb > 0 else float("nan"))
        out[phase] = exps
    return out
