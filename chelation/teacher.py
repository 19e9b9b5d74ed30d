"""The teacher of offline and hybrid modes: a stronger model's embeddings, mapped into the
student's frame by a projection fitted on the corpus."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from chelation.encoders import CachedEncoder
from chelation.kinds import Projection
from chelation.models import ModelUnavailable
from chelation.projection import fit_projection, project

log = logging.getLogger(__name__)


class TeacherUnavailable(RuntimeError):
    """The teacher could not be loaded or could not encode; callers fall back to baseline."""


class Teacher:
    """Teacher targets in the student's frame. Nothing loads until `fit` is called; the projection
    is fitted once on the corpus (paired teacher/student embeddings of the same documents)."""

    def __init__(self, encoder: CachedEncoder, projection: str = Projection.PROCRUSTES):
        self.encoder = encoder
        self.projection_kind = projection
        self.matrix: np.ndarray | None = None
        self.corpus_raw: np.ndarray | None = None  # the teacher's own embeddings of the corpus
        # the fitted corpus in the student's frame: every fold of a job reads the same targets
        self.corpus_targets: np.ndarray | None = None
        self.teacher_dim: int | None = None
        self.failure: str | None = None  # why the teacher cannot be had: asked once per job


    @property
    def name(self) -> str:
        return self.encoder.name

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Raw teacher embeddings; any failure to load or encode becomes TeacherUnavailable,
        warned about once: later calls of the job fail at once with the same reason."""
        if self.failure is not None:
            raise TeacherUnavailable(self.failure)
        try:
            return self.encoder.encode(texts)
        except Exception as err:  # noqa: BLE001 - every teacher failure takes the fallback path
            self.failure = f"teacher {self.name!r} failed: {err}"
            # a model that is not installed was named when the job started (chelation.job)
            level = logging.INFO if isinstance(err, ModelUnavailable) else logging.WARNING
            log.log(level, "%s; the job goes on without it (its `fallback` tag says how)",
                    self.failure)
            raise TeacherUnavailable(self.failure) from err

    def fit(self, corpus_texts: Sequence[str], student_corpus: np.ndarray) -> None:
        teacher_corpus = self.embed(corpus_texts)
        if len(teacher_corpus) != len(student_corpus):
            raise ValueError("teacher and student corpus embeddings are not paired")
        self.corpus_raw = teacher_corpus
        self.teacher_dim = teacher_corpus.shape[1]
        if self.teacher_dim != student_corpus.shape[1]:
            log.info("teacher is %d wide, student %d: mapping by %s", self.teacher_dim,
                     student_corpus.shape[1], self.projection_kind)
        self.matrix = fit_projection(self.projection_kind, teacher_corpus, student_corpus)
        self.corpus_targets = project(teacher_corpus, self.matrix)

    def ensure_fitted(self, corpus_texts: Sequence[str], student_corpus: np.ndarray) -> None:
        """Fit on the corpus unless already fitted (every fold of a job shares one fit)."""
        if self.matrix is None:
            self.fit(corpus_texts, student_corpus)

    def targets(self, texts: Sequence[str]) -> np.ndarray:
        """Teacher embeddings of `texts` in the student's frame, unit length."""
        if self.matrix is None:
            raise RuntimeError("Teacher.fit must run before Teacher.targets")
        return project(self.embed(texts), self.matrix)
