"""Checks and the non-finite-gradient policy shared by the dense optimizers."""

from __future__ import annotations

import math
import warnings

import torch


def check_hyper(owner: str, **values: float) -> None:
    for name, value in values.items():
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise ValueError(f"{owner}: {name} must be a finite number >= 0, got {value!r}")


def grads_are_finite(grads: list[torch.Tensor]) -> bool:
    return all(bool(torch.isfinite(g).all()) for g in grads)


def report_skip(owner: str, count: int) -> None:
    warnings.warn(f"{owner}: non-finite gradient, step skipped ({count} skipped so far)",
                  RuntimeWarning, stacklevel=3)
