"""`dlrmx.optim.WarmupPolyDecay`: the reference DLRM's learning-rate policy, for dense and
sparse optimizers together."""

from __future__ import annotations

from typing import Sequence

import torch

from dlrmx.nn.sparse_optim import SparseOptimizer


class WarmupPolyDecay:
    """Linear warm-up from 0 over `warmup_steps`, hold, then polynomial decay (power 2 by
    default) over `decay_steps` starting at `decay_start_step`, down to `min_lr` and held there.
    The semantics of the reference DLRM's --lr-num-warmup-steps --lr-decay-start-step
    --lr-num-decay-steps.

    Drives every optimizer given: torch optimizers (each param group's lr, scaled from the lr it
    had when the schedule was made) and dlrmx sparse optimizers (their `lr`). Call `step()` once
    after each optimizer step; `state_dict()` saves the position for resuming.
    """

    def __init__(self, dense: Sequence[torch.optim.Optimizer] = (),
                 sparse: Sequence[SparseOptimizer] = (), *, warmup_steps: int = 0,
                 decay_start_step: int = 0, decay_steps: int = 0, power: float = 2.0,
                 min_lr: float = 0.0) -> None:
        for name, v in (("warmup_steps", warmup_steps), ("decay_start_step", decay_start_step),
                        ("decay_steps", decay_steps)):
            if not isinstance(v, int) or v < 0:
                raise ValueError(f"WarmupPolyDecay: {name} must be an integer >= 0, got {v!r}")
        if decay_steps > 0 and decay_start_step < warmup_steps:  # as the reference refuses
            raise ValueError(f"WarmupPolyDecay: decay_start_step ({decay_start_step}) must not come "
                             f"before the end of warm-up (warmup_steps={warmup_steps})")
        self.dense, self.sparse = list(dense), list(sparse)
        self.warmup_steps, self.decay_start_step, self.decay_steps = warmup_steps, decay_start_step, decay_steps
        self.power, self.min_lr = power, min_lr
        self.base_dense = [[g["lr"] for g in opt.param_groups] for opt in self.dense]
        self.base_sparse = [opt.lr for opt in self.sparse]
        self.last_step = 0
        self._apply()

    def factor(self, step: int) -> float:
        """The multiplier of the base learning rate at `step` (0-based). As the reference
        counts from 1: warm-up gives 1/W, 2/W, ..., 1; decay gives ((N - k) / N)^power for the
        k-th step from the decay start, and after the last it holds (1 / N)^power."""
        count = step + 1
        if count < self.warmup_steps:
            return count / self.warmup_steps
        if self.decay_steps > 0 and count >= self.decay_start_step:
            left = max(1, self.decay_start_step + self.decay_steps - count)
            return (left / self.decay_steps) ** self.power
        return 1.0

    def _lr(self, base: float) -> float:
        return max(self.min_lr, base * self.factor(self.last_step)) if base > 0 else base

    def _apply(self) -> None:
        for opt, bases in zip(self.dense, self.base_dense):
            for group, base in zip(opt.param_groups, bases):
                group["lr"] = self._lr(base)
        for opt, base in zip(self.sparse, self.base_sparse):
            opt.lr = self._lr(base)

    def step(self) -> None:
        self.last_step += 1
        self._apply()

    def set_step(self, step: int) -> None:
        """Jump to `step` (0-based; e.g. a resumed run's first step) and apply its rates."""
        if not isinstance(step, int) or step < 0:
            raise ValueError(f"WarmupPolyDecay: step must be an integer >= 0, got {step!r}")
        self.last_step = step
        self._apply()

    def get_last_lr(self) -> list[float]:
        return [g["lr"] for opt in self.dense for g in opt.param_groups] + [o.lr for o in self.sparse]

    def state_dict(self) -> dict:
        return {"last_step": self.last_step, "base_dense": self.base_dense, "base_sparse": self.base_sparse}

    def load_state_dict(self, state: dict) -> None:
        self.last_step = state["last_step"]
        self.base_dense, self.base_sparse = state["base_dense"], state["base_sparse"]
        self._apply()
