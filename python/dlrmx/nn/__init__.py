"""Drop-in modules backed by dlrmx's fused kernels."""

from dlrmx.nn.collection import EmbeddingBagCollection, TableConfig
from dlrmx.nn.embedding_bag import EmbeddingBag
from dlrmx.nn.sparse_optim import (
    SGD,
    Adagrad,
    RowWiseAdagrad,
    SparseOptimizer,
    SplitSGD,
    combine_fp32,
    make_sparse_optimizer,
    split_fp32,
)

__all__ = [
    "EmbeddingBag", "EmbeddingBagCollection", "TableConfig", "SparseOptimizer", "SGD",
    "SplitSGD", "RowWiseAdagrad", "Adagrad", "make_sparse_optimizer", "split_fp32", "combine_fp32",
]
