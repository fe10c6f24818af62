"""A plain-PyTorch DLRM written to mirror the reference (facebookresearch/dlrm,
dlrm_s_pytorch.py): one `nn.EmbeddingBag(mode="sum", sparse=True)` per table, MLPs as
`nn.Sequential` with ReLU (Sigmoid at the top), the `dot` interaction by `bmm` and lower-triangle
indexing, `nn.BCELoss`, and `torch.optim.SGD` over everything (sparse embedding gradients).

It is the baseline in bench/train.py and the independent reference in tests/test_model.py.
Written from the published description, not copied.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn


def _mlp(sizes: Sequence[int], sigmoid_last: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        n, m = sizes[i], sizes[i + 1]
        lin = nn.Linear(n, m)
        with torch.no_grad():
            lin.weight.normal_(0.0, math.sqrt(2.0 / (m + n)))
            lin.bias.normal_(0.0, math.sqrt(1.0 / m))
        layers.append(lin)
        last = i == len(sizes) - 2
        layers.append(nn.Sigmoid() if (last and sigmoid_last) else nn.ReLU())
    return nn.Sequential(*layers)


class ReferenceDLRM(nn.Module):
    def __init__(self, table_sizes: Sequence[int], dim: int, bottom: Sequence[int],
                 top: Sequence[int], interaction: str = "dot", dcn_num_layers: int = 3,
                 dcn_low_rank_dim: int = 512) -> None:
        super().__init__()
        self.interaction = interaction
        f = len(table_sizes) + 1
        top_in = dim + f * (f - 1) // 2 if interaction == "dot" else dim * f
        if interaction == "dcn":  # DCNv2 low-rank cross layers on [bottom | embeddings]
            r, n = dcn_low_rank_dim, top_in
            self.cross_w = nn.ParameterList([nn.Parameter(torch.randn(n, r) / n) for _ in range(dcn_num_layers)])
            self.cross_v = nn.ParameterList([nn.Parameter(torch.randn(r, n) / n) for _ in range(dcn_num_layers)])
            self.cross_b = nn.ParameterList([nn.Parameter(torch.zeros(n)) for _ in range(dcn_num_layers)])
        self.bot_l = _mlp(bottom, sigmoid_last=False)
        self.top_l = _mlp([top_in, *top], sigmoid_last=True)
        self.emb_l = nn.ModuleList()
        for n in table_sizes:
            eb = nn.EmbeddingBag(n, dim, mode="sum", sparse=True)
            bound = math.sqrt(1.0 / n)
            with torch.no_grad():
                eb.weight.uniform_(-bound, bound)
            self.emb_l.append(eb)
        self.li = torch.tensor([i for i in range(f) for j in range(i)])
        self.lj = torch.tensor([j for i in range(f) for j in range(i)])

    def forward(self, dense: torch.Tensor, ids: Sequence[torch.Tensor],
                offsets: Sequence[torch.Tensor]) -> torch.Tensor:
        """Click probability [B, 1]; ids[k], offsets[k]: table k's bags (reference lS_i, lS_o)."""
        x = self.bot_l(dense)
        ly = [emb(i, o) for emb, i, o in zip(self.emb_l, ids, offsets)]
        if self.interaction == "dot":
            b, d = x.shape
            t = torch.cat([x] + ly, dim=1).view(b, -1, d)
            z = torch.bmm(t, t.transpose(1, 2))
            r = torch.cat([x, z[:, self.li, self.lj]], dim=1)
        else:
            r = torch.cat([x] + ly, dim=1)
        if self.interaction == "dcn":  # per sample, column vectors: x0 * (W (V x) + b) + x
            x0 = r.unsqueeze(2)
            xl = x0
            for w, v, b in zip(self.cross_w, self.cross_v, self.cross_b):
                xl = x0 * (torch.matmul(w, torch.matmul(v, xl)) + b.unsqueeze(1)) + xl
            r = xl.squeeze(2)
        return self.top_l(r)

    def load_from_dlrmx(self, model) -> None:
        """Copy the weights of a dlrmx.models.DLRM with the same architecture."""
        with torch.no_grad():
            for dst, src in ((self.bot_l, model.bottom), (self.top_l, model.top)):
                lins_d = [m for m in dst if isinstance(m, nn.Linear)]
                lins_s = [m for m in src if isinstance(m, nn.Linear)]
                for a, b in zip(lins_d, lins_s, strict=True):
                    a.weight.copy_(b.weight)
                    a.bias.copy_(b.bias)
            for eb, w in zip(self.emb_l, model.embeddings.fp32_weights(), strict=True):
                eb.weight.copy_(w)
            if self.interaction == "dcn":
                c = model.crossnet
                for dst, src in ((self.cross_w, c.W_kernels), (self.cross_v, c.V_kernels),
                                 (self.cross_b, c.bias)):
                    for a, b in zip(dst, src, strict=True):
                        a.copy_(b)


def split_batch(sparse: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """[B, T] ids (one per bag, Criteo style) -> the reference's per-table ids and offsets."""
    b = sparse.shape[0]
    offs = torch.arange(b, dtype=torch.int64)
    return [sparse[:, k].contiguous().long() for k in range(sparse.shape[1])], [offs] * sparse.shape[1]
