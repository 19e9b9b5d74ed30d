"""One schema for a run's settings. Plain dataclasses: the library takes them as they are, and the
Hydra entry points use the same classes as structured configs, so a bad value fails when the config
is composed (types) or turned into these objects (ranges), with a message naming the key."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from enum import StrEnum

from chelation.data.synthetic import SYNTHETIC_VARIANTS
from chelation.kinds import (
    DatasetKind,
    DocumentKind,
    Mode,
    Precision,
    Projection,
    Protocol,
    Schedule,
    SelectionMethod,
    Trigger,
    names,
)

# a kind is a string in configs: its type in chelation.kinds says which strings are allowed
DEFAULT_PRECISION = Precision.FLOAT32.value
# the default student, spelled here only: configs, the model loader and the benchmarks ask it
DEFAULT_STUDENT = "sentence-transformers/all-MiniLM-L6-v2"


class SettingsError(ValueError):
    """A setting with a value outside its allowed range; the message names the key."""


def _require(ok: bool, key: str, value: object, allowed: str) -> None:
    if not ok:
        raise SettingsError(f"{key}={value!r} is invalid: expected {allowed}")


def _require_kind(kind: type[StrEnum], key: str, value: object) -> None:
    _require(value in names(kind), key, value, f"one of {names(kind)}")


@dataclass
class EncoderSettings:
    """A sentence-embedding model named by hub id or local path."""

    model: str = DEFAULT_STUDENT
    batch_size: int = 64
    max_seq_length: int | None = None
    precision: str = DEFAULT_PRECISION  # bfloat16: CPU autocast (part of the cache key)
    # bfloat16 runs only on a CPU with native bfloat16 (else float32, recorded as a fallback);
    # true forces it anyway
    force_precision: bool = False

    def validate(self, prefix: str = "student") -> None:
        _require(bool(self.model), f"{prefix}.model", self.model, "a model id or path")
        _require(self.batch_size >= 1, f"{prefix}.batch_size", self.batch_size, ">= 1")
        _require_kind(Precision, f"{prefix}.precision", self.precision)


@dataclass
class TeacherSettings:
    """The teacher of offline and hybrid modes and how it is mapped into the student's frame."""

    name: str = "minilm"
    model: str = DEFAULT_STUDENT  # the student's own model: a no-op teacher, a control
    batch_size: int = 8  # teachers are large: small batches bound the encoding's peak memory
    projection: str = Projection.PROCRUSTES.value
    precision: str = DEFAULT_PRECISION
    force_precision: bool = False  # as the student's

    def validate(self, prefix: str = "teacher") -> None:
        _require_kind(Projection, f"{prefix}.projection", self.projection)
        _require(self.batch_size >= 1, f"{prefix}.batch_size", self.batch_size, ">= 1")
        _require_kind(Precision, f"{prefix}.precision", self.precision)


@dataclass
class WeightSchedule:
    """Teacher weight per cycle: `constant` uses `value`; `linear`/`cosine` anneal start -> end."""

    schedule: str = Schedule.CONSTANT.value
    value: float = 0.5
    start: float = 1.0
    end: float = 0.0

    def validate(self, prefix: str = "weight") -> None:
        _require_kind(Schedule, f"{prefix}.schedule", self.schedule)
        for name in ("value", "start", "end"):
            v = getattr(self, name)
            _require(0.0 <= v <= 1.0, f"{prefix}.{name}", v, "a teacher weight in [0, 1]")

    def endpoints(self) -> tuple[float, float]:
        if self.schedule == Schedule.CONSTANT:
            return self.value, self.value
        return self.start, self.end


@dataclass
class AdapterSettings:
    """Residual MLP `f(x) = normalize(x + W2 relu(W1 x))`; W2 starts at zero (exact identity)."""

    hidden_dim: int = 256
    init_scale: float = 0.0

    def validate(self, prefix: str = "adapter") -> None:
        _require(self.hidden_dim >= 1, f"{prefix}.hidden_dim", self.hidden_dim, ">= 1")
        _require(self.init_scale >= 0, f"{prefix}.init_scale", self.init_scale, ">= 0")


@dataclass
class ChelationSettings:
    """Query-time chelation: scout neighbourhood, entropy trigger, centred rerank."""

    scout_k: int = 10
    trigger: str = Trigger.ADAPTIVE.value
    threshold_quantile: float = 0.5

    def validate(self, prefix: str = "chelation") -> None:
        _require(self.scout_k >= 2, f"{prefix}.scout_k", self.scout_k, ">= 2")
        _require_kind(Trigger, f"{prefix}.trigger", self.trigger)
        _require(0.0 <= self.threshold_quantile <= 1.0, f"{prefix}.threshold_quantile",
                 self.threshold_quantile, "a value in [0, 1]")


@dataclass
class TrainingSettings:
    """Sedimentation: which documents get targets, and how the adapter is fitted to them."""

    mode: str = Mode.BASELINE.value
    push: float = 0.1
    collapse_threshold: int = 1
    epochs: int = 10
    lr: float = 1e-3
    batch_size: int = 64
    distill_epochs: int = 10
    distill_queries: bool = True
    guard_tolerance: float = 0.005
    listwise_weight: float = 0.0
    listwise_k: int = 32
    listwise_temperature: float = 0.05

    @property
    def trains(self) -> bool:
        return Mode(self.mode).trains

    def validate(self, prefix: str = "training") -> None:
        _require_kind(Mode, f"{prefix}.mode", self.mode)
        _require(self.push >= 0, f"{prefix}.push", self.push, ">= 0")
        _require(self.collapse_threshold >= 1, f"{prefix}.collapse_threshold",
                 self.collapse_threshold, ">= 1")
        _require(self.epochs >= 0, f"{prefix}.epochs", self.epochs, ">= 0")
        _require(self.distill_epochs >= 0, f"{prefix}.distill_epochs", self.distill_epochs, ">= 0")
        _require(self.lr > 0, f"{prefix}.lr", self.lr, "> 0")
        _require(self.batch_size >= 1, f"{prefix}.batch_size", self.batch_size, ">= 1")
        _require(self.listwise_weight >= 0, f"{prefix}.listwise_weight", self.listwise_weight,
                 ">= 0")
        _require(self.listwise_k >= 2, f"{prefix}.listwise_k", self.listwise_k, ">= 2")
        _require(self.listwise_temperature > 0, f"{prefix}.listwise_temperature",
                 self.listwise_temperature, "> 0")
        _require(self.guard_tolerance >= 0, f"{prefix}.guard_tolerance", self.guard_tolerance,
                 ">= 0 (use a large value to disable the guard)")


@dataclass
class SelectionSettings:
    """The queries each fold chooses a configuration on, the same for every configuration, none
    of which trained it or decided one of its updates (the guard has a slice of its own).
    `holdout`: a `fraction` of the fold's training side is set apart first; the guard's slice and
    the fit queries come from the rest. `inner`: the training side is divided into `inner_folds`
    folds, each configuration is trained again on all but one of them and scores the one left
    out, so that every training-side query is scored by a model that never saw it."""

    method: str = SelectionMethod.INNER.value
    fraction: float = 0.25
    inner_folds: int = 3

    def validate(self, prefix: str = "selection") -> None:
        _require_kind(SelectionMethod, f"{prefix}.method", self.method)
        _require(0.0 < self.fraction < 1.0, f"{prefix}.fraction", self.fraction,
                 "a fraction in (0, 1)")
        _require(self.inner_folds >= 2, f"{prefix}.inner_folds", self.inner_folds, ">= 2")


@dataclass
class EngineSettings:
    """Qdrant's engine embedded in the process (a shard in a temporary folder for `:memory:`,
    else in the folder `location`, replaced on open) unless `url` names a Qdrant server."""

    location: str = ":memory:"
    url: str | None = None
    collection: str = "chelation"


@dataclass
class IndexSettings:
    """The document vectors the index is built from: the student's own (`student`), the teacher's
    projected into the student's frame (`teacher`), or `blend`:
    `normalize((1 - teacher_weight) * student + teacher_weight * teacher)`. These vectors are the
    "raw" documents that the adapter, chelation and sedimentation work on; queries stay the
    student's, so a query costs one student encoding whatever is chosen. `fit_queries` fits the
    teacher's projection on the corpus plus the training queries' texts (no labels)."""

    documents: str = DocumentKind.STUDENT.value
    teacher_weight: float = 0.5
    fit_queries: bool = False

    def validate(self, prefix: str = "index") -> None:
        _require_kind(DocumentKind, f"{prefix}.documents", self.documents)
        _require(0.0 <= self.teacher_weight <= 1.0, f"{prefix}.teacher_weight",
                 self.teacher_weight, "a teacher weight in [0, 1]")

    @property
    def document_weight(self) -> float:
        """The teacher's share of every indexed document: 0 for `student`, 1 for `teacher`."""
        shares = {DocumentKind.STUDENT: 0.0, DocumentKind.TEACHER: 1.0}
        return shares.get(DocumentKind(self.documents), self.teacher_weight)


@dataclass
class RunSettings:
    """Everything one job needs besides the data: the library's whole configuration."""

    seed: int = 0
    cycles: int = 3
    queries_per_cycle: int = 50
    protocol: str = Protocol.SPLIT.value
    test_fraction: float = 0.5
    folds: int = 5
    validation_fraction: float = 0.2
    selection: SelectionSettings = field(default_factory=SelectionSettings)
    cache_dir: str = "~/.cache/chelation/embeddings"
    student: EncoderSettings = field(default_factory=EncoderSettings)
    teacher: TeacherSettings = field(default_factory=TeacherSettings)
    weight: WeightSchedule = field(default_factory=WeightSchedule)
    adapter: AdapterSettings = field(default_factory=AdapterSettings)
    chelation: ChelationSettings = field(default_factory=ChelationSettings)
    training: TrainingSettings = field(default_factory=TrainingSettings)
    engine: EngineSettings = field(default_factory=EngineSettings)
    index: IndexSettings = field(default_factory=IndexSettings)
    # test queries encoded one at a time (bypassing the cache) to price a query at serving time
    query_cost_sample: int = 8

    @property
    def needs_teacher(self) -> bool:
        """The teacher is loaded for teacher training targets or for teacher documents."""
        return Mode(self.training.mode).teacher_targets or self.index.document_weight > 0

    def validate(self) -> RunSettings:
        _require(self.cycles >= 0, "cycles", self.cycles, ">= 0")
        _require(self.queries_per_cycle >= 1, "queries_per_cycle", self.queries_per_cycle, ">= 1")
        _require_kind(Protocol, "protocol", self.protocol)
        _require(0.0 < self.test_fraction < 1.0, "test_fraction", self.test_fraction,
                 "a fraction in (0, 1)")
        _require(self.folds >= 2, "folds", self.folds, ">= 2")
        _require(0.0 <= self.validation_fraction < 1.0, "validation_fraction",
                 self.validation_fraction, "a fraction in [0, 1)")
        _require(self.query_cost_sample >= 0, "query_cost_sample", self.query_cost_sample, ">= 0")
        for f in fields(self):
            part = getattr(self, f.name)
            if hasattr(part, "validate"):
                part.validate(f.name)
        return self

    def __post_init__(self) -> None:
        # OmegaConf.to_object builds nested dataclasses first, so validating here covers them all.
        self.validate()


@dataclass
class DatasetSpec:
    """Which collection a job runs on: generated, a BEIR folder, or an MTEB task."""

    name: str = DatasetKind.SYNTHETIC.value
    kind: str = DatasetKind.SYNTHETIC.value
    path: str | None = None
    split: str = "test"
    task: str | None = None  # for `beir`: the MTEB task to load when `path` does not exist
    seed: int = 0
    train_split: str | None = None  # the collection's own training queries (protocol=official)
    strict: bool = False  # refuse a corpus line without "text" (else a warning names the line)

    def validate(self, prefix: str = "dataset") -> None:
        _require_kind(DatasetKind, f"{prefix}.kind", self.kind)
        if self.kind == DatasetKind.SYNTHETIC:
            _require(self.name in SYNTHETIC_VARIANTS, f"{prefix}.name", self.name,
                     f"a synthetic collection, one of {sorted(SYNTHETIC_VARIANTS)}")
        if self.kind == DatasetKind.BEIR:
            _require(bool(self.path), f"{prefix}.path", self.path,
                     f"a BEIR folder for dataset {self.name!r}")

    @property
    def source(self) -> str:
        """Where the collection is read from, as a user would name it."""
        return str(self.path or self.task or self.name)


@dataclass
class TrackingTarget:
    """Where a job's runs go; `resume` skips configurations that already have a finished run."""

    uri: str = "sqlite:///mlflow.db"
    experiment: str = "chelation"
    resume: bool = True
    enabled: bool = True


@dataclass
class JobConfig(RunSettings):
    """One tracked job: what it computes (RunSettings), the data it runs on and where it is
    recorded. The Hydra entry point composes exactly this; the job derives its identity, label
    and tags from it."""

    dataset: DatasetSpec = field(default_factory=DatasetSpec)
    tracking: TrackingTarget = field(default_factory=TrackingTarget)
    show_progress: bool = True
