"""The names a job's MLflow run carries: the tags every job run is given (the analysis reads them
back as columns of the same names) and the tags that tie runs together."""

from __future__ import annotations

from enum import StrEnum

PARENT_TAG = "mlflow.parentRunId"
ROLE_TAG = "chelation.role"  # "job" or "sweep"
SWEEP_DIR_TAG = "sweep_dir"  # on a sweep's parent run: the folder its jobs write into


class Tag(StrEnum):
    """The tags every job run carries; the analysis reads them back as columns of the same names."""

    MODE = "mode"
    TEACHER = "teacher"
    STUDENT = "student"
    DATASET = "dataset"
    SEED = "seed"
    SCHEDULE = "schedule"
    PROJECTION = "projection"
    PROTOCOL = "protocol"
    INDEX_DOCUMENTS = "index_documents"
    INDEX_TEACHER_WEIGHT = "index_teacher_weight"
    CONFIG_HASH = "config_hash"  # the job's identity: what resume and the claim look for
    GROUP_HASH = "group_hash"    # the same without the seed: what the analysis pairs seeds on
    CONFIG_LABEL = "config_label"
    FALLBACK = "fallback"
    GIT_COMMIT = "git_commit"
    RERUN_OF = "rerun_of"            # this run replaces a finished run that fell back
    SUPERSEDED_BY = "superseded_by"  # on a run that fell back: the run that replaced it
