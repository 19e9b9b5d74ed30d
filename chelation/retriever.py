"""The chelated retriever: adapter + Qdrant index + event log, driven one phase at a time.

A cycle is `run_queries(train) -> sediment() -> evaluate(test)`. Raw embeddings are the source of
truth: the index always holds `adapter(raw_doc)`, re-derived from raw after every update.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from chelation.adapter import ListwiseTerm, ResidualAdapter, fit_adapter
from chelation.collapse_log import CollapseLog
from chelation.data import RetrievalDataset
from chelation.engine import open_index
from chelation.kinds import Fallback, Mode
from chelation.listwise import RankingTargets, teacher_ranking
from chelation.metrics import mean_and_std, per_query_scores
from chelation.neighbourhood import (
    adaptive_threshold,
    centred_rerank,
    neighbourhood_entropy,
    should_chelate,
)
from chelation.settings import EngineSettings, RunSettings
from chelation.targets import blend_targets, homeostatic_targets, mean_cosine
from chelation.teacher import Teacher, TeacherUnavailable

log = logging.getLogger(__name__)

EVAL_DEPTH = 100
FALLBACK_BASELINE = Fallback.BASELINE  # a teacher mode whose teacher failed trains as baseline


@dataclass
class EncodedDataset:
    """Raw embeddings of a dataset: the index's documents in doc order (the student's unless
    `index.documents` chose the teacher's or a blend) and the student's embedding of every
    query. `student_docs` are the student's own documents, whatever `docs` hold."""

    dataset: RetrievalDataset
    docs: np.ndarray
    queries: dict[str, np.ndarray]
    student_docs: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.student_docs is None:
            self.student_docs = self.docs

    def with_documents(self, docs: np.ndarray) -> EncodedDataset:
        """The same dataset and queries with other document vectors in the index."""
        return replace(self, docs=docs, student_docs=self.student_docs)

    def query_matrix(self, query_ids: Sequence[str]) -> np.ndarray:
        return np.stack([self.queries[q] for q in query_ids]) if query_ids else \
            np.zeros((0, self.docs.shape[1]), dtype=np.float32)


@dataclass
class EvalResult:
    ndcg_at_10: float
    ndcg_at_10_std: float
    recall_at_100: float
    per_query: dict[str, float]
    seconds: float


@dataclass
class QueryPhaseResult:
    n_queries: int
    n_chelated: int
    threshold: float
    rankings: dict[str, list[str]]
    seconds: float


@dataclass
class SedimentResult:
    n_targets: int = 0
    train_loss: float = float("nan")
    teacher_weight: float = float("nan")
    teacher_alignment: float = float("nan")
    fallback: str = Fallback.NONE
    rollback: bool = False
    val_before: float = float("nan")
    val_after: float = float("nan")
    seconds: float = 0.0
    index_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def _fold_engine(engine: EngineSettings, fold: int) -> EngineSettings:
    """Each fold's adapter needs an index of its own: a collection of its own on a server (else
    folds overwrite each other's vectors), a folder of its own for an on-disk local index (a
    folder admits one client at a time)."""
    if fold == 0:
        return engine
    location = engine.location
    if location != ":memory:" and not engine.url:
        location = f"{location.rstrip('/')}-fold{fold}"
    return replace(engine, location=location, collection=f"{engine.collection}-fold{fold}")


class ChelatedRetriever:
    def __init__(
        self,
        encoded: EncodedDataset,
        settings: RunSettings,
        teacher: Teacher | None = None,
        val_query_ids: Sequence[str] = (),
        fold: int = 0,
    ):
        self.encoded = encoded
        self.dataset = encoded.dataset
        self.settings = settings
        self.mode = Mode(settings.training.mode)
        self.teacher = teacher
        self.val_query_ids = list(val_query_ids)
        self.seed = settings.seed * 1000 + fold
        dim = encoded.docs.shape[1]
        self.adapter = ResidualAdapter(dim, settings.adapter.hidden_dim, seed=self.seed,
                                       init_scale=settings.adapter.init_scale)
        self.adapter.eval()
        self.index = open_index(dim, _fold_engine(settings.engine, fold))
        self.index.index(self.dataset.doc_ids, self.adapter.apply(encoded.docs))
        self.collapses = CollapseLog(len(encoded.docs), dim)
        self._positions = {d: i for i, d in enumerate(self.dataset.doc_ids)}
        self._entropy_history: list[float] = []
        self._val_ndcg: float | None = None
        self._val_initial = float("nan")
        self._teacher_docs: np.ndarray | None = None
        self._updates = 0
        self._last_queries: list[str] = []

    # ---- phases -------------------------------------------------------------------------------
    def evaluate(self, query_ids: Sequence[str]) -> EvalResult:
        """Plain dense retrieval through the index, scored by pytrec_eval."""
        started = time.perf_counter()
        query_ids = list(query_ids)
        run: dict[str, dict[str, float]] = {}
        if query_ids:
            hits = self.index.search(self.adapter.apply(self.encoded.query_matrix(query_ids)),
                                     EVAL_DEPTH)
            for q, ids, scores in zip(query_ids, hits.doc_ids, hits.scores, strict=True):
                run[q] = dict(zip(ids, scores, strict=True))
        scores = per_query_scores(self.dataset.subset_qrels(query_ids), run)
        ndcg = {q: s["ndcg_at_10"] for q, s in scores.items()}
        mean, std = mean_and_std(list(ndcg.values()))
        recall, _ = mean_and_std([s["recall_at_100"] for s in scores.values()])
        return EvalResult(ndcg_at_10=mean, ndcg_at_10_std=std, recall_at_100=recall,
                          per_query=ndcg, seconds=time.perf_counter() - started)

    def run_queries(self, query_ids: Sequence[str]) -> QueryPhaseResult:
        """Search the train queries with chelation: scout the neighbourhood, chelate the dense
        ones (centred rerank) and log their centres against every document in them."""
        started = time.perf_counter()
        cfg = self.settings.chelation
        query_ids = list(query_ids)
        if not query_ids:
            return QueryPhaseResult(n_queries=0, n_chelated=0, threshold=float("nan"),
                                    rankings={}, seconds=0.0)
        self._last_queries = query_ids
        queries = self.adapter.apply(self.encoded.query_matrix(query_ids))
        hits = self.index.search(queries, cfg.scout_k, with_vectors=True)
        entropies = neighbourhood_entropy(hits.vectors)
        self._entropy_history.extend(entropies.tolist())
        threshold = adaptive_threshold(np.asarray(self._entropy_history), cfg.threshold_quantile)
        chelate = should_chelate(entropies, cfg.trigger, threshold)
        rankings: dict[str, list[str]] = {}
        for i, q in enumerate(query_ids):
            ids = hits.doc_ids[i]
            if chelate[i]:
                order, centre = centred_rerank(queries[i], hits.vectors[i])
                self.collapses.record(np.array([self._positions[d] for d in ids]), centre)
                ids = [ids[j] for j in order]
            rankings[q] = ids
        return QueryPhaseResult(n_queries=len(query_ids), n_chelated=int(chelate.sum()),
                                threshold=threshold, rankings=rankings,
                                seconds=time.perf_counter() - started)

    def sediment(self, teacher_weight: float = 0.0) -> SedimentResult:
        """One cycle's training on the documents that collapsed often enough, then re-index."""
        started = time.perf_counter()
        cfg = self.settings.training
        result = SedimentResult(teacher_weight=teacher_weight if self.mode.blends_targets
                                else float(self.mode.teacher_targets))
        if not self.mode.trains:
            self.collapses.clear()
            result.seconds = time.perf_counter() - started
            return result
        positions = self.collapses.frequent(cfg.collapse_threshold)
        raw = self.encoded.docs[positions]
        homeostatic = homeostatic_targets(self.adapter.apply(raw),
                                          self.collapses.mean_centres(positions), cfg.push)
        targets = homeostatic
        if self.mode.teacher_targets:
            teacher = self._teacher_doc_targets(result)
            if teacher is not None:
                chosen = teacher[positions]
                targets = blend_targets(homeostatic, chosen, teacher_weight) \
                    if self.mode.blends_targets else chosen
        self.collapses.clear()
        if len(positions) == 0:
            if result.fallback == FALLBACK_BASELINE:
                result.fallback = Fallback.NO_UPDATE
            result.seconds = time.perf_counter() - started
            result.teacher_alignment = self._alignment()
            return result
        result.n_targets = len(positions)
        listwise = self._listwise(self._last_queries) if self.mode.teacher_targets else None
        self._fit_guarded(raw, targets, cfg.epochs, result, listwise)
        result.seconds = time.perf_counter() - started
        return result

    def distill(self, train_query_ids: Sequence[str] = ()) -> SedimentResult:
        """Offline distillation before the cycles: the whole corpus (and the train queries' texts,
        which carry no labels) towards the teacher's embeddings in the student's frame."""
        started = time.perf_counter()
        result = SedimentResult(teacher_weight=1.0)
        teacher_docs = self._teacher_doc_targets(result)
        if teacher_docs is None:
            result.fallback = Fallback.NO_UPDATE  # nothing homeostatic to distil yet
            result.seconds = time.perf_counter() - started
            return result
        raw, targets = self.encoded.docs, teacher_docs
        if self.settings.training.distill_queries and train_query_ids:
            try:
                texts = [self.dataset.queries[q] for q in train_query_ids]
                raw = np.concatenate([raw, self.encoded.query_matrix(list(train_query_ids))])
                targets = np.concatenate([targets, self.teacher.targets(texts)])
            except TeacherUnavailable as err:
                result.notes.append(f"train queries not distilled: {err}")
        result.n_targets = len(raw)
        self._fit_guarded(raw, targets, self.settings.training.distill_epochs, result,
                          self._listwise(train_query_ids))
        result.seconds = time.perf_counter() - started
        return result

    # ---- internals ----------------------------------------------------------------------------
    def _teacher_doc_targets(self, result: SedimentResult) -> np.ndarray | None:
        """Teacher targets for every document, or None with the fallback recorded."""
        if self._teacher_docs is not None:
            return self._teacher_docs
        if self.teacher is None:
            result.fallback = FALLBACK_BASELINE
            result.notes.append("no teacher configured")
            return None
        try:
            texts = [self.dataset.corpus[d] for d in self.dataset.doc_ids]
            self.teacher.ensure_fitted(texts, self.encoded.student_docs)
            self._teacher_docs = self.teacher.corpus_targets
        except TeacherUnavailable as err:
            log.info("%s; falling back to baseline targets", err)
            result.fallback = FALLBACK_BASELINE
            result.notes.append(str(err))
            return None
        return self._teacher_docs

    def _listwise(self, query_ids: Sequence[str]) -> ListwiseTerm | None:
        """The teacher's ranking of its top candidates for these (train) queries, when the
        listwise term is on and the teacher is available."""
        cfg = self.settings.training
        if cfg.listwise_weight <= 0 or not query_ids or self._teacher_docs is None:
            return None
        try:
            teacher_q = self.teacher.targets([self.dataset.queries[q] for q in query_ids])
        except TeacherUnavailable as err:
            log.info("listwise term skipped: %s", err)
            return None
        candidates, probs = teacher_ranking(teacher_q, self._teacher_docs, cfg.listwise_k,
                                            cfg.listwise_temperature)
        targets = RankingTargets(query_raw=self.encoded.query_matrix(list(query_ids)),
                                 candidates=candidates, probs=probs)
        return ListwiseTerm(targets=targets, doc_raw=self.encoded.docs,
                            weight=cfg.listwise_weight, temperature=cfg.listwise_temperature)

    def _alignment(self) -> float:
        if self._teacher_docs is None:
            return float("nan")
        return mean_cosine(self.adapter.apply(self.encoded.docs), self._teacher_docs)

    def _fit_guarded(self, raw: np.ndarray, targets: np.ndarray, epochs: int,
                     result: SedimentResult, listwise: ListwiseTerm | None = None) -> None:
        """Fit, re-index, and keep the update only if the validation slice does not drop by more
        than the guard's tolerance; otherwise restore the previous adapter and index."""
        cfg = self.settings.training
        before_state = self.adapter.snapshot()
        result.val_before = self.validation_ndcg()
        self._updates += 1
        result.train_loss = fit_adapter(self.adapter, raw, targets, epochs, cfg.lr,
                                        cfg.batch_size, seed=self.seed * 100 + self._updates,
                                        listwise=listwise)
        self._reindex(result)
        if self.val_query_ids:
            after = self.evaluate(self.val_query_ids)
            result.val_after = after.ndcg_at_10
            # Against the better of the last accepted and the untrained score, so that updates
            # each within tolerance cannot add up to a slow collapse.
            reference = max(result.val_before, self._val_initial)
            if reference - result.val_after > cfg.guard_tolerance:
                log.info("collapse guard: validation NDCG@10 %.4f -> %.4f, rolling back",
                         result.val_before, result.val_after)
                self.adapter.load_state_dict(before_state)
                self._reindex(result)
                result.rollback = True
            # val_after keeps the measured drop; the accepted state's score carries on
            self._val_ndcg = result.val_before if result.rollback else result.val_after
        result.teacher_alignment = self._alignment()

    def validation_ndcg(self) -> float:
        """NDCG@10 of the accepted adapter on the validation slice (NaN without one)."""
        if not self.val_query_ids:
            return float("nan")
        if self._val_ndcg is None:
            first = self.evaluate(self.val_query_ids)
            self._val_ndcg = first.ndcg_at_10
            self._val_initial = self._val_ndcg
        return self._val_ndcg

    def _reindex(self, result: SedimentResult) -> None:
        started = time.perf_counter()
        self.index.replace_vectors(self.adapter.apply(self.encoded.docs))
        result.index_seconds += time.perf_counter() - started

    def close(self) -> None:
        self.index.close()
