"""Training targets of the sedimentation cycle: homeostatic push, teacher, and their blend.

Pure numpy: every function takes and returns arrays, so they test without models or indexes.
"""

from __future__ import annotations

import numpy as np

_EPS = 1e-12


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, _EPS)


def homeostatic_targets(vectors: np.ndarray, mean_centres: np.ndarray, push: float) -> np.ndarray:
    """`normalize(v + push * normalize(v - c))`: move each document away from the centre of the
    neighbourhoods it kept collapsing into."""
    if push < 0:
        raise ValueError(f"push={push} must be >= 0")
    away = l2_normalize(vectors - mean_centres)
    return l2_normalize(vectors + push * away)


def check_teacher_weight(weight: float) -> float:
    """A teacher weight outside [0, 1] is an error that names the value, never a silent clamp."""
    if not 0.0 <= weight <= 1.0 or np.isnan(weight):
        raise ValueError(f"teacher_weight={weight} is outside [0, 1]")
    return float(weight)


def blend_targets(homeostatic: np.ndarray, teacher: np.ndarray, weight: float) -> np.ndarray:
    """Hybrid target: `normalize((1 - w) * homeostatic + w * teacher)`."""
    w = check_teacher_weight(weight)
    if homeostatic.shape != teacher.shape:
        raise ValueError(
            f"cannot blend targets of shapes {homeostatic.shape} and {teacher.shape}: "
            "project the teacher into the student's frame first"
        )
    return l2_normalize((1.0 - w) * homeostatic + w * teacher)


def mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Mean row-wise cosine similarity (the teacher alignment metric)."""
    return float(np.mean(np.sum(l2_normalize(a) * l2_normalize(b), axis=1)))
