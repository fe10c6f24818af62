"""`dlrmx.optim.SplitSGD`: SGD for bf16 parameters that keeps exact fp32 master weights."""

from __future__ import annotations

from typing import Iterable

import torch

from dlrmx import native_ops
from dlrmx.nn.sparse_optim import split_fp32
from dlrmx.optim._common import FusedOptimizer, check_hyper


class SplitSGD(FusedOptimizer):
    """Split-SGD (Kalamkar et al., SC'20) for dense parameters.

    Each parameter is a bf16 tensor holding the upper 16 bits of its fp32 master weight; the
    optimizer state holds the lower 16 bits ("trail"), so master weights cost no extra memory
    over fp32 and forward/backward run on bf16. A step rebuilds the fp32 weight, applies
    p -= lr * (g + weight_decay * p), and splits it again by truncation: the rebuilt weights
    equal fp32 SGD's bit for bit.

    Pass fp32 parameters to have them converted in place to bf16 (trail = their lower bits);
    bf16 parameters start with a zero trail. Momentum is not supported (it would need an fp32
    buffer per weight, which is what split-SGD exists to avoid).
    """

    def __init__(self, params: Iterable, lr: float = 0.01, momentum: float = 0.0,
                 weight_decay: float = 0.0, skip_nonfinite: bool = False) -> None:
        if momentum != 0:
            raise ValueError("SplitSGD does not support momentum (it would need an fp32 buffer per "
                             "weight); use momentum=0, or Lamb")
        check_hyper("SplitSGD", lr=lr, weight_decay=weight_decay)
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay), skip_nonfinite)
        for group in self.param_groups:
            for p in group["params"]:
                if p.dtype == torch.float32:
                    upper, trail = split_fp32(p.data)
                    p.data = upper
                elif p.dtype == torch.bfloat16:
                    trail = torch.zeros(p.shape, dtype=torch.int16, device=p.device)
                else:
                    raise TypeError(f"SplitSGD: parameters must be float32 or bfloat16, got {p.dtype}")
                self.state[p]["trail"] = trail

    def load_state_dict(self, state_dict: dict) -> None:
        """As torch's, but the int16 trails are restored as they are: torch casts every state
        tensor of a floating-point parameter to the parameter's dtype (int16 -> bf16 here),
        which would corrupt the master weights' lower halves."""
        trails = {k: v["trail"] for k, v in state_dict["state"].items() if "trail" in v}
        rest = {k: {n: x for n, x in v.items() if n != "trail"} for k, v in state_dict["state"].items()}
        super().load_state_dict({**state_dict, "state": rest})
        params = [p for group in self.param_groups for p in group["params"]]
        for k, trail in trails.items():
            p = params[int(k)]
            if trail.dtype != torch.int16 or trail.shape != p.shape:
                raise ValueError(f"SplitSGD.load_state_dict: trail {k} must be int16 of shape "
                                 f"{tuple(p.shape)}, got {trail.dtype} {tuple(trail.shape)}")
            self.state[p]["trail"] = trail.to(p.device, copy=True)

    hyper = ("lr", "weight_decay")

    def _update(self, group: dict, params: list[torch.Tensor]) -> None:
        native_ops.kernels(params[0].device).split_sgd_step(
            params, [self.state[p]["trail"] for p in params], [p.grad for p in params],
            float(group["lr"]), group["weight_decay"])
