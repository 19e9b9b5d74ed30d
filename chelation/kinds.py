"""The project's vocabulary: every kind of thing a setting can name, defined once. A kind is a plain
string in configs, tags and reports (a `StrEnum` compares equal to its value); modules ask these
types instead of spelling the names, so adding a kind touches its type, its code and its tests."""

from __future__ import annotations

from enum import StrEnum


class Mode(StrEnum):
    """The training modes, and what each one needs."""

    FROZEN = "frozen"      # the control arm: the adapter is never trained
    BASELINE = "baseline"  # homeostatic targets only
    OFFLINE = "offline"    # teacher distillation first, then teacher targets
    HYBRID = "hybrid"      # a per-cycle blend of homeostatic and teacher targets

    @property
    def trains(self) -> bool:
        return self is not Mode.FROZEN

    @property
    def teacher_targets(self) -> bool:
        """Its training targets come (at least in part) from a teacher."""
        return self in (Mode.OFFLINE, Mode.HYBRID)

    @property
    def distils_first(self) -> bool:
        return self is Mode.OFFLINE

    @property
    def blends_targets(self) -> bool:
        """Its targets are a weighted blend, so the teacher weight schedule applies."""
        return self is Mode.HYBRID

    @property
    def ignored_keys(self) -> tuple[str, ...]:
        """Config keys (dotted prefixes) that cannot change what a job of this mode computes."""
        if self is Mode.FROZEN:
            return ("teacher.", "weight.", "training.", "chelation.", "adapter.")
        if not self.teacher_targets:
            return ("teacher.", "weight.")
        return () if self.blends_targets else ("weight.",)


class Fallback(StrEnum):
    """What a job did without a model it needed (comma-joined when several happened)."""

    NONE = "none"                            # nothing was missing
    PENDING = "pending"                      # the job has not finished yet
    BASELINE = "baseline"                    # teacher targets replaced by baseline targets
    NO_UPDATE = "no_update"                  # no target left to train towards
    STUDENT_DOCUMENTS = "student_documents"  # the index held the student's documents instead

    @staticmethod
    def degraded(recorded: str | None) -> bool:
        """A finished job's record says it ran without a model it needed (what resume runs
        again once the model is back); other notes in the record do not count."""
        return any(part.strip() in _WITHOUT_A_MODEL for part in (recorded or "").split(","))


_WITHOUT_A_MODEL = frozenset({Fallback.BASELINE, Fallback.NO_UPDATE, Fallback.STUDENT_DOCUMENTS})


class Precision(StrEnum):
    FLOAT32 = "float32"    # the default: reproduces published figures
    BFLOAT16 = "bfloat16"  # encoding under CPU autocast (cached apart)


class Trigger(StrEnum):
    """When a query's neighbourhood is chelated."""

    ADAPTIVE = "adaptive"  # its entropy is at or above a running quantile
    ALWAYS = "always"
    NEVER = "never"


class Projection(StrEnum):
    """How teacher embeddings are mapped into the student's frame (chelation.projection)."""

    PROCRUSTES = "procrustes"
    LSTSQ = "lstsq"
    TRUNCATE = "truncate"


class Schedule(StrEnum):
    """The teacher weight per cycle (chelation.schedules)."""

    CONSTANT = "constant"
    LINEAR = "linear"
    COSINE = "cosine"


class Protocol(StrEnum):
    """Which queries train and which test (chelation.protocol.make_folds)."""

    SPLIT = "split"        # test_fraction held out
    KFOLD = "kfold"        # every query tested once
    OFFICIAL = "official"  # the dataset's own train queries; all its test queries


class SelectionMethod(StrEnum):
    """How a fold scores the configurations it chooses among (chelation.protocol.make_folds):
    always on training-side queries that trained none of them and guarded none of their updates."""

    HOLDOUT = "holdout"  # a slice of the training side set apart before anything is fitted
    INNER = "inner"      # inner folds over the training side, each scored by an unseeing model


class DocumentKind(StrEnum):
    """What the index holds per document (chelation.documents); queries are always the student's."""

    STUDENT = "student"
    TEACHER = "teacher"
    BLEND = "blend"


class DatasetKind(StrEnum):
    """Where a job's collection comes from."""

    SYNTHETIC = "synthetic"  # generated
    BEIR = "beir"            # a BEIR folder (or its MTEB task when the folder is absent)
    MTEB = "mteb"            # an MTEB task


def names(kind: type[StrEnum]) -> list[str]:
    """The values of a kind, in definition order: for messages and validation."""
    return [member.value for member in kind]


MODES = tuple(names(Mode))  # the order reports use
