"""Adaptive embeddings for vector search: a residual adapter on a frozen student model,
trained cycle after cycle from what retrieval sees (after the ChelatedAI design)."""

from chelation.settings import (
    AdapterSettings,
    ChelationSettings,
    EncoderSettings,
    EngineSettings,
    RunSettings,
    TeacherSettings,
    TrainingSettings,
    WeightSchedule,
)

__all__ = [
    "AdapterSettings",
    "ChelationSettings",
    "EncoderSettings",
    "EngineSettings",
    "RunSettings",
    "TeacherSettings",
    "TrainingSettings",
    "WeightSchedule",
]
