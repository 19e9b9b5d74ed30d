"""The document vectors an index is built from: the student's, the teacher's projected into the
student's frame, or their blend. An adapter sees only the student's embedding, so it cannot carry
what the teacher knows and the student lost; the index can, while every query still costs one
student encoding.

`blend_documents` is the pure maths; `document_vectors` picks the vectors for one fold.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from chelation.kinds import Fallback
from chelation.projection import fit_projection, project
from chelation.settings import IndexSettings
from chelation.targets import check_teacher_weight, l2_normalize
from chelation.teacher import Teacher, TeacherUnavailable

log = logging.getLogger(__name__)

# what a run records when the teacher's documents were asked for but could not be had
STUDENT_DOCUMENTS_FALLBACK = Fallback.STUDENT_DOCUMENTS


def blend_documents(student: np.ndarray, teacher: np.ndarray, weight: float) -> np.ndarray:
    """`normalize((1 - w) * student + w * teacher)`, both already in the student's frame.
    w = 0 returns the student's vectors themselves (bit for bit), w = 1 the teacher's."""
    w = check_teacher_weight(weight)
    if student.shape != teacher.shape:
        raise ValueError(f"cannot blend documents of shapes {student.shape} and {teacher.shape}: "
                         "project the teacher into the student's frame first")
    if w == 0.0:
        return student
    if w == 1.0:
        return l2_normalize(teacher)
    return l2_normalize((1.0 - w) * student + w * teacher)


@dataclass
class DocumentChoice:
    """The vectors chosen for the index, the projection that mapped the teacher's documents into
    the student's frame (None when no teacher document entered the index) and, when the teacher
    could not be had, why not."""

    vectors: np.ndarray
    fallback: str = Fallback.NONE
    projection: np.ndarray | None = None


def document_vectors(
    student_docs: np.ndarray,
    settings: IndexSettings,
    teacher: Teacher | None,
    corpus_texts: Sequence[str],
    query_texts: Sequence[str] = (),
    student_queries: np.ndarray | None = None,
) -> DocumentChoice:
    """The index's documents for one fold. With `settings.fit_queries`, the projection is fitted
    on the corpus plus `query_texts` (the fold's training queries, no labels) paired with their
    student embeddings; otherwise the teacher's corpus fit is used. A teacher that cannot load
    or encode leaves the student's documents, and the choice says so."""
    weight = settings.document_weight
    if weight == 0.0:
        return DocumentChoice(vectors=student_docs)
    if teacher is None:
        log.warning("index.documents=%s needs a teacher; indexing the student's documents",
                    settings.documents)
        return DocumentChoice(vectors=student_docs, fallback=STUDENT_DOCUMENTS_FALLBACK)
    try:
        teacher.ensure_fitted(corpus_texts, student_docs)
        teacher_docs, matrix = teacher.corpus_targets, teacher.matrix
        if settings.fit_queries and len(query_texts):
            matrix = fit_projection(
                teacher.projection_kind,
                np.concatenate([teacher.corpus_raw, teacher.embed(query_texts)]),
                np.concatenate([student_docs, student_queries]),
            )
            teacher_docs = project(teacher.corpus_raw, matrix)
    except TeacherUnavailable as err:
        log.info("%s; indexing the student's documents", err)
        return DocumentChoice(vectors=student_docs, fallback=STUDENT_DOCUMENTS_FALLBACK)
    return DocumentChoice(vectors=blend_documents(student_docs, teacher_docs, weight),
                          projection=matrix)
