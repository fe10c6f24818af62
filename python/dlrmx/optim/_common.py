"""What the fused dense optimizers share: hyperparameter checks and the step() frame (closure,
gradient collection, the non-finite-gradient policy)."""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Sequence

import torch


def as_number(value) -> float:
    """A real number (or a one-element tensor, as torch optimizers allow for lr) as a float;
    NaN for anything else, so that every range check fails on it."""
    if isinstance(value, numbers.Real) or (isinstance(value, torch.Tensor) and value.numel() == 1):
        return float(value)
    return math.nan


def all_finite(tensors: Sequence[torch.Tensor]) -> bool:
    """Whether every element of these dense floating-point tensors is finite, in one fused pass
    (the check of torch's GradScaler at scale 1, which leaves the values as they are) instead
    of a reduction and a host sync per tensor (0.7 ms a step for DLRM's 14 MLP gradients)."""
    tensors = list(tensors)
    if not tensors:
        return True
    found = torch.zeros(1, device=tensors[0].device)
    try:
        torch._amp_foreach_non_finite_check_and_unscale_(tensors, found,
                                                          torch.ones(1, device=found.device))
    except (RuntimeError, NotImplementedError):  # a torch without the CPU kernel
        return all(bool(torch.isfinite(t).all()) for t in tensors)
    return not bool(found)


def check_hyper(owner: str, **values) -> None:
    for name, value in values.items():
        v = as_number(value)
        if not (math.isfinite(v) and v >= 0):
            raise ValueError(f"{owner}: {name} must be a finite number >= 0, got {value!r}")


def check_betas(owner: str, betas) -> None:
    ok = isinstance(betas, (tuple, list)) and len(betas) == 2
    if not (ok and all(0.0 <= as_number(b) < 1.0 for b in betas)):
        raise ValueError(f"{owner}: betas must be two numbers in [0, 1), got {betas!r}")


class FusedOptimizer(torch.optim.Optimizer):
    """A torch optimizer whose subclasses update each param group in one fused kernel call
    (`_update`). `skip_nonfinite=True` skips a step whose gradients hold NaN/Inf, counts it in
    `skipped_steps` and warns, instead of poisoning the weights and the optimizer state."""

    # The param-group entries checked (finite, >= 0) before every step: a schedule, or a user,
    # may set them at any time, and a NaN must not reach the weights.
    hyper: tuple[str, ...] = ("lr",)

    def __init__(self, params, defaults: dict, skip_nonfinite: bool) -> None:
        super().__init__(params, defaults)
        self.skip_nonfinite = skip_nonfinite
        self.skipped_steps = 0

    def _update(self, group: dict, params: list[torch.Tensor]) -> None:
        raise NotImplementedError

    def _check_group(self, group: dict) -> None:
        check_hyper(type(self).__name__, **{k: group[k] for k in self.hyper})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        todo = [(g, [p for p in g["params"] if p.grad is not None]) for g in self.param_groups]
        grads = [p.grad for _, params in todo for p in params]
        name = type(self).__name__
        if any(g.is_sparse for g in grads):
            raise RuntimeError(f"{name} does not support sparse gradients; train embedding tables "
                               f"with a dlrmx.nn sparse optimizer")
        if self.skip_nonfinite and not all_finite(grads):
            self.skipped_steps += 1
            warnings.warn(f"{name}: non-finite gradient, step skipped ({self.skipped_steps} "
                          f"skipped so far)", RuntimeWarning, stacklevel=2)
            return loss
        for group, params in todo:  # every group is checked before any weight changes
            if params:
                self._check_group(group)
        for group, params in todo:
            if params:
                self._update(group, params)
        return loss
