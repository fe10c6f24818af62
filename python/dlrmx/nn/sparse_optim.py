"""Sparse optimizers fused into the embedding backward.

Each is a small config; the module that owns the tables owns the optimizer state (as buffers, so
it is part of the state_dict). The update runs inside the backward, one parallel region over the
rows touched by the batch; no weight gradient is ever materialized.
"""

from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass
from typing import ClassVar

import torch

from dlrmx.nn.tables import new_table


@dataclass
class SparseOptimizer:
    """lr: learning rate (a schedule may change it between steps). skip_nonfinite: skip the
    update of a batch whose output gradient holds NaN/Inf, count it in `skipped_steps` and warn,
    instead of writing NaN into the touched rows."""

    lr: float
    skip_nonfinite: bool = False

    name: ClassVar[str] = ""

    def __post_init__(self) -> None:
        self.check()
        self.skipped_steps = 0

    def check(self) -> None:
        """Raise ValueError unless lr (and eps) are finite numbers >= 0. Run at construction and
        before every update, as a schedule or a user may set them at any time."""
        for name in ("lr", "eps"):
            value = getattr(self, name, 0.0)
            number = float(value) if isinstance(value, numbers.Real) else math.nan
            if not (math.isfinite(number) and number >= 0):
                raise ValueError(f"{type(self).__name__}: {name} must be a finite number >= 0, "
                                 f"got {value!r}")

    def init_state(self, weight: torch.Tensor) -> torch.Tensor | None:
        """The optimizer state for one table (None when it keeps none)."""
        return None

    def prepare(self, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """An fp32 table -> (the table as this optimizer stores it, its state or None)."""
        return weight, self.init_state(weight)


@dataclass
class SGD(SparseOptimizer):
    """w -= lr * g, with g the row's gradient summed over the batch."""

    name: ClassVar[str] = "sgd"


@dataclass
class RowWiseAdagrad(SparseOptimizer):
    """FBGEMM's exact row-wise Adagrad: one fp32 state per row.
    state += mean(g * g);  w -= lr * g / (sqrt(state) + eps)."""

    eps: float = 1e-8
    initial_accumulator_value: float = 0.0
    name: ClassVar[str] = "rowwise_adagrad"

    def init_state(self, weight: torch.Tensor) -> torch.Tensor:
        return new_table((weight.shape[0],), fill=self.initial_accumulator_value)


@dataclass
class Adagrad(SparseOptimizer):
    """Element-wise Adagrad, as torch.optim.Adagrad without lr decay or weight decay.
    state += g * g;  w -= lr * g / (sqrt(state) + eps)."""

    eps: float = 1e-10
    initial_accumulator_value: float = 0.0
    name: ClassVar[str] = "adagrad"

    def init_state(self, weight: torch.Tensor) -> torch.Tensor:
        return new_table(tuple(weight.shape), fill=self.initial_accumulator_value)


@dataclass
class SplitSGD(SparseOptimizer):
    """SGD on split fp32 weights (Kalamkar et al., SC'20): the table holds the bf16 upper halves
    (what forward and backward read: half the bytes of fp32) and the state the lower 16 bits
    ("trail"). The update rebuilds the exact fp32 weight, steps, and splits it again."""

    name: ClassVar[str] = "split_sgd"

    def prepare(self, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return split_fp32(weight)  # (bf16 upper halves, int16 trail)


OPTIMIZERS = {cls.name: cls for cls in (SGD, RowWiseAdagrad, Adagrad, SplitSGD)}


def make_sparse_optimizer(name: str, **kwargs) -> SparseOptimizer:
    """An optimizer by name: sgd, split_sgd, rowwise_adagrad or adagrad."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown sparse optimizer {name!r}; choose one of {sorted(OPTIMIZERS)}")
    return OPTIMIZERS[name](**kwargs)


def split_fp32(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 -> (bf16 upper halves, int16 lower halves), exact: combine_fp32 undoes it bit for bit.
    The upper half is the truncation (round toward zero) of the fp32 value."""
    bits = weight.detach().contiguous().view(torch.int32)
    upper, trail = new_table(tuple(bits.shape), torch.int16), new_table(tuple(bits.shape), torch.int16)
    upper.copy_(bits >> 16)
    trail.copy_(bits & 0xFFFF)
    return upper.view(torch.bfloat16), trail


def combine_fp32(upper: torch.Tensor, trail: torch.Tensor) -> torch.Tensor:
    """(bf16 upper halves, int16 lower halves) -> the exact fp32 weights."""
    hi = upper.detach().view(torch.int16).to(torch.int32) << 16
    lo = trail.to(torch.int32) & 0xFFFF
    return (hi | lo).view(torch.float32)


class FusedUpdate:
    """Binds an optimizer config and its per-table state to the fused update op."""

    def __init__(self, optimizer: SparseOptimizer, state: list[torch.Tensor] | None = None):
        self.optimizer, self.state = optimizer, state or []

    def apply(self, grad_out, weights, ids, offsets, psw, padding_idx, pooling, batch_size, argmax):
        opt = self.optimizer
        opt.check()  # before any row changes: a NaN lr would be written into every touched row
        if opt.skip_nonfinite and not bool(torch.isfinite(grad_out).all()):
            opt.skipped_steps += 1
            warnings.warn(f"{opt.name}: non-finite gradient, embedding update skipped "
                          f"({opt.skipped_steps} skipped so far)", RuntimeWarning, stacklevel=2)
            return
        torch.ops.dlrmx.embedding_bag_update(
            grad_out, weights, ids, offsets, psw, padding_idx, pooling, batch_size, argmax,
            opt.name, float(opt.lr), float(getattr(opt, "eps", 0.0)), self.state)
