"""One job of the seed protocol: cycle 0 evaluates the untrained adapter, then each cycle runs
train queries, sediments and evaluates the test queries. Under `protocol=kfold` each fold trains
its own adapter on the other folds' queries, and every cycle's figures cover all judged queries,
each scored by a model that never trained on it."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from chelation.data import (
    RetrievalDataset,
    inner_folds,
    kfold_queries,
    selection_slice,
    split_queries,
    validation_slice,
)
from chelation.documents import DocumentChoice, document_vectors
from chelation.encoders import CachedEncoder
from chelation.kinds import Fallback, Mode, Protocol, SelectionMethod
from chelation.metrics import mean_and_std
from chelation.query_cost import QueryCost, measure_query_cost
from chelation.retriever import EVAL_DEPTH, ChelatedRetriever, EncodedDataset, SedimentResult
from chelation.schedules import teacher_weight_at
from chelation.settings import RunSettings, SettingsError
from chelation.teacher import Teacher

log = logging.getLogger(__name__)


@dataclass
class CycleRecord:
    """What one cycle logs: figures over all test queries (all folds together)."""

    cycle: int
    ndcg_at_10: float
    ndcg_at_10_std: float
    recall_at_100: float
    val_ndcg_at_10: float
    per_query: dict[str, float]
    # each test query's fold, and per fold the per-query scores the fold chooses a configuration
    # on: training-side queries that trained no model scoring them and guarded none of its
    # updates, the same queries for every configuration (see make_folds)
    test_fold: dict[str, int] = field(default_factory=dict)
    selection: dict[int, dict[str, float]] = field(default_factory=dict)
    query_time_s: float = 0.0
    sediment_time_s: float = 0.0
    index_time_s: float = 0.0
    eval_time_s: float = 0.0
    train_loss: float = float("nan")
    n_targets: int = 0
    n_chelated: int = 0
    teacher_weight: float = float("nan")
    teacher_alignment: float = float("nan")
    rollback: int = 0
    fallback: str = Fallback.NONE

    def metrics(self) -> dict[str, float]:
        """Scalar metrics, by name, for a tracker."""
        skip = {"cycle", "per_query", "fallback", "test_fold", "selection"}
        return {k: float(v) for k, v in asdict(self).items() if k not in skip}


@dataclass
class JobResult:
    cycles: list[CycleRecord] = field(default_factory=list)
    encode_time_s: float = 0.0
    teacher_encode_time_s: float = 0.0
    setup_time_s: float = 0.0
    distill_time_s: float = 0.0
    distill_rollbacks: int = 0
    total_time_s: float = 0.0
    n_encoded: int = 0
    n_cached: int = 0
    fallbacks: list[str] = field(default_factory=list)
    adapter_states: list[dict] = field(default_factory=list)
    # per fold: the teacher-to-student projection behind the index's documents (None: student's)
    projections: list[np.ndarray | None] = field(default_factory=list)
    query_cost: QueryCost | None = None

    @property
    def fallback(self) -> str:
        real = sorted(set(self.fallbacks) - {Fallback.NONE})
        return ",".join(real) if real else Fallback.NONE


@dataclass
class Fold:
    """One model's queries: `fit` trains it, `guard` accepts or rolls back each of its updates,
    `test` scores it. An outer fold's `select` (selection.method=holdout) are the queries it
    chooses a configuration on. An inner fold (`parent` set) divides its parent's training side
    (selection.method=inner): its model exists only to score its `test` queries for the
    parent's selection."""

    fit: list[str]
    guard: list[str]
    test: list[str]
    select: list[str] = field(default_factory=list)
    parent: int | None = None

    @property
    def training_side(self) -> list[str]:
        return [*self.fit, *self.guard, *self.select]


def _fit_and_guard(train: Sequence[str], settings: RunSettings) -> tuple[list[str], list[str]]:
    if settings.validation_fraction > 0:
        return validation_slice(train, settings.validation_fraction, settings.seed)
    return list(train), []


def make_folds(query_ids: list[str], settings: RunSettings,
               train_query_ids: Sequence[str] = ()) -> list[Fold]:
    """The outer folds: (fit, guard, test, select) query sets. `split` and `kfold` divide the
    judged `query_ids`; `official` trains on the dataset's own `train_query_ids` and tests on
    every one of `query_ids`. With selection.method=holdout the selection slice is set apart
    from the training side first (it depends only on the ids and the seed, so every
    configuration chooses on the same queries), then the guard's slice from the rest."""
    if settings.protocol == Protocol.OFFICIAL:
        if not train_query_ids:
            raise SettingsError("protocol=official needs a dataset with its own train queries "
                             "(set dataset.train_split, e.g. train for SciFact)")
        pairs = [(list(train_query_ids), list(query_ids))]
    elif settings.protocol == Protocol.KFOLD:
        pairs = kfold_queries(query_ids, settings.folds, settings.seed)
    else:
        pairs = [split_queries(query_ids, settings.test_fraction, settings.seed)]
    folds = []
    for train, test in pairs:
        select: list[str] = []
        if settings.selection.method == SelectionMethod.HOLDOUT:
            train, select = selection_slice(train, settings.selection.fraction, settings.seed)
        fit, guard = _fit_and_guard(train, settings)
        folds.append(Fold(fit=fit, guard=guard, test=list(test), select=select))
    return folds


def selection_folds(folds: Sequence[Fold], settings: RunSettings) -> list[Fold]:
    """The inner folds of selection.method=inner, over each outer fold's training side. None
    where the configuration's model does not depend on its training queries (no training, no
    projection fitted on them): each inner model would be the outer one, which then scores the
    training side itself."""
    if not _inner_models_select(settings):
        return []
    inner = []
    for i, outer in enumerate(folds):
        for train, test in inner_folds(outer.training_side, settings.selection.inner_folds,
                                       settings.seed):
            fit, guard = _fit_and_guard(train, settings)
            inner.append(Fold(fit=fit, guard=guard, test=test, parent=i))
    return inner


def depends_on_training_queries(settings: RunSettings) -> bool:
    """Whether a fold's model changes with its training queries."""
    return (Mode(settings.training.mode).trains
            or (settings.index.fit_queries and settings.index.document_weight > 0))


def _inner_models_select(settings: RunSettings) -> bool:
    """selection.method=inner where the model depends on its training queries: inner folds'
    models score the selection queries. Elsewhere under inner the outer model scores them."""
    return (settings.selection.method == SelectionMethod.INNER
            and depends_on_training_queries(settings))


def encode_dataset(dataset: RetrievalDataset, encoder: CachedEncoder) -> EncodedDataset:
    docs = encoder.encode([dataset.corpus[d] for d in dataset.doc_ids], desc="corpus")
    qids = dataset.all_query_ids
    queries = encoder.encode([dataset.queries[q] for q in qids], desc="queries")
    return EncodedDataset(dataset=dataset, docs=docs,
                          queries=dict(zip(qids, queries, strict=True)))


def build_teacher(settings: RunSettings, show_progress: bool = True) -> Teacher | None:
    if not settings.needs_teacher:
        return None
    encoder = CachedEncoder(settings.teacher.model, settings.cache_dir,
                            batch_size=settings.teacher.batch_size, show_progress=show_progress,
                            precision=settings.teacher.precision,
                            force_precision=settings.teacher.force_precision)
    return Teacher(encoder, settings.teacher.projection)


def run_job(
    dataset: RetrievalDataset,
    settings: RunSettings,
    on_cycle: Callable[[CycleRecord], None] | None = None,
    show_progress: bool = True,
) -> JobResult:
    """Run the whole protocol for one configuration and seed. `on_cycle` gets each cycle's record
    as soon as it is complete (so a tracker logs it even if a later cycle fails)."""
    started = time.perf_counter()
    student = CachedEncoder(settings.student.model, settings.cache_dir,
                            batch_size=settings.student.batch_size,
                            max_seq_length=settings.student.max_seq_length,
                            show_progress=show_progress, precision=settings.student.precision,
                            force_precision=settings.student.force_precision)
    encoded = encode_dataset(dataset, student)
    teacher = build_teacher(settings, show_progress)
    result = run_encoded(encoded, settings, teacher, student, on_cycle, show_progress)
    # bfloat16 asked on a CPU without it: the run says it encoded in float32
    result.fallbacks.extend(f"{role}_{encoder.precision}" for role, encoder
                            in (("student", student), ("teacher", teacher and teacher.encoder))
                            if encoder is not None and encoder.precision_fell_back)
    if teacher is not None:
        result.n_encoded += teacher.encoder.n_encoded
        result.teacher_encode_time_s = teacher.encoder.encode_seconds
        result.encode_time_s += teacher.encoder.encode_seconds
    result.encode_time_s += student.encode_seconds
    result.n_encoded += student.n_encoded
    result.n_cached = student.n_cached
    result.total_time_s = time.perf_counter() - started
    return result


def run_encoded(
    encoded: EncodedDataset,
    settings: RunSettings,
    teacher: Teacher | None = None,
    student: CachedEncoder | None = None,
    on_cycle: Callable[[CycleRecord], None] | None = None,
    show_progress: bool = True,
) -> JobResult:
    """The protocol on embeddings already in hand (a job's own, or vectors a benchmark made).
    Query cost is measured when the `student` that encoded the queries is given."""
    started = time.perf_counter()
    result = JobResult()
    dataset = encoded.dataset
    outer = make_folds(dataset.judged_query_ids, settings, dataset.train_query_ids)
    folds = [*outer, *selection_folds(outer, settings)]
    fold_data = _fold_documents(encoded, folds, settings, teacher)
    result.fallbacks.extend(c.fallback for c in fold_data if c.fallback != Fallback.NONE)
    result.projections = [c.projection for c in fold_data[:len(outer)]]
    retrievers = [ChelatedRetriever(encoded.with_documents(choice.vectors), settings, teacher,
                                    f.guard, fold=i)
                  for i, (f, choice) in enumerate(zip(folds, fold_data, strict=True))]
    result.setup_time_s = time.perf_counter() - started

    try:
        first = _cycle_zero(retrievers, folds, settings)
        _record(result, on_cycle, first)
        if Mode(settings.training.mode).distils_first:
            t0 = time.perf_counter()
            for r, f in zip(retrievers, folds, strict=True):
                # the validation slice stays unseen: it must judge generalisation to new queries
                outcome = r.distill(f.fit if settings.training.distill_queries else [])
                result.fallbacks.append(outcome.fallback)
                if f.parent is None:  # the job's own models; inner ones only score selection
                    result.distill_rollbacks += int(outcome.rollback)
            result.distill_time_s = time.perf_counter() - t0
        # one stream per fold: a fold draws the same batches whatever other folds run beside it
        rngs = [np.random.default_rng([settings.seed, i]) for i in range(len(folds))]
        bar = tqdm(range(1, settings.cycles + 1), desc=f"{settings.training.mode} cycles",
                   disable=not show_progress)
        # log lines print above the bar instead of through it
        with logging_redirect_tqdm():
            _run_cycles(bar, first, retrievers, folds, settings, rngs, result, on_cycle)
        if settings.query_cost_sample and student is not None:
            sample = folds[0].test[:settings.query_cost_sample]
            result.query_cost = measure_query_cost(
                student, retrievers[0].adapter, retrievers[0].index,
                [dataset.queries[q] for q in sample], encoded.query_matrix(sample), EVAL_DEPTH)
    finally:
        result.adapter_states = [r.adapter.state_dict() for r in retrievers[:len(outer)]]
        for r in retrievers:
            r.close()
    result.total_time_s = time.perf_counter() - started
    return result


def _fold_documents(encoded: EncodedDataset, folds: list[Fold], settings: RunSettings,
                    teacher: Teacher | None) -> list[DocumentChoice]:
    """Each fold's index documents. Without `index.fit_queries` every fold shares one choice;
    with it, each fold's projection also sees that fold's training queries (never its test or
    validation queries)."""
    dataset = encoded.dataset
    corpus_texts = [dataset.corpus[d] for d in dataset.doc_ids]
    shared: DocumentChoice | None = None
    choices = []
    for fold in folds:
        if settings.index.fit_queries:
            choice = document_vectors(encoded.student_docs, settings.index, teacher, corpus_texts,
                                      [dataset.queries[q] for q in fold.fit],
                                      encoded.query_matrix(fold.fit))
        else:
            shared = shared or document_vectors(encoded.student_docs, settings.index, teacher,
                                                corpus_texts)
            choice = shared
        choices.append(choice)
    return choices


def _record(result: JobResult, on_cycle, record: CycleRecord) -> None:
    result.cycles.append(record)
    log.info("cycle %d: NDCG@10 %.4f (val %.4f) targets %d loss %.3g rollback %d fallback %s",
             record.cycle, record.ndcg_at_10, record.val_ndcg_at_10, record.n_targets,
             record.train_loss, record.rollback, record.fallback)
    if on_cycle is not None:
        on_cycle(record)


def _evaluate_folds(retrievers, folds, record: CycleRecord,
                    settings: RunSettings) -> CycleRecord:
    per_query: dict[str, float] = {}
    recalls: list[float] = []
    vals: list[float] = []
    for i, (r, f) in enumerate(zip(retrievers, folds, strict=True)):
        ev = r.evaluate(f.test)
        record.eval_time_s += ev.seconds
        if f.parent is not None:
            record.selection.setdefault(f.parent, {}).update(ev.per_query)
            continue
        per_query.update(ev.per_query)
        record.test_fold.update(dict.fromkeys(ev.per_query, i))
        recalls.extend([ev.recall_at_100] * len(f.test))
        if f.guard:
            vals.append(r.validation_ndcg())
        own = _selection_queries(f, settings)
        if own:
            selected = r.evaluate(own)
            record.eval_time_s += selected.seconds
            record.selection[i] = selected.per_query
    record.per_query = per_query
    record.ndcg_at_10, record.ndcg_at_10_std = mean_and_std(list(per_query.values()))
    record.recall_at_100 = float(np.mean(recalls)) if recalls else float("nan")
    record.val_ndcg_at_10 = float(np.mean(vals)) if vals else float("nan")
    return record


def _selection_queries(fold: Fold, settings: RunSettings) -> list[str]:
    """The queries an outer fold's own model scores for its selection: its holdout slice; under
    selection.method=inner, its whole training side when its model does not depend on those
    queries (otherwise its inner folds' models score them)."""
    if fold.select:
        return fold.select
    if settings.selection.method == SelectionMethod.INNER and not _inner_models_select(settings):
        return fold.training_side
    return []


def _cycle_zero(retrievers, folds, settings: RunSettings) -> CycleRecord:
    return _evaluate_folds(retrievers, folds, _blank_record(0), settings)


def _blank_record(cycle: int) -> CycleRecord:
    """A cycle's record before its folds are scored into it."""
    return CycleRecord(cycle=cycle, ndcg_at_10=0.0, ndcg_at_10_std=0.0, recall_at_100=0.0,
                       val_ndcg_at_10=float("nan"), per_query={})


def _run_cycles(bar, first: CycleRecord, retrievers, folds, settings: RunSettings,
                rngs: list[np.random.Generator], result: JobResult,
                on_cycle: Callable[[CycleRecord], None] | None) -> None:
    for cycle in bar:
        weight = teacher_weight_at(settings.weight.schedule, cycle, settings.cycles,
                                   *settings.weight.endpoints())
        if not settings.training.trains:
            # nothing is trained, so every cycle scores what cycle 0 scored: logged as such
            # (a flat line to read the other arms against), not searched again
            record = replace(first, cycle=cycle, eval_time_s=0.0)
        else:
            record = _train_cycle(retrievers, folds, cycle, weight, settings, rngs)
        result.fallbacks.append(record.fallback)
        bar.set_postfix(ndcg10=f"{record.ndcg_at_10:.4f}")
        _record(result, on_cycle, record)


def _train_cycle(retrievers, folds, cycle: int, weight: float, settings: RunSettings,
                 rngs: list[np.random.Generator]) -> CycleRecord:
    """One cycle of every fold. The record's counts (targets, rollbacks, fallbacks) are the
    outer folds'; its times include the inner folds' work, which the cycle costs too."""
    record = _blank_record(cycle)
    outcomes: list[SedimentResult] = []
    for r, f, rng in zip(retrievers, folds, rngs, strict=True):
        take = min(settings.queries_per_cycle, len(f.fit))
        batch = list(rng.choice(f.fit, size=take, replace=False)) if take else []
        phase = r.run_queries(batch)
        record.query_time_s += phase.seconds
        outcome = r.sediment(weight)
        record.sediment_time_s += outcome.seconds
        record.index_time_s += outcome.index_seconds
        if f.parent is None:
            record.n_chelated += phase.n_chelated
            outcomes.append(outcome)
    record.n_targets = sum(o.n_targets for o in outcomes)
    record.rollback = sum(o.rollback for o in outcomes)
    record.teacher_weight = outcomes[0].teacher_weight if outcomes else float("nan")
    record.train_loss = _nanmean([o.train_loss for o in outcomes])
    record.teacher_alignment = _nanmean([o.teacher_alignment for o in outcomes])
    fallbacks = sorted({o.fallback for o in outcomes} - {Fallback.NONE})
    record.fallback = ",".join(fallbacks) if fallbacks else Fallback.NONE
    return _evaluate_folds(retrievers, folds, record, settings)


def _nanmean(values: list[float]) -> float:
    arr = np.asarray(values, dtype=np.float64)
    return float(np.nanmean(arr)) if np.isfinite(arr).any() else float("nan")
