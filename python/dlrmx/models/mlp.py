"""The MLP layers of DLRM: `Linear` is `nn.Linear` with the ReLU after it folded into the GEMM
(oneDNN's post-op) and each GEMM sent to the library that is fastest at its shape.

Why: torch sends fp32 `addmm` to MKL SGEMM, which on AMD Zen and some Intel CPUs reaches much
less than oneDNN's fp32 matmul at DLRM's shapes (bench/RESULTS.md); bf16 GEMMs already go to
oneDNN, where the fused ReLU saves a pass over every activation. Which library wins depends on
the CPU and the shape, so `plan_gemms` measures both at the model's own shapes at start-up
(`--gemm-library auto`) and stores the choice on each layer; nothing is hard-coded for one CPU.

The weight gradient (g^T x) stays on torch's mm: oneDNN takes transposed operands only through
a copy, which lost at every shape measured.
"""

from __future__ import annotations

import functools
import math
import time
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

LIBRARIES = ("mkl", "onednn")  # mkl: torch's own dispatch (MKL for fp32, oneDNN for bf16)


def _onednn(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, relu: bool) -> torch.Tensor:
    """x @ w^T + b (then ReLU) in one oneDNN primitive."""
    return torch.ops.mkldnn._linear_pointwise(x, w, b, "relu" if relu else "none", [], "")


def _torch(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, relu: bool) -> torch.Tensor:
    y = torch.addmm(b, x, w.t()) if b is not None else torch.mm(x, w.t())
    return y.relu_() if relu else y


class _LinearFn(torch.autograd.Function):
    """y = act(x w^T + b); backward without autograd's per-op bookkeeping: the ReLU mask from
    the saved output, dx on the chosen library, dw and db on torch."""

    @staticmethod
    def forward(ctx, x, w, b, relu: bool, fwd: str, bwd: str):
        y = (_onednn if fwd == "onednn" else _torch)(x, w, b, relu)
        ctx.save_for_backward(x, w, y if relu else None)
        ctx.relu, ctx.bwd, ctx.has_bias = relu, bwd, b is not None
        return y

    @staticmethod
    def backward(ctx, g):
        x, w, y = ctx.saved_tensors
        if ctx.relu:
            g = torch.ops.aten.threshold_backward(g, y, 0)
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = _onednn(g, w.t().contiguous(), None, False) if ctx.bwd == "onednn" else g.mm(w)
        if ctx.needs_input_grad[1]:
            gw = g.t().mm(x)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = g.sum(0)
        return gx, gw, gb, None, None, None


def linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, relu: bool = False,
           fwd: str = "mkl", bwd: str = "mkl") -> torch.Tensor:
    """act(x w^T + b) with the GEMMs on the given libraries; under autocast and for inputs the
    fused op does not take (not 2-D, not contiguous, another dtype, empty) torch's own path.
    oneDNN where it cannot run (off the CPU, bf16 without AVX-512: a plan made on another
    machine, say) falls back to torch's GEMMs, which compute the same product."""
    if (torch.is_autocast_enabled(x.device.type) or x.dim() != 2 or x.dtype != w.dtype
            or not x.is_contiguous() or x.shape[0] == 0):
        y = F.linear(x, w, b)
        return F.relu(y) if relu else y
    if ("onednn" in (fwd, bwd) and not torch.compiler.is_compiling()
            and not (x.is_cpu and onednn_runs(x.dtype))):
        fwd = bwd = "mkl"
    return _LinearFn.apply(x, w, b, relu, fwd, bwd)


torch.fx.wrap("linear")  # one leaf call under torch.fx.symbolic_trace (its checks need tensors)


class Linear(nn.Linear):
    """`nn.Linear` (same parameters, state_dict and init) with an optional ReLU folded in.
    `fwd`/`bwd`: the library of the forward GEMM and of the input-gradient GEMM ("mkl" means
    torch's own choice); `plan_gemms` sets them by measurement."""

    def __init__(self, in_features: int, out_features: int, relu: bool = False,
                 bias: bool = True) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self.relu = relu
        self.fwd = self.bwd = "mkl"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias, self.relu, self.fwd, self.bwd)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, relu={self.relu}, gemm={self.fwd}/{self.bwd}"


def make_mlp(sizes: Sequence[int], last_relu: bool, generator: torch.Generator | None = None
             ) -> nn.Sequential:
    """Layers sizes[0] -> sizes[1] -> ...; ReLU after each (after the last one only if
    last_relu). Reference init: W ~ N(0, sqrt(2/(in+out))), b ~ N(0, sqrt(1/out))."""
    layers = []
    for i in range(len(sizes) - 1):
        n, m = sizes[i], sizes[i + 1]
        lin = Linear(n, m, relu=i < len(sizes) - 2 or last_relu)
        with torch.no_grad():
            lin.weight.normal_(0.0, math.sqrt(2.0 / (m + n)), generator=generator)
            lin.bias.normal_(0.0, math.sqrt(1.0 / m), generator=generator)
        layers.append(lin)
    return nn.Sequential(*layers)


# ---------------------------------------------------------------------- choosing per shape
def _race(candidates: dict, rounds: int = 7) -> dict[str, float]:
    """Best-of-`rounds` seconds of each candidate, run in turn so that all see the same load
    (the minimum: another tenant's load only ever adds time)."""
    for fn in candidates.values():
        fn()  # first call: oneDNN builds its primitive
    best = dict.fromkeys(candidates, math.inf)
    for _ in range(rounds):
        for name, fn in candidates.items():
            t = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t)
    return best


@functools.cache
def onednn_runs(dtype: torch.dtype) -> bool:
    """Whether oneDNN has a kernel for this dtype here (bf16 needs AVX-512 or AMX: on an
    AVX2-only CPU it refuses to build the primitive)."""
    x = torch.ones(2, 2, dtype=dtype)
    try:
        _onednn(x, x, None, True)
    except RuntimeError:
        return False
    return True


def measure_layer(layer, batch: int) -> dict[str, float]:
    """Seconds of each library's forward and input-gradient GEMM at this layer's shape (inf
    where oneDNN cannot run the dtype)."""
    w, b = layer.weight.detach(), None if layer.bias is None else layer.bias.detach()
    x = torch.randn(batch, layer.in_features).to(w.dtype)
    g = torch.randn(batch, layer.out_features).to(w.dtype)
    candidates = {"fwd_mkl": lambda: _torch(x, w, b, layer.relu), "bwd_mkl": lambda: g.mm(w)}
    if onednn_runs(w.dtype):
        candidates["fwd_onednn"] = lambda: _onednn(x, w, b, layer.relu)
        candidates["bwd_onednn"] = lambda: _onednn(g, w.t().contiguous(), None, False)  # as run
    return {"fwd_onednn": math.inf, "bwd_onednn": math.inf, **_race(candidates)}


def choose(times: dict[str, float], margin: float = 0.03) -> tuple[str, str]:
    """(forward library, input-gradient library): oneDNN where it is faster by more than
    `margin`, else torch's own (the measurement's noise must not flip a tie)."""
    pick = [("onednn" if times[f"{k}_onednn"] < (1 - margin) * times[f"{k}_mkl"] else "mkl")
            for k in ("fwd", "bwd")]
    return pick[0], pick[1]


def gemm_sites(module: nn.Module) -> Iterable:
    """Every GEMM `plan_gemms` chooses for: each `Linear`, and what a module lists in its
    `gemm_sites()` (DCN's cross layers). A site has in_features, out_features, relu, weight,
    bias and the settable libraries fwd and bwd."""
    for m in module.modules():
        if isinstance(m, Linear):
            yield m
        elif hasattr(m, "gemm_sites"):
            yield from m.gemm_sites()


def plan_gemms(module: nn.Module, batch: int, library: str = "auto") -> list[dict]:
    """Set the libraries of every GEMM site (`gemm_sites`): measured at `batch` rows (auto), or
    forced ("mkl", "onednn"). Sites of the same shape and dtype are measured once. Returns one
    record per site (shape, choice, and the times when measured) for the run's log."""
    if library not in ("auto", *LIBRARIES):
        raise ValueError(f"--gemm-library must be auto, onednn or mkl, got {library!r}")
    seen: dict[tuple, tuple[tuple[str, str], dict[str, float]]] = {}
    plan = []
    for layer in gemm_sites(module):
        key = (layer.in_features, layer.out_features, layer.relu, layer.weight.dtype)
        if library == "onednn" and not onednn_runs(layer.weight.dtype):
            raise ValueError(f"--gemm-library onednn: oneDNN has no {layer.weight.dtype} matmul "
                             "on this CPU; use --gemm-library auto or mkl")
        if library != "auto":
            choice, times = (library, library), {}
        elif key not in seen:
            times = measure_layer(layer, batch)
            seen[key] = (choose(times), times)
            choice = seen[key][0]
        else:
            choice, times = seen[key]
        layer.fwd, layer.bwd = choice
        plan.append({"shape": [batch, layer.in_features, layer.out_features],
                     "dtype": str(layer.weight.dtype).removeprefix("torch."),
                     "forward": choice[0], "input_grad": choice[1],
                     **{k: round(v * 1e3, 4) for k, v in times.items() if math.isfinite(v)}})
    return plan


def apply_plan(module: nn.Module, plan: list[dict]) -> list[dict]:
    """Set the layers' libraries as `plan_gemms` recorded them (a resumed run computes as the
    interrupted one did)."""
    layers = list(gemm_sites(module))
    if len(plan) != len(layers):
        raise ValueError(f"the GEMM plan has {len(plan)} layers, the model {len(layers)}")
    for layer, p in zip(layers, plan):
        if p["forward"] not in LIBRARIES or p["input_grad"] not in LIBRARIES:
            raise ValueError(f"the GEMM plan names an unknown library: {p}")
        layer.fwd, layer.bwd = p["forward"], p["input_grad"]
        if "onednn" in (layer.fwd, layer.bwd) and not onednn_runs(layer.weight.dtype):
            layer.fwd = layer.bwd = "mkl"  # planned on a CPU with kernels this one lacks
    return plan
