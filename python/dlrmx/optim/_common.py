"""What the fused dense optimizers share: hyperparameter checks and the step() frame (closure,
gradient collection, the non-finite-gradient policy)."""

from __future__ import annotations

import math
import warnings

import torch


def check_hyper(owner: str, **values: float) -> None:
    for name, value in values.items():
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise ValueError(f"{owner}: {name} must be a finite number >= 0, got {value!r}")


class FusedOptimizer(torch.optim.Optimizer):
    """A torch optimizer whose subclasses update each param group in one fused kernel call
    (`_update`). `skip_nonfinite=True` skips a step whose gradients hold NaN/Inf, counts it in
    `skipped_steps` and warns, instead of poisoning the weights and the optimizer state."""

    def __init__(self, params, defaults: dict, skip_nonfinite: bool) -> None:
        super().__init__(params, defaults)
        self.skip_nonfinite = skip_nonfinite
        self.skipped_steps = 0

    def _update(self, group: dict, params: list[torch.Tensor]) -> None:
        raise NotImplementedError

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
        if self.skip_nonfinite and not all(bool(torch.isfinite(g).all()) for g in grads):
            self.skipped_steps += 1
            warnings.warn(f"{name}: non-finite gradient, step skipped ({self.skipped_steps} "
                          f"skipped so far)", RuntimeWarning, stacklevel=2)
            return loss
        for group, params in todo:
            if params:
                self._update(group, params)
        return loss
