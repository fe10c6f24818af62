"""TorchRec 1.8's DLRM on CPU as a TorchRec user would write it: torchrec.models.dlrm.DLRM
(DenseArch / InteractionArch / OverArch) over a FusedEmbeddingBagCollection whose backward
applies EXACT_SGD (FBGEMM's CPU table-batched embedding), torch.optim.SGD for the MLPs; and
MLPerf's DLRMv2 as its reference builds it: torchrec.models.dlrm.DLRM_DCN with row-wise Adagrad
fused into the tables and torch.optim.Adagrad for the dense parameters.

Needs torchrec==1.8.0 (installed --no-deps) and fbgemm-gpu-cpu==1.8.0 (ABI-locked to torch 2.13).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torchrec import EmbeddingBagConfig, KeyedJaggedTensor, PoolingType
from torchrec.models.dlrm import DLRM, DLRM_DCN
from torchrec.optim import RowWiseAdagrad
from torchrec.modules.fused_embedding_modules import FusedEmbeddingBagCollection


def make_torchrec_dlrm(table_sizes: Sequence[int], dim: int, bottom: Sequence[int],
                       top: Sequence[int], lr: float) -> tuple[DLRM, torch.optim.Optimizer]:
    tables = [EmbeddingBagConfig(name=f"t{t}", embedding_dim=dim, num_embeddings=int(n),
                                 feature_names=[f"f{t}"], pooling=PoolingType.SUM)
              for t, n in enumerate(table_sizes)]
    ebc = FusedEmbeddingBagCollection(tables=tables, optimizer_type=torch.optim.SGD,
                                      optimizer_kwargs={"lr": lr}, device=torch.device("cpu"))
    model = DLRM(embedding_bag_collection=ebc, dense_in_features=bottom[0],
                 dense_arch_layer_sizes=list(bottom[1:]), over_arch_layer_sizes=list(top))
    dense = [p for n, p in model.named_parameters() if not n.startswith("sparse_arch")]
    return model, torch.optim.SGD(dense, lr=lr)


def make_torchrec_dlrm_dcn(table_sizes: Sequence[int], dim: int, bottom: Sequence[int],
                           top: Sequence[int], lr: float, dcn: tuple[int, int]
                           ) -> tuple[DLRM_DCN, torch.optim.Optimizer]:
    tables = [EmbeddingBagConfig(name=f"t{t}", embedding_dim=dim, num_embeddings=int(n),
                                 feature_names=[f"f{t}"], pooling=PoolingType.SUM)
              for t, n in enumerate(table_sizes)]
    ebc = FusedEmbeddingBagCollection(tables=tables, optimizer_type=RowWiseAdagrad,
                                      optimizer_kwargs={"lr": lr}, device=torch.device("cpu"))
    model = DLRM_DCN(embedding_bag_collection=ebc, dense_in_features=bottom[0],
                     dense_arch_layer_sizes=list(bottom[1:]), over_arch_layer_sizes=list(top),
                     dcn_num_layers=dcn[0], dcn_low_rank_dim=dcn[1])
    dense = [p for n, p in model.named_parameters() if not n.startswith("sparse_arch")]
    return model, torch.optim.Adagrad(dense, lr=lr)


def to_kjt(values: torch.Tensor, num_tables: int, batch: int,
           bag_sizes: Sequence[int] | None = None) -> KeyedJaggedTensor:
    """dlrmx's table-major jagged ids (one id per bag, or bag_sizes[t] per bag of table t) as
    TorchRec's KeyedJaggedTensor."""
    sizes = torch.tensor(list(bag_sizes) if bag_sizes else [1] * num_tables, dtype=torch.int32)
    return KeyedJaggedTensor(keys=[f"f{t}" for t in range(num_tables)], values=values.long(),
                             lengths=sizes.repeat_interleave(batch))
