"""chelation.adam.Adam against torch.optim.Adam: the same parameters after the same steps."""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from chelation.adam import Adam
from chelation.adapter import ResidualAdapter, fit_adapter


def _train(optimiser_class, steps: int = 25) -> list[torch.Tensor]:
    adapter = ResidualAdapter(dim=16, hidden_dim=8, seed=3, init_scale=0.05)
    generator = torch.Generator().manual_seed(0)
    x = F.normalize(torch.randn(40, 16, generator=generator), dim=-1)
    y = F.normalize(torch.randn(40, 16, generator=generator), dim=-1)
    optimiser = optimiser_class(adapter.parameters(), lr=0.01)
    for step in range(steps):
        rows = slice(step % 4 * 10, step % 4 * 10 + 10)
        loss = F.mse_loss(adapter(x[rows]), y[rows])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return [p.detach().clone() for p in adapter.parameters()]


def test_the_same_trajectory_as_torch_optim_adam_bit_for_bit() -> None:
    ours, theirs = _train(Adam), _train(torch.optim.Adam)
    assert len(ours) == len(theirs) == 4
    for a, b in zip(ours, theirs, strict=True):
        assert torch.equal(a, b)
    # and the parameters did move: the comparison is not between two untouched adapters
    assert not torch.equal(ours[2], torch.zeros_like(ours[2]))


def test_a_parameter_without_a_gradient_is_left_alone() -> None:
    used, unused = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3))
    optimiser = Adam([used, unused], lr=0.1)
    (used * used).sum().backward()
    optimiser.step()
    assert torch.equal(unused, torch.ones(3)) and not torch.equal(used, torch.ones(3))


def test_fit_adapter_lowers_the_loss() -> None:
    rng = np.random.default_rng(0)
    raw = rng.normal(size=(64, 16)).astype(np.float32)
    raw /= np.linalg.norm(raw, axis=1, keepdims=True)
    targets = np.roll(raw, 1, axis=1)
    adapter = ResidualAdapter(dim=16, hidden_dim=32, seed=0)
    first = fit_adapter(adapter, raw, targets, epochs=1, lr=0.01, batch_size=16, seed=0)
    later = fit_adapter(adapter, raw, targets, epochs=30, lr=0.01, batch_size=16, seed=0)
    assert later < first
