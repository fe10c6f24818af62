"""`dlrmx.nn.EmbeddingBag`: a drop-in replacement for `torch.nn.EmbeddingBag` on the CPU."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from dlrmx import ops
from dlrmx.nn.sparse_optim import FusedUpdate, SparseOptimizer, combine_fp32, split_fp32
from dlrmx.nn.tables import new_table, prepare, table_device, write_fp32

WEIGHT_DTYPES = (torch.float32, torch.bfloat16)


def _unsupported(name: str, value) -> NotImplementedError:
    return NotImplementedError(f"dlrmx.nn.EmbeddingBag does not support {name}={value!r}")


def to_bags(input: torch.Tensor, offsets: torch.Tensor | None, include_last_offset: bool,
            per_sample_weights: torch.Tensor | None = None):
    """torch.nn.EmbeddingBag's input conventions -> (ids, offsets with B+1 entries, B, per-id
    weights or None). One leaf call under torch.fx.symbolic_trace (its checks need values)."""
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"input must be a tensor, got {type(input).__name__}")
    if per_sample_weights is not None and per_sample_weights.shape != input.shape:
        raise ValueError(f"per_sample_weights must have the shape of input {tuple(input.shape)}, "
                         f"got {tuple(per_sample_weights.shape)}")
    if input.dim() == 2:
        if offsets is not None:
            raise ValueError("offsets has to be None when input is 2-D (each row is one bag)")
        batch, length = input.shape
        ids, offsets = input.reshape(-1), torch.arange(batch + 1) * length
    elif input.dim() != 1:
        raise ValueError(f"input has to be 1-D or 2-D, got {input.dim()}-D")
    elif offsets is None or not isinstance(offsets, torch.Tensor) or offsets.dim() != 1:
        raise ValueError("offsets has to be a 1-D tensor when input is 1-D")
    elif include_last_offset:
        if offsets.numel() == 0:
            raise ValueError("with include_last_offset=True, offsets needs at least one entry")
        end = int(offsets[-1])
        ids = input[:end] if end < input.numel() else input  # torch ignores ids past the last offset
        batch = offsets.numel() - 1
    else:
        ids, batch = input, offsets.numel()
        offsets = torch.cat([offsets, torch.tensor([input.numel()], dtype=offsets.dtype)])
    psw = None if per_sample_weights is None else per_sample_weights.reshape(-1)[: ids.numel()]
    return ids, offsets, batch, psw


torch.fx.wrap("to_bags")


def _weight_dtype(dtype, optimizer: SparseOptimizer | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if dtype not in WEIGHT_DTYPES:
        raise _unsupported("dtype", dtype)
    if dtype != torch.float32 and optimizer is not None:
        raise NotImplementedError(
            f"dlrmx.nn.EmbeddingBag: dtype={dtype} with a fused optimizer is not supported; for "
            "bf16 weights with exact fp32 updates use optimizer=dlrmx.nn.SplitSGD(...) with fp32")
    return dtype


class EmbeddingBag(nn.EmbeddingBag):
    """Same constructor, defaults, forward and state_dict as `torch.nn.EmbeddingBag`, backed by
    dlrmx's fused kernels; a subclass of it, so code that checks the type (DDP's sparse
    gradients, for one) treats it as one. Weights: fp32 or bf16 (`dtype=` or `.to()`; bf16 in,
    bf16 out, as torch); `device='meta'` builds it without memory (`.to_empty(device='cpu')` and
    `reset_parameters()` materialize it).

    Extra keyword: `optimizer=` (a `dlrmx.nn` sparse optimizer) applies that optimizer inside
    backward, in place, instead of producing `weight.grad`. Its state is kept out of
    `state_dict()` (which stays exactly torch's: `weight` only), as torch keeps an optimizer's
    state out of the model's: save it with `optimizer_state_dict()` and restore it with
    `load_optimizer_state_dict()`. With split-SGD the weight is stored as bf16 upper halves
    plus an int16 trail; `state_dict()` shows (and loads) it as the exact fp32 weight."""

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
        nn.Module.__init__(self)  # not torch's __init__: it would allocate and initialize a table
        if max_norm is not None:
            raise _unsupported("max_norm", max_norm)
        if scale_grad_by_freq:
            raise _unsupported("scale_grad_by_freq", scale_grad_by_freq)
        device = table_device(device, "dlrmx.nn.EmbeddingBag")
        dtype = _weight_dtype(dtype, optimizer)
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
        self._state: list[str] = []  # buffers the fused update writes, in the op's order
        if _weight is None:
            self.weight = nn.Parameter(new_table((num_embeddings, embedding_dim), dtype, device=device))
            self._init_plain(nn.init.normal_)  # before the fused optimizer takes the table over
        else:
            if list(_weight.shape) != [num_embeddings, embedding_dim]:
                raise ValueError("Shape of weight does not match num_embeddings and embedding_dim")
            self.weight = nn.Parameter(_weight)
        if optimizer is not None:
            self._init_fused(optimizer)
        self._anchor = torch.zeros(0, requires_grad=optimizer is not None)

    # ---- fused optimizer state ----------------------------------------------------------------

    @property
    def _split(self) -> bool:
        return self.optimizer is not None and self.optimizer.name == "split_sgd"

    def _init_fused(self, optimizer: SparseOptimizer) -> None:
        """Fused mode: the weight takes no gradient; the optimizer state becomes a non-persistent
        buffer (split-SGD: the weight turns bf16 and its lower halves are the buffer `trail`)."""
        weight, state = prepare(optimizer, self.weight.data.float())
        self.weight = nn.Parameter(weight, requires_grad=False)
        if state is not None:
            name = "trail" if self._split else "optimizer_state"
            self.register_buffer(name, state, persistent=False)
            self._state = [name]
        if self._split:
            self.register_state_dict_post_hook(_weight_as_fp32)
            self.register_load_state_dict_pre_hook(_load_fp32_weight)

    def _fused_state(self) -> list[torch.Tensor]:
        return [getattr(self, name) for name in self._state]

    def optimizer_state_dict(self) -> dict[str, torch.Tensor]:
        """The fused optimizer's state ({} without one, or with SGD and split-SGD, whose trail
        is part of the fp32 `weight` in `state_dict()`): save it beside the state_dict."""
        return {name: getattr(self, name) for name in self._state if name != "trail"}

    def load_optimizer_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what `optimizer_state_dict()` returned, checking names and shapes."""
        load_state_tensors(self.optimizer_state_dict(), state, "dlrmx.nn.EmbeddingBag")

    # ---- parameters -------------------------------------------------------------------------

    def reset_parameters(self) -> None:
        """N(0, 1) as torch, padding row zero; resets the fused optimizer's state too."""
        self._reset(nn.init.normal_)

    def _init_plain(self, init: Callable[[torch.Tensor], object]) -> None:
        with torch.no_grad():
            init(self.weight)
            self._fill_padding_idx_with_zero()

    def _reset(self, init: Callable[[torch.Tensor], object]) -> None:
        if self.weight.is_meta:
            return
        if self.optimizer is None:
            self._init_plain(init)
            return
        fp32 = torch.empty(self.weight.shape, dtype=torch.float32)
        init(fp32)
        if self.padding_idx is not None:
            fp32[self.padding_idx] = 0
        state = self._fused_state()
        write_fp32(self.optimizer, self.weight, state[0] if state else None, fp32)

    def fp32_weight(self) -> torch.Tensor:
        """The exact fp32 weight (split-SGD: upper halves combined with the trail)."""
        if self._split:
            return combine_fp32(self.weight, self.trail)
        return self.weight.detach().float()

    # ---- forward ------------------------------------------------------------------------------

    def forward(self, input: torch.Tensor, offsets: torch.Tensor | None = None,
                per_sample_weights: torch.Tensor | None = None) -> torch.Tensor:
        # The parameter itself for Python-level decisions (under torch.fx tracing `self.weight`
        # is a Proxy, whose is_meta or dtype cannot steer an `if`).
        weight = self._parameters["weight"]
        if weight.is_meta:  # shapes only: torch's meta kernels give torch's shapes and errors
            out = F.embedding_bag(input, self.weight, offsets, mode=self.mode,
                                  per_sample_weights=per_sample_weights,
                                  include_last_offset=self.include_last_offset,
                                  padding_idx=self.padding_idx)
            return out.float() if self._split else out
        ids, offsets, batch, psw = to_bags(input, offsets, self.include_last_offset,
                                           per_sample_weights)
        out = ops.embedding_bags(
            [self.weight], ids, offsets, batch, pooling=self.mode, per_sample_weights=psw,
            padding_idx=[self.padding_idx], sparse=self.sparse,
            optimizer=None if self.optimizer is None else FusedUpdate(self.optimizer, self._fused_state()),
            anchor=self._anchor,
        )
        # The kernels accumulate in fp32; torch returns the weight's dtype (split-SGD's bf16 is
        # storage for an fp32 weight, so it stays fp32).
        if weight.dtype != torch.float32 and not self._split:
            out = out.to(weight.dtype)
        return out

    def __prepare_scriptable__(self):
        raise ops.script_unsupported(self)

    def extra_repr(self) -> str:
        s = f"{self.num_embeddings}, {self.embedding_dim}, mode={self.mode!r}"
        if self.padding_idx is not None:
            s += f", padding_idx={self.padding_idx}"
        if self.sparse:
            s += ", sparse=True"
        if self.include_last_offset:
            s += ", include_last_offset=True"
        if self.optimizer is not None:
            s += f", optimizer={self.optimizer}"
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


def _weight_as_fp32(module: EmbeddingBag, state_dict, prefix: str, local_metadata) -> None:
    """state_dict post-hook of a split-SGD bag: `weight` as the exact fp32 values, so the
    state_dict loads into torch.nn.EmbeddingBag (and back) without losing the trail."""
    key = prefix + "weight"
    if key in state_dict:
        state_dict[key] = combine_fp32(module.weight, module.trail)


def _load_fp32_weight(module: EmbeddingBag, state_dict, prefix: str, local_metadata, strict,
                      missing_keys, unexpected_keys, error_msgs) -> None:
    """load_state_dict pre-hook of a split-SGD bag: an fp32 `weight` is split into the bf16
    upper halves (loaded as the parameter) and the trail (written here), bit for bit; a bf16
    one gets a zero trail. Other shapes and types are left to torch's checks."""
    key = prefix + "weight"
    value = state_dict.get(key)
    if isinstance(value, torch.Tensor) and value.shape == module.weight.shape \
            and value.dtype in WEIGHT_DTYPES:
        upper, trail = split_fp32(value.float())
        state_dict[key] = upper
        module.trail.copy_(trail)


def load_state_tensors(mine: dict[str, torch.Tensor], given: dict[str, torch.Tensor],
                       who: str) -> None:
    """Copy `given` into the tensors of `mine` (same names, same shapes), all checked first."""
    if not isinstance(given, dict) or set(given) != set(mine):
        got = sorted(given) if isinstance(given, dict) else type(given).__name__
        raise ValueError(f"{who}.load_optimizer_state_dict: expected the keys {sorted(mine)}, "
                         f"got {got}")
    for name, t in mine.items():
        value = given[name]
        if not isinstance(value, torch.Tensor) or value.shape != t.shape:
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(f"{who}.load_optimizer_state_dict: {name} must have shape "
                             f"{tuple(t.shape)}, got {got}")
    for name, t in mine.items():
        t.copy_(given[name])
