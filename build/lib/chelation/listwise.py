"""A listwise distillation term: for train queries, the student (through the adapter) is asked to
rank the teacher's top candidates as the teacher does (KL between the two softmax distributions
over the same candidates). It teaches query-document similarity structure, where the MSE to the
teacher's vectors teaches positions."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F


@dataclass
class RankingTargets:
    """Per query: raw student embedding, candidate doc positions (teacher's top k) and the
    teacher's softmax over them."""

    query_raw: np.ndarray   # (n_queries, dim)
    candidates: np.ndarray  # (n_queries, k) positions into the corpus
    probs: np.ndarray       # (n_queries, k), rows sum to 1


def teacher_ranking(teacher_queries: np.ndarray, teacher_docs: np.ndarray, k: int,
                    temperature: float) -> tuple[np.ndarray, np.ndarray]:
    """The teacher's top-k documents per query and its softmax over their cosine scores."""
    if temperature <= 0:
        raise ValueError(f"listwise_temperature={temperature} must be > 0")
    scores = teacher_queries @ teacher_docs.T
    k = min(k, scores.shape[1])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    top_scores = np.take_along_axis(scores, top, axis=1)
    logits = top_scores / temperature
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    return top, (probs / probs.sum(axis=1, keepdims=True)).astype(np.float32)


def listwise_kl(query_adapted: torch.Tensor, docs_adapted: torch.Tensor,
                teacher_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) over each query's candidates. query (n, dim), docs (n, k, dim)."""
    logits = torch.einsum("nd,nkd->nk", query_adapted, docs_adapted) / temperature
    return F.kl_div(F.log_softmax(logits, dim=1), teacher_probs, reduction="batchmean")
