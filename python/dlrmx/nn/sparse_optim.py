"""Sparse optimizers fused into the embedding backward.

Each is a small config; the module that owns the tables owns the optimizer state (as buffers, so
it is part of the state_dict). The update runs inside the backward, one parallel region over the
rows touched by the batch; no weight gradient is ever materialized.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import ClassVar

import torch

from dlrmx.nn.tables import new_table


_HYPER = {"lr": 0, "eps": 1}  # positions in SparseOptimizer.hyper


@dataclass
class SparseOptimizer:
    """lr: learning rate (a schedule may change it between steps). skip_nonfinite: skip the
    update of a batch whose output gradient holds NaN/Inf, count it in `skipped_steps` and warn,
    instead of writing NaN into the touched rows.

    Besides the fields: `hyper`, float64 [lr, eps] kept in step with them, and `skip_counter`
    (behind `skipped_steps`): tensors, so the fused update op reads and writes them at run time,
    also inside a torch.compile'd graph (a float would be baked in: a recompile per new lr)."""

    lr: float
    skip_nonfinite: bool = False

    name: ClassVar[str] = ""

    def __post_init__(self) -> None:
        self.check()
        # A tensor, not an int: the fused update (an op, also inside a compiled backward) counts
        # the skipped steps in it.
        self.skip_counter = torch.zeros((), dtype=torch.int64)

    def __setattr__(self, name: str, value) -> None:
        object.__setattr__(self, name, value)
        if name in _HYPER:
            self._write_hyper(name, value)

    def _write_hyper(self, name: str, value) -> None:
        """Mirror lr and eps into `hyper` (float64 [lr, eps]), what the fused update op reads: a
        tensor, so a compiled model follows a schedule's lr without recompiling."""
        hyper = self.__dict__.get("hyper")
        if hyper is None:
            hyper = torch.zeros(len(_HYPER), dtype=torch.float64)
            object.__setattr__(self, "hyper", hyper)
        hyper[_HYPER[name]] = float(value) if isinstance(value, numbers.Real) else math.nan

    @property
    def skipped_steps(self) -> int:
        return int(self.skip_counter)

    @skipped_steps.setter
    def skipped_steps(self, value: int) -> None:
        self.skip_counter.fill_(value)

    def check(self) -> None:
        """Raise ValueError unless lr (and eps) are finite numbers >= 0. Run at construction and
        before every update, as a schedule or a user may set them at any time."""
        for name in ("lr", "eps"):
            value = getattr(self, name, 0.0)
            number = float(value) if isinstance(value, numbers.Real) else math.nan
            if not (math.isfinite(number) and number >= 0):
                raise ValueError(f"{type(self).__name__}: {name} must be a finite number >= 0, "
                                 f"got {value!r}")

    def __fx_create_arg__(self, tracer):
        """Under torch.fx.symbolic_trace: the graph refers to this live object (an attribute of
        the traced root), so a schedule's lr reaches the traced module too."""
        name = tracer.get_fresh_qualname("_sparse_optimizer_")
        setattr(tracer.root, name, self)
        return tracer.create_node("get_attr", name, (), {})

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
    upper, trail = (new_table(tuple(bits.shape), torch.int16, device=bits.device)
                    for _ in range(2))
    upper.copy_(bits >> 16)
    trail.copy_(bits & 0xFFFF)
    return upper.view(torch.bfloat16), trail


def combine_fp32(upper: torch.Tensor, trail: torch.Tensor) -> torch.Tensor:
    """(bf16 upper halves, int16 lower halves) -> the exact fp32 weights."""
    hi = upper.detach().view(torch.int16).to(torch.int32) << 16
    lo = trail.to(torch.int32) & 0xFFFF
    return (hi | lo).view(torch.float32)


class FusedUpdate:
    """An optimizer config and its per-table state, as `dlrmx.ops.embedding_bags` takes them: it
    hands the fused update op the config's name, its `hyper` tensor (lr, eps), its skip counter
    and the state tensors, which the update writes in place."""

    def __init__(self, optimizer: SparseOptimizer, state: list[torch.Tensor] | None = None):
        self.optimizer, self.state = optimizer, state or []

    def __fx_create_arg__(self, tracer):
        """Under torch.fx.symbolic_trace: a node that builds it from the optimizer and the state
        tensors (the module's buffers), as the traced forward did."""
        args = (tracer.create_arg(self.optimizer), tracer.create_arg(list(self.state)))
        return tracer.create_node("call_function", FusedUpdate, args, {})
