"""The residual adapter `f(x) = normalize(x + W2 relu(W1 x))` and its training step."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from chelation.adam import Adam
from chelation.listwise import RankingTargets, listwise_kl

_MANY_ROWS = 50_000


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """The adapter is tiny: intra-op threads only add synchronisation, and oversubscribe the cores
    when jobs run in parallel (measured: 10 epochs took 1.5 s on one thread, up to 11 s on two
    beside another busy process)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class ResidualAdapter(nn.Module):
    """Residual MLP on top of frozen embeddings. With `init_scale=0` W2 starts at zero, so the
    untrained adapter is exactly the identity on unit vectors."""

    def __init__(self, dim: int, hidden_dim: int = 256, seed: int = 0, init_scale: float = 0.0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.dim = dim
        self.down = nn.Linear(dim, hidden_dim)
        self.up = nn.Linear(hidden_dim, dim)
        with torch.no_grad():
            bound = 1.0 / np.sqrt(dim)
            self.down.weight.uniform_(-bound, bound, generator=generator)
            self.down.bias.zero_()
            self.up.weight.normal_(0.0, init_scale, generator=generator) if init_scale > 0 \
                else self.up.weight.zero_()
            self.up.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x + self.up(F.relu(self.down(x))), dim=-1)

    @torch.no_grad()
    def apply(self, raw: np.ndarray) -> np.ndarray:  # type: ignore[override]
        """Adapted unit vectors for raw embeddings (numpy in, numpy out)."""
        if len(raw) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        x = torch.from_numpy(np.ascontiguousarray(raw, dtype=np.float32))
        if len(raw) < _MANY_ROWS:
            with one_thread():
                return self(x).numpy()
        # a whole large corpus: enough work for every core, in slices so that the temporaries
        # (hidden layer, residual sum) stay small beside the output
        out = np.empty((len(raw), self.dim), dtype=np.float32)
        for start in range(0, len(raw), _MANY_ROWS):
            out[start:start + _MANY_ROWS] = self(x[start:start + _MANY_ROWS]).numpy()
        return out

    def snapshot(self) -> dict[str, torch.Tensor]:
        return copy.deepcopy(self.state_dict())


@dataclass
class ListwiseTerm:
    """Optional second loss: the teacher's ranking of its top candidates for train queries,
    weighted by `weight` (see chelation.listwise). `doc_raw` is the whole corpus."""

    targets: RankingTargets
    doc_raw: np.ndarray
    weight: float
    temperature: float
    queries_per_step: int = 32


def fit_adapter(
    adapter: ResidualAdapter,
    raw: np.ndarray,
    targets: np.ndarray,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    listwise: ListwiseTerm | None = None,
) -> float:
    """Fit `adapter(raw) ~ targets` by MSE with Adam (plus the listwise term when given); returns
    the last epoch's mean loss (NaN when there was nothing to fit)."""
    if len(raw) == 0 or epochs == 0:
        return float("nan")
    x = torch.from_numpy(np.ascontiguousarray(raw, dtype=np.float32))
    y = torch.from_numpy(np.ascontiguousarray(targets, dtype=np.float32))
    optimiser = Adam(adapter.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    extra = _listwise_closure(adapter, listwise, generator) if listwise else None
    adapter.train()
    with one_thread():
        epoch_loss = _epochs(adapter, optimiser, x, y, epochs, batch_size, generator, extra)
    adapter.eval()
    return epoch_loss


def _listwise_closure(adapter: ResidualAdapter, term: ListwiseTerm, generator: torch.Generator):
    t = term.targets
    queries = torch.from_numpy(np.ascontiguousarray(t.query_raw, dtype=np.float32))
    docs = torch.from_numpy(np.ascontiguousarray(term.doc_raw, dtype=np.float32))
    candidates = torch.from_numpy(t.candidates.astype(np.int64))
    probs = torch.from_numpy(t.probs)

    def loss() -> torch.Tensor:
        pick = torch.randperm(len(queries), generator=generator)[:term.queries_per_step]
        cand = candidates[pick]
        q = adapter(queries[pick])
        d = adapter(docs[cand.reshape(-1)]).reshape(*cand.shape, -1)
        return term.weight * listwise_kl(q, d, probs[pick], term.temperature)

    return loss


def _epochs(adapter: ResidualAdapter, optimiser: Adam, x: torch.Tensor,
            y: torch.Tensor, epochs: int, batch_size: int, generator: torch.Generator,
            extra=None) -> float:
    epoch_loss = float("nan")
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        total = 0.0
        for start in range(0, len(x), batch_size):
            idx = order[start:start + batch_size]
            loss = F.mse_loss(adapter(x[idx]), y[idx])
            if extra is not None:
                loss = loss + extra()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += loss.item() * len(idx)
        epoch_loss = total / len(x)
    return epoch_loss
