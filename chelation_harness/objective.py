"""What a job returns to its sweeper: the objective a search maximises, read from validation
queries only (the slice of the train queries the collapse guard uses), never from the test set."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from chelation import tracking

OBJECTIVE = "val_ndcg_at_10"


def final_validation_ndcg(summary: Mapping[str, Any], uri: str) -> float | None:
    """The last cycle's validation NDCG@10 of a job's summary. A job skipped because its
    configuration already has a finished run reads that run's last value back from MLflow.
    None when there is none (no validation queries, or a live run of the same configuration
    in another sweep holds it)."""
    cycles = summary.get("cycles")
    if cycles:
        value = cycles[-1].get(OBJECTIVE)
    elif summary.get("run_id"):
        history = tracking.client(uri).get_metric_history(summary["run_id"], OBJECTIVE)
        value = max(history, key=lambda m: (m.step, m.timestamp)).value if history else None
    else:
        value = None
    return float(value) if value is not None and math.isfinite(value) else None
