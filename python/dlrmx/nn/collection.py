"""`dlrmx.nn.EmbeddingBagCollection`: many tables, one fused lookup per step."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from dlrmx import ops
from dlrmx.nn.sparse_optim import FusedUpdate, SparseOptimizer, combine_fp32
from dlrmx.nn.tables import new_table


@dataclass
class TableConfig:
    num_embeddings: int
    embedding_dim: int
    name: str = ""
    padding_idx: int | None = None


def _as_config(i: int, t) -> TableConfig:
    cfg = t if isinstance(t, TableConfig) else TableConfig(*t)
    if cfg.num_embeddings <= 0 or cfg.embedding_dim <= 0:
        raise ValueError(f"table {i}: num_embeddings and embedding_dim must be > 0, got "
                         f"({cfg.num_embeddings}, {cfg.embedding_dim})")
    if cfg.padding_idx is not None and not 0 <= cfg.padding_idx < cfg.num_embeddings:
        raise ValueError(f"table {i}: padding_idx {cfg.padding_idx} outside [0, {cfg.num_embeddings})")
    return TableConfig(cfg.num_embeddings, cfg.embedding_dim, cfg.name or f"t{i}", cfg.padding_idx)


class EmbeddingBagCollection(nn.Module):
    """T embedding tables (each with its own rows and dim) pooled in one fused call.

    Input is TorchRec's jagged layout: `values` holds all ids, table-major, and `offsets`
    (T*B+1 entries) or `lengths` (T*B entries) delimit the bags. Output is [B, sum of dims];
    `split()` gives per-table views.

    Without `optimizer`, the weights are ordinary parameters that get gradients (dense, or sparse
    COO with `sparse=True`) for any torch optimizer. With `optimizer` (a `dlrmx.nn` sparse
    optimizer), backward applies it to the touched rows in place and no gradient is stored; its
    state is kept in buffers named `state.{t}` and saved in the state_dict.
    """

    def __init__(self, tables: Sequence[TableConfig | tuple], mode: str = "sum", *,
                 optimizer: SparseOptimizer | None = None, sparse: bool = False,
                 init_weights: Sequence[torch.Tensor] | None = None) -> None:
        super().__init__()
        if mode not in ops.POOLING:
            raise ValueError(f"mode must be one of {sorted(ops.POOLING)}, got {mode!r}")
        if not tables:
            raise ValueError("need at least one table")
        self.tables = [_as_config(i, t) for i, t in enumerate(tables)]
        self.mode, self.sparse, self.optimizer = mode, sparse, optimizer
        self.dims = [t.embedding_dim for t in self.tables]
        fp32 = []
        for i, t in enumerate(self.tables):
            w = new_table((t.num_embeddings, t.embedding_dim))
            if init_weights is not None:
                if init_weights[i].shape != w.shape:
                    raise ValueError(f"init_weights[{i}] has shape {tuple(init_weights[i].shape)}, "
                                     f"table {t.name} needs {tuple(w.shape)}")
                w.copy_(init_weights[i].detach())
            else:  # the reference DLRM's initialization
                bound = math.sqrt(1.0 / t.num_embeddings)
                w.uniform_(-bound, bound)
            fp32.append(w)
        self.weights = nn.ParameterList()
        self._state_names: list[str] = []
        for t, w in enumerate(fp32):
            w, state = (w, None) if optimizer is None else optimizer.prepare(w)
            self.weights.append(nn.Parameter(w, requires_grad=optimizer is None))
            if state is not None:
                self.register_buffer(f"state_{t}", state)
                self._state_names.append(f"state_{t}")
        # Fused mode: an empty tensor that requires grad keeps the backward (the update) in the graph.
        self._anchor = torch.zeros(0, requires_grad=optimizer is not None)

    @property
    def num_tables(self) -> int:
        return len(self.tables)

    def optimizer_state(self) -> list[torch.Tensor]:
        return [getattr(self, n) for n in self._state_names]

    def fp32_weights(self) -> list[torch.Tensor]:
        """The exact fp32 weights (split-SGD: upper halves combined with their trails)."""
        if self.optimizer is not None and self.optimizer.name == "split_sgd":
            return [combine_fp32(w, s) for w, s in zip(self.weights, self.optimizer_state())]
        return [w.detach() for w in self.weights]

    def forward(self, values: torch.Tensor, offsets: torch.Tensor | None = None,
                lengths: torch.Tensor | None = None,
                per_sample_weights: torch.Tensor | None = None) -> torch.Tensor:
        if (offsets is None) == (lengths is None):
            raise ValueError("pass exactly one of offsets (T*B+1 entries) or lengths (T*B entries)")
        if offsets is None:
            if not isinstance(lengths, torch.Tensor) or lengths.dim() != 1:
                raise TypeError("lengths must be a 1-D integer tensor")
            offsets = torch.cat([lengths.new_zeros(1), torch.cumsum(lengths, 0)])
        if not isinstance(offsets, torch.Tensor) or offsets.dim() != 1:
            raise TypeError("offsets must be a 1-D integer tensor")
        nbags = offsets.numel() - 1
        if nbags < 0 or nbags % self.num_tables:
            raise ValueError(f"offsets must have T*B+1 entries for T={self.num_tables} tables, "
                             f"got {offsets.numel()}")
        fused = None
        if self.optimizer is not None:
            fused = FusedUpdate(self.optimizer, self.optimizer_state())
        return ops.embedding_bags(
            list(self.weights), values, offsets, nbags // self.num_tables, pooling=self.mode,
            per_sample_weights=per_sample_weights, padding_idx=[t.padding_idx for t in self.tables],
            sparse=self.sparse, optimizer=fused, anchor=self._anchor,
        )

    def split(self, pooled: torch.Tensor) -> list[torch.Tensor]:
        """Per-table views [B, D_t] of a pooled output."""
        return list(torch.split(pooled, self.dims, dim=1))

    def extra_repr(self) -> str:
        opt = "" if self.optimizer is None else f", optimizer={self.optimizer}"
        return f"tables={[(t.num_embeddings, t.embedding_dim) for t in self.tables]}, mode={self.mode!r}{opt}"
