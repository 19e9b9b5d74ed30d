"""Maps from a teacher's embedding space into the student's frame, fitted on paired corpus
embeddings, so that blended targets mix like with like.

`procrustes` keeps the teacher's geometry (a rotation, semi-orthogonal when widths differ);
`lstsq` is the unconstrained linear map; `truncate` is the naive keep-the-first-dimensions
(or zero-pad) map that upstream used.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable

import numpy as np
from threadpoolctl import threadpool_limits

from chelation.kinds import Projection
from chelation.targets import l2_normalize

# The fits below are small dense problems (a dim x dim SVD): one BLAS thread does them in about
# 0.15 s; two threads on two cores shared with other processes took 0.6-4.7 s (busy-waiting
# threads, measured here), so they run on one.


def fit_procrustes(teacher: np.ndarray, student: np.ndarray) -> np.ndarray:
    """Orthogonal Procrustes: the P with orthonormal columns minimising ||T P - S||_F
    (SVD of T'S = U S V', P = U V'). Shape (teacher_dim, student_dim)."""
    _check_paired(teacher, student)
    with threadpool_limits(1, user_api="blas"):  # see above
        u, _, vt = np.linalg.svd(teacher.T.astype(np.float64) @ student.astype(np.float64),
                                 full_matrices=False)
    return (u @ vt).astype(np.float32)


def fit_least_squares(teacher: np.ndarray, student: np.ndarray) -> np.ndarray:
    """Unconstrained least-squares map minimising ||T P - S||_F."""
    _check_paired(teacher, student)
    with threadpool_limits(1, user_api="blas"):  # see above
        p, *_ = np.linalg.lstsq(teacher.astype(np.float64), student.astype(np.float64),
                                rcond=None)
    return p.astype(np.float32)


def fit_truncate(teacher: np.ndarray, student: np.ndarray) -> np.ndarray:
    """Keep the first student_dim teacher dimensions, or zero-pad a narrower teacher."""
    _check_paired(teacher, student)
    t_dim, s_dim = teacher.shape[1], student.shape[1]
    return np.eye(t_dim, s_dim, dtype=np.float32)


PROJECTIONS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    Projection.PROCRUSTES: fit_procrustes,
    Projection.LSTSQ: fit_least_squares,
    Projection.TRUNCATE: fit_truncate,
}


# Fitted maps of this process by (kind, digest of the teacher's and the student's embeddings):
# the jobs of a sweep fit the same teacher on the same corpus once.
_fitted: OrderedDict[tuple[str, str, str], np.ndarray] = OrderedDict()
_KEEP = 8


def fit_projection(kind: str, teacher: np.ndarray, student: np.ndarray) -> np.ndarray:
    if kind not in PROJECTIONS:
        raise ValueError(f"projection={kind!r} is not one of {sorted(PROJECTIONS)}")
    key = (str(kind), _digest(teacher), _digest(student))
    if key not in _fitted:
        _fitted[key] = PROJECTIONS[kind](teacher, student)
        while len(_fitted) > _KEEP:
            _fitted.popitem(last=False)
    _fitted.move_to_end(key)
    return _fitted[key].copy()


def _digest(array: np.ndarray) -> str:
    array = np.ascontiguousarray(array)
    return hashlib.sha1(f"{array.dtype}{array.shape}".encode() + array.tobytes()).hexdigest()


def project(teacher: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Teacher embeddings mapped into the student's frame, unit length."""
    if teacher.shape[1] != matrix.shape[0]:
        raise ValueError(
            f"teacher embeddings are {teacher.shape[1]} wide but the projection expects "
            f"{matrix.shape[0]}"
        )
    return l2_normalize(teacher @ matrix)


def _check_paired(teacher: np.ndarray, student: np.ndarray) -> None:
    if teacher.ndim != 2 or student.ndim != 2 or len(teacher) != len(student):
        raise ValueError(
            f"projection needs paired 2-d embeddings, got {teacher.shape} and {student.shape}"
        )
