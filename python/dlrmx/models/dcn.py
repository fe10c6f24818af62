"""DCNv2's low-rank cross network (the interaction of MLPerf's DLRMv2), as TorchRec's
`torchrec.modules.crossnet.LowRankCrossNet`: same parameter names, shapes and initialization, so
a state_dict moves either way; a batch-major forward (two GEMMs and one fused multiply-add per
layer) that runs in fp32, in bf16, and under CPU autocast; and a float64 reference for tests.

Layer l maps a batch of rows x_l [B, N] (x_0 the input) to

    x_{l+1} = x_0 * (x_l V_l^T W_l^T + b_l) + x_l

with V_l [r, N], W_l [N, r], b_l [N] (TorchRec writes it per sample as x_0 * (W_l (V_l x_l) + b_l)
+ x_l, column vectors). Here that is `linear(x_l, V_l)` ([B, r]), `linear(., W_l, b_l)`
(`dlrmx.models.mlp.linear`, on the GEMM library `plan_gemms` chose for each shape)
([B, N], the bias added by the GEMM) and `torch.addcmul(x_l, x_0, .)`: no per-sample batched
products and no [B, N] temporaries beyond the GEMM output and the new x.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from dlrmx.models import mlp


class LowRankCrossNet(nn.Module):
    """`num_layers` low-rank cross layers on [B, in_features] inputs (DCNv2; TorchRec's module).

    Parameters, as TorchRec 1.8 names and shapes them (state_dict keys `W_kernels.l`,
    `V_kernels.l`, `bias.l`): `W_kernels[l]` [in_features, low_rank] and `V_kernels[l]`
    [low_rank, in_features], Xavier-normal; `bias[l]` [in_features], zeros. They are drawn in
    TorchRec's order (every W, then every V) in fp32 and then cast to `dtype`, so with the same
    `torch.manual_seed` (and no `generator`) the values equal TorchRec's; pass a
    `torch.Generator` for an initialization independent of the global RNG.

    The output has the input's dtype. Without autocast, input and parameters must share a dtype
    (fp32 or bf16); under `torch.autocast("cpu", torch.bfloat16)` with fp32 parameters the
    GEMMs run in bf16 and the residual sum stays in the input's dtype.
    """

    def __init__(self, in_features: int, num_layers: int, low_rank: int = 1, *,
                 generator: torch.Generator | None = None, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        for name, value, low in (("in_features", in_features, 1), ("num_layers", num_layers, 0),
                                 ("low_rank", low_rank, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"LowRankCrossNet: {name} must be an integer >= {low}, "
                                 f"got {value!r}")
        self.in_features, self._num_layers, self._low_rank = in_features, num_layers, low_rank

        def param(shape: tuple[int, ...], xavier: bool) -> nn.Parameter:
            t = torch.empty(shape, device=device, dtype=torch.float32)
            if xavier:
                nn.init.xavier_normal_(t, generator=generator)
            else:
                nn.init.zeros_(t)
            return nn.Parameter(t.to(dtype) if dtype is not None else t)

        n, r = in_features, low_rank
        self.W_kernels = nn.ParameterList([param((n, r), True) for _ in range(num_layers)])
        self.V_kernels = nn.ParameterList([param((r, n), True) for _ in range(num_layers)])
        self.bias = nn.ParameterList([param((n,), False) for _ in range(num_layers)])
        # Each layer's two GEMMs as sites of dlrmx.models.mlp.plan_gemms (the library per
        # shape); plain objects, so the state_dict stays TorchRec's.
        self._gemms = [_Gemm(self, name, layer) for layer in range(num_layers)
                       for name in ("V_kernels", "W_kernels")]

    def gemm_sites(self) -> list["_Gemm"]:
        return list(self._gemms)

    @property
    def num_layers(self) -> int:
        return self._num_layers

    @property
    def low_rank(self) -> int:
        return self._low_rank

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, num_layers={self._num_layers}, "
                f"low_rank={self._low_rank}")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """[B, in_features] -> [B, in_features], in the input's dtype."""
        if input.dim() != 2 or input.shape[1] != self.in_features:
            raise ValueError(f"LowRankCrossNet: input must be [batch, in_features="
                             f"{self.in_features}], got shape {tuple(input.shape)}")
        if self._num_layers and not torch.is_autocast_enabled(input.device.type):
            pdt = self.V_kernels[0].dtype
            if input.dtype != pdt:
                raise ValueError(f"LowRankCrossNet: input has dtype {input.dtype} but the "
                                 f"parameters are {pdt}; cast one to the other, or run under "
                                 "torch.autocast")
        x0 = input.contiguous()  # one copy for a strided input; every GEMM then reads rows
        x = x0
        for layer, (v, w, b) in enumerate(zip(self.V_kernels, self.W_kernels, self.bias)):
            gv, gw = self._gemms[2 * layer], self._gemms[2 * layer + 1]
            u = mlp.linear(mlp.linear(x, v, None, False, gv.fwd, gv.bwd), w, b, False, gw.fwd,
                           gw.bwd)  # x V^T W^T + b, [B, N]
            # x + x0 * u in one pass; under autocast u is bf16 and addcmul promotes it on the
            # fly, so the residual stays in the input's dtype
            x = torch.addcmul(x, x0, u)
        return x


class _Gemm:
    """One GEMM of a cross layer as `plan_gemms` sees a layer: its shape, weight, bias and the
    libraries chosen for it (looked up by name, so a replaced parameter is seen)."""

    relu = False

    def __init__(self, net: LowRankCrossNet, name: str, layer: int) -> None:
        self._net, self._name, self._layer = net, name, layer
        self.fwd = self.bwd = "mkl"

    @property
    def weight(self) -> torch.Tensor:
        return getattr(self._net, self._name)[self._layer]

    @property
    def bias(self) -> torch.Tensor | None:
        return self._net.bias[self._layer] if self._name == "W_kernels" else None

    @property
    def in_features(self) -> int:
        return self.weight.shape[1]

    @property
    def out_features(self) -> int:
        return self.weight.shape[0]


def dcn_reference(x0: torch.Tensor, W: Sequence[torch.Tensor], V: Sequence[torch.Tensor],
                  b: Sequence[torch.Tensor]) -> torch.Tensor:
    """The cross layers written out per sample, in float64 (for tests): for each sample row
    x_0 (a column vector) and each layer l, x <- x_0 * (W_l @ (V_l @ x) + b_l) + x. Differentiable
    (the result is float64; gradients flow back to the given tensors)."""
    if not len(W) == len(V) == len(b):
        raise ValueError(f"dcn_reference: W, V and b need one entry per layer, got {len(W)}, "
                         f"{len(V)} and {len(b)}")
    x0d = x0.double()
    rows = []
    for i in range(x0d.shape[0]):
        base = x0d[i].unsqueeze(1)  # [N, 1]
        x = base
        for wl, vl, bl in zip(W, V, b):
            x = base * (wl.double() @ (vl.double() @ x) + bl.double().unsqueeze(1)) + x
        rows.append(x.squeeze(1))
    return torch.stack(rows) if rows else x0d.clone()
