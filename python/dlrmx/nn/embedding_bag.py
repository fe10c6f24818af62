"""`dlrmx.nn.EmbeddingBag`: a drop-in replacement for `torch.nn.EmbeddingBag` on the CPU."""

from __future__ import annotations

import torch
from torch import nn

from dlrmx import ops
from dlrmx.nn.sparse_optim import FusedUpdate, SparseOptimizer
from dlrmx.nn.tables import new_table


def _unsupported(name: str, value) -> NotImplementedError:
    return NotImplementedError(f"dlrmx.nn.EmbeddingBag does not support {name}={value!r}")


def to_bags(input: torch.Tensor, offsets: torch.Tensor | None, include_last_offset: bool):
    """torch.nn.EmbeddingBag's input conventions -> (ids, offsets with B+1 entries, B)."""
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"input must be a tensor, got {type(input).__name__}")
    if input.dim() == 2:
        if offsets is not None:
            raise ValueError("offsets has to be None when input is 2-D (each row is one bag)")
        batch, length = input.shape
        return input.reshape(-1), torch.arange(batch + 1) * length, batch
    if input.dim() != 1:
        raise ValueError(f"input has to be 1-D or 2-D, got {input.dim()}-D")
    if offsets is None or not isinstance(offsets, torch.Tensor) or offsets.dim() != 1:
        raise ValueError("offsets has to be a 1-D tensor when input is 1-D")
    if include_last_offset:
        if offsets.numel() == 0:
            raise ValueError("with include_last_offset=True, offsets needs at least one entry")
        end = int(offsets[-1])
        if end < input.numel():  # torch ignores ids past the last offset
            input = input[:end]
        return input, offsets, offsets.numel() - 1
    end = torch.tensor([input.numel()], dtype=offsets.dtype)
    return input, torch.cat([offsets, end]), offsets.numel()


class EmbeddingBag(nn.Module):
    """Same constructor, defaults, forward and state_dict as `torch.nn.EmbeddingBag`, backed by
    dlrmx's fused kernels. Extra keyword: `optimizer=` (a `dlrmx.nn` sparse optimizer) applies
    that optimizer inside backward, in place, instead of producing `weight.grad`; its state is
    kept in buffers (`optimizer_state`, or `trail` for split-SGD, whose weight is then bf16)."""

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        max_norm: float | None = None,
        norm_type: float = 2.0,
        scale_grad_by_freq: bool = False,
        mode: str = "mean",
        sparse: bool = False,
        _weight: torch.Tensor | None = None,
        include_last_offset: bool = False,
        padding_idx: int | None = None,
        device=None,
        dtype=None,
        *,
        optimizer: SparseOptimizer | None = None,
    ) -> None:
        super().__init__()
        if max_norm is not None:
            raise _unsupported("max_norm", max_norm)
        if scale_grad_by_freq:
            raise _unsupported("scale_grad_by_freq", scale_grad_by_freq)
        if device is not None and torch.device(device).type != "cpu":
            raise _unsupported("device", device)
        if dtype is not None and dtype != torch.float32:
            raise _unsupported("dtype", dtype)
        if mode not in ops.POOLING:
            raise ValueError(f"mode has to be one of sum, mean or max, got {mode!r}")
        if mode == "max" and sparse:
            raise ValueError("max mode does not support sparse weights")
        if padding_idx is not None:
            if not -num_embeddings <= padding_idx < num_embeddings:
                raise ValueError(f"padding_idx must be within [-{num_embeddings}, {num_embeddings})")
            padding_idx = padding_idx % num_embeddings
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.max_norm, self.norm_type, self.scale_grad_by_freq = max_norm, norm_type, scale_grad_by_freq
        self.mode, self.sparse, self.include_last_offset = mode, sparse, include_last_offset
        self.padding_idx, self.optimizer = padding_idx, optimizer
        if _weight is None:
            self.weight = nn.Parameter(new_table((num_embeddings, embedding_dim)))
            self.reset_parameters()
        else:
            if list(_weight.shape) != [num_embeddings, embedding_dim]:
                raise ValueError("Shape of weight does not match num_embeddings and embedding_dim")
            self.weight = nn.Parameter(_weight)
        if optimizer is not None:
            self._init_fused(optimizer)
        self._anchor = torch.zeros(0, requires_grad=optimizer is not None)

    def _init_fused(self, optimizer: SparseOptimizer) -> None:
        """Fused mode: the weight takes no gradient; optimizer state becomes a buffer (split-SGD:
        the weight turns bf16 and its lower halves are the buffer `trail`)."""
        weight, state = optimizer.prepare(self.weight.data)
        self.weight = nn.Parameter(weight, requires_grad=False)
        name = "trail" if optimizer.name == "split_sgd" else "optimizer_state"
        if state is not None:
            self.register_buffer(name, state)
        self._state = [] if state is None else [name]

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight)
        if self.padding_idx is not None:
            with torch.no_grad():
                self.weight[self.padding_idx].fill_(0)

    def forward(self, input: torch.Tensor, offsets: torch.Tensor | None = None,
                per_sample_weights: torch.Tensor | None = None) -> torch.Tensor:
        ids, offsets, batch = to_bags(input, offsets, self.include_last_offset)
        if per_sample_weights is not None and per_sample_weights.shape != input.shape:
            raise ValueError(f"per_sample_weights must have the shape of input {tuple(input.shape)}, "
                             f"got {tuple(per_sample_weights.shape)}")
        psw = None if per_sample_weights is None else per_sample_weights.reshape(-1)[: ids.numel()]
        return ops.embedding_bags(
            [self.weight], ids, offsets, batch, pooling=self.mode, per_sample_weights=psw,
            padding_idx=[self.padding_idx], sparse=self.sparse,
            optimizer=None if self.optimizer is None else FusedUpdate(
                self.optimizer, [getattr(self, name) for name in self._state]),
            anchor=self._anchor,
        )

    def extra_repr(self) -> str:
        s = f"{self.num_embeddings}, {self.embedding_dim}, mode={self.mode!r}"
        if self.padding_idx is not None:
            s += f", padding_idx={self.padding_idx}"
        if self.sparse:
            s += ", sparse=True"
        if self.include_last_offset:
            s += ", include_last_offset=True"
        return s

    @classmethod
    def from_pretrained(cls, embeddings: torch.Tensor, freeze: bool = True, max_norm=None,
                        norm_type: float = 2.0, scale_grad_by_freq: bool = False, mode: str = "mean",
                        sparse: bool = False, include_last_offset: bool = False,
                        padding_idx: int | None = None) -> "EmbeddingBag":
        if embeddings.dim() != 2:
            raise ValueError("Embeddings parameter is expected to be 2-dimensional")
        rows, cols = embeddings.shape
        bag = cls(rows, cols, max_norm, norm_type, scale_grad_by_freq, mode, sparse, embeddings,
                  include_last_offset, padding_idx)
        bag.weight.requires_grad = not freeze
        return bag
