"""Adam for the adapter: torch's own update (`torch.optim.adam.adam`, the functional form that
`torch.optim.Adam` calls) with its state held here.

Why not `torch.optim.Adam` itself: every `torch.optim.Optimizer` wraps `add_param_group` and
`step` in torch's compiler guards, which import `torch._dynamo` (and sympy) on first use, about
1.2 s of a 9 s warm job on this machine, for a compiler a job never uses. The functional update
runs the same single-tensor kernel (`_single_tensor_adam`) without that import, so parameters
follow exactly the trajectory `torch.optim.Adam` gives (tests/test_adam.py holds them equal,
bit for bit).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch.optim.adam import adam as adam_update


class Adam:
    """`torch.optim.Adam(params, lr, betas, eps)` without weight decay, amsgrad or the
    optimiser's hooks: `zero_grad()` then `step()` after each backward pass."""

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.params = [p for p in params if p.requires_grad]
        self.lr, self.betas, self.eps = lr, betas, eps
        self.exp_avgs = [torch.zeros_like(p, memory_format=torch.preserve_format)
                         for p in self.params]
        self.exp_avg_sqs = [torch.zeros_like(p, memory_format=torch.preserve_format)
                            for p in self.params]
        self.steps = [torch.tensor(0.0) for _ in self.params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        live = [i for i, p in enumerate(self.params) if p.grad is not None]
        if not live:
            return
        adam_update([self.params[i] for i in live], [self.params[i].grad for i in live],
                    [self.exp_avgs[i] for i in live], [self.exp_avg_sqs[i] for i in live], [],
                    [self.steps[i] for i in live], foreach=False, amsgrad=False,
                    beta1=self.betas[0], beta2=self.betas[1], lr=self.lr, weight_decay=0.0,
                    eps=self.eps, maximize=False)
