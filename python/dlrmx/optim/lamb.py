"""`dlrmx.optim.Lamb`: LAMB on a fused multi-tensor kernel (two passes, one parallel region)."""

from __future__ import annotations

from typing import Iterable

import torch

from dlrmx import native_ops
from dlrmx.optim._common import FusedOptimizer, check_betas, check_hyper


class Lamb(FusedOptimizer):
    """LAMB (You et al., "Large Batch Optimization for Deep Learning", ICLR 2020).

    The flavour, per parameter tensor p with gradient g at step t:
        m = b1 m + (1 - b1) g,   v = b2 v + (1 - b2) g^2
        u = (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps) + weight_decay * p
        p -= lr * min(|p|, max_weight_norm) / |u| * u        (ratio 1 if a norm is 0)

    Bias correction is on (as in the paper's algorithm and IPEX): without it the first
    updates are shrunk by (1 - b1) until the moments warm up, which a short tuning trial
    cannot afford. The weight norm is clamped to 10 (as Intel's MLPerf DLRM LAMB): a layer
    with large weights otherwise gets a huge trust ratio and a destabilizing step. eps = 1e-6
    as both. `bias_correction=False, max_weight_norm=0` give the other flavours.

    `skip_nonfinite=True` skips a step whose gradients hold NaN/Inf (counted in
    `skipped_steps`, with a warning) instead of poisoning the weights and moments.
    """

    def __init__(self, params: Iterable, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-6, weight_decay: float = 0.0, max_weight_norm: float = 10.0,
                 bias_correction: bool = True, skip_nonfinite: bool = False) -> None:
        check_hyper("Lamb", lr=lr, eps=eps, weight_decay=weight_decay, max_weight_norm=max_weight_norm)
        check_betas("Lamb", betas)
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        max_weight_norm=max_weight_norm, bias_correction=bias_correction)
        super().__init__(params, defaults, skip_nonfinite)

    hyper = ("lr", "eps", "weight_decay", "max_weight_norm")

    def _check_group(self, group: dict) -> None:
        super()._check_group(group)
        check_betas("Lamb", group["betas"])

    def _update(self, group: dict, params: list[torch.Tensor]) -> None:
        for p in params:
            state = self.state[p]
            if not state:
                state["step"] = torch.tensor(0.0)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.contiguous_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.contiguous_format)
            state["step"] += 1
        # Parameters of one group always step together, so they share one step count.
        step = int(self.state[params[0]]["step"])
        b1, b2 = group["betas"]
        native_ops.kernels(params[0].device).lamb_step(
            params, [p.grad for p in params], [self.state[p]["exp_avg"] for p in params],
            [self.state[p]["exp_avg_sq"] for p in params], float(group["lr"]), b1, b2,
            group["eps"], group["weight_decay"], group["max_weight_norm"],
            group["bias_correction"], step)
