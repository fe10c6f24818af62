"""`dlrmx.models.DLRM`: bottom MLP, fused EmbeddingBagCollection, interaction, top MLP; with
interaction "dcn" the DLRMv2 of MLPerf (DCNv2 cross layers, as TorchRec's DLRM_DCN).

Same architecture and initialization as the reference DLRM (facebookresearch/dlrm): ReLU after
every bottom layer and every top layer but the last; the last top layer yields a logit (the
reference applies Sigmoid there; we keep the logit so the loss can be computed stably, and
`predict_proba` applies the sigmoid).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from dlrmx import ops
from dlrmx.models.dcn import LowRankCrossNet
from dlrmx.models.interaction import cat_interaction, dot_interaction, interaction_width
from dlrmx.models.mlp import make_mlp
from dlrmx.nn import EmbeddingBagCollection, SparseOptimizer

torch.fx.wrap("dot_interaction")  # leaf calls under torch.fx.symbolic_trace (see interaction.py)
torch.fx.wrap("cat_interaction")


def gemm_widths(bottom_mlp: Sequence[int], top_mlp: Sequence[int], interaction: str,
                embedding_dim: int, num_tables: int, dcn_num_layers: int = 3,
                dcn_low_rank_dim: int = 512) -> list[list[int]]:
    """The widths of the DLRM's chains of GEMMs: the bottom MLP, each DCN cross layer (in ->
    rank -> in, for interaction "dcn") and the top MLP from the interaction's width. What the
    start-up measurements and the benchmark's FLOP count need to know of a model's shape."""
    top_in = interaction_width(interaction, embedding_dim, num_tables)
    cross = [[top_in, dcn_low_rank_dim, top_in]] * dcn_num_layers if interaction == "dcn" else []
    return [list(bottom_mlp), *cross, [top_in, *top_mlp]]


class DLRM(nn.Module):
    """The DLRM of Naumov et al. (2019) with dlrmx's fused kernels.

    bottom_mlp: sizes including the input (e.g. [13, 512, 256, 64, 16]); its output size must
    equal embedding_dim. top_mlp: sizes after the interaction (e.g. [512, 256, 1]); the input size
    is derived from the interaction, as in the reference's --arch-mlp-top. The embedding tables
    are trained by `sparse_optimizer` inside the backward (None: ordinary parameters).
    `make_embeddings`: the collection's class (or a factory with its arguments), e.g. a
    `dlrmx.cache.CachedEmbeddingBagCollection` with its hot rows bound.
    """

    def __init__(self, table_sizes: Sequence[int], embedding_dim: int, bottom_mlp: Sequence[int],
                 top_mlp: Sequence[int], interaction: str = "dot",
                 sparse_optimizer: SparseOptimizer | None = None, seed: int | None = None,
                 embedding_init: Sequence[torch.Tensor] | None = None,
                 dcn_num_layers: int = 3, dcn_low_rank_dim: int = 512,
                 make_embeddings: Callable[..., nn.Module] = EmbeddingBagCollection) -> None:
        super().__init__()
        if bottom_mlp[-1] != embedding_dim:
            raise ValueError(
                f"bottom MLP output size {bottom_mlp[-1]} (last entry of --arch-mlp-bot) must equal "
                f"the embedding size {embedding_dim} (--arch-sparse-feature-size): make them equal")
        if top_mlp[-1] != 1:
            raise ValueError(f"top MLP must end in 1 output (last entry of --arch-mlp-top), got {top_mlp[-1]}")
        gen = None if seed is None else torch.Generator().manual_seed(seed)
        self.interaction = interaction
        self.num_tables, self.embedding_dim = len(table_sizes), embedding_dim
        top_in = interaction_width(interaction, embedding_dim, len(table_sizes))
        self.bottom = make_mlp(list(bottom_mlp), last_relu=True, generator=gen)
        self.top = make_mlp([top_in, *top_mlp], last_relu=False, generator=gen)
        # DLRMv2 (interaction "dcn"): DCNv2 cross layers over [bottom output | embeddings]
        self.crossnet = (LowRankCrossNet(top_in, dcn_num_layers, dcn_low_rank_dim, generator=gen)
                         if interaction == "dcn" else None)
        # the reference init, from our generator, filled into the tables in place
        self.embeddings = make_embeddings(
            [(int(n), embedding_dim) for n in table_sizes], mode="sum",
            optimizer=sparse_optimizer, init_weights=embedding_init, generator=gen)

    def forward(self, dense: torch.Tensor, values: torch.Tensor, offsets: torch.Tensor
                ) -> torch.Tensor:
        """Click logits [B]. dense: [B, 13]; values/offsets: the jagged (table-major) ids."""
        x = self.bottom(dense.to(self.bottom[0].weight.dtype))  # bf16 MLPs: the one input cast
        emb = self.embeddings(values, offsets=offsets)
        if self.interaction == "dot":
            z = dot_interaction(x, emb)
        else:
            z = cat_interaction(x, emb)
        if self.crossnet is not None:
            z = self.crossnet(z)
        return self.top(z).squeeze(1)

    def __prepare_scriptable__(self):
        raise ops.script_unsupported(self)

    @torch.no_grad()
    def predict_proba(self, dense: torch.Tensor, values: torch.Tensor, offsets: torch.Tensor
                      ) -> torch.Tensor:
        return torch.sigmoid(self.forward(dense, values, offsets).float())

    def dense_parameters(self) -> list[nn.Parameter]:
        """The MLP parameters (trained by a torch optimizer; the tables train themselves)."""
        cross = [] if self.crossnet is None else list(self.crossnet.parameters())
        return [*self.bottom.parameters(), *cross, *self.top.parameters()]
