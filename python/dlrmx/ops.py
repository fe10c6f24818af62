"""The native operators (torch.ops.dlrmx.*) and their autograd.

`embedding_bags` is the one entry point the modules use: a fused lookup over many tables, whose
backward either returns weight gradients (dense or sparse COO) or, with a `SparseOptimizer`,
updates the touched rows in place and returns none.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import torch

from dlrmx import _C  # noqa: F401  (loads the library that registers torch.ops.dlrmx)

if TYPE_CHECKING:
    from dlrmx.nn.sparse_optim import SparseOptimizer

POOLING = {"sum": 0, "mean": 1, "max": 2}


@torch.library.register_fake("dlrmx::embedding_bag_forward")
def _forward_fake(weights, ids, offsets, per_sample_weights, padding_idx, pooling, batch_size):
    width = sum(w.shape[1] for w in weights)
    argmax_shape = (batch_size, width) if pooling == POOLING["max"] else (0,)
    return (
        weights[0].new_empty((batch_size, width), dtype=torch.float32),
        ids.new_empty(argmax_shape, dtype=torch.int64),
    )


@torch.library.register_fake("dlrmx::embedding_bag_dense_grad")
def _dense_grad_fake(grad_out, weights, *args):
    return [w.new_empty(w.shape, dtype=torch.float32) for w in weights]


class _EmbeddingBags(torch.autograd.Function):
    """Autograd for the fused lookup. The weights are inputs only in the standard path; in the
    fused path an empty `anchor` that requires grad keeps the backward in the graph."""

    @staticmethod
    def forward(ctx, anchor, ids, offsets, psw, padding_idx, pooling, batch_size, sparse, optimizer,
                *weights):
        out, argmax = torch.ops.dlrmx.embedding_bag_forward(
            list(weights), ids, offsets, psw, padding_idx, pooling, batch_size
        )
        ctx.args = (ids, offsets, psw, padding_idx, pooling, batch_size, argmax)
        ctx.weights, ctx.sparse, ctx.optimizer = weights, sparse, optimizer
        ctx.mark_non_differentiable(argmax)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        weights, (ids, offsets, psw, padding_idx, pooling, batch_size, argmax) = ctx.weights, ctx.args
        head = (None, None, None, _psw_grad(ctx, grad_out)) + (None,) * 5
        if ctx.optimizer is not None:
            ctx.optimizer.apply(grad_out, list(weights), ids, offsets, psw, padding_idx, pooling,
                                batch_size, argmax)
            return head + (None,) * len(weights)
        if not any(ctx.needs_input_grad[9:]):
            return head + (None,) * len(weights)
        args = (grad_out, list(weights), ids, offsets, psw, padding_idx, pooling, batch_size, argmax)
        if ctx.sparse:
            rows, values = torch.ops.dlrmx.embedding_bag_sparse_grad(*args)
            grads = [
                torch.sparse_coo_tensor(r.unsqueeze(0), v, w.shape, is_coalesced=True,
                                        check_invariants=False)
                for r, v, w in zip(rows, values, weights)
            ]
        else:
            grads = torch.ops.dlrmx.embedding_bag_dense_grad(*args)
        grads = [g.to(w.dtype) if w.dtype != g.dtype else g for g, w in zip(grads, weights)]
        return head + tuple(grads)


def _psw_grad(ctx, grad_out):
    """d(loss)/d(per_sample_weights): the dot of each looked-up row with its bag's output
    gradient (0 for padding ids). A rare path, so plain torch ops."""
    if not ctx.needs_input_grad[3]:
        return None
    ids, offsets, _, padding_idx, _, batch_size, _ = ctx.args
    offsets = offsets.long()
    bag = torch.repeat_interleave(torch.arange(offsets.numel() - 1), offsets.diff())
    grad = torch.zeros(ids.numel(), dtype=torch.float32)
    col = 0
    for t, w in enumerate(ctx.weights):
        lo, hi = int(offsets[t * batch_size]), int(offsets[(t + 1) * batch_size])
        table_ids = ids[lo:hi].long()
        out_rows = grad_out[bag[lo:hi] - t * batch_size, col : col + w.shape[1]]
        g = (w.detach()[table_ids].float() * out_rows).sum(1)
        grad[lo:hi] = torch.where(table_ids == padding_idx[t], 0.0, g)
        col += w.shape[1]
    return grad


_NO_ANCHOR = torch.empty(0)


def embedding_bags(
    weights: Sequence[torch.Tensor],
    ids: torch.Tensor,
    offsets: torch.Tensor,
    batch_size: int,
    *,
    pooling: str = "sum",
    per_sample_weights: torch.Tensor | None = None,
    padding_idx: Sequence[int] | None = None,
    sparse: bool = False,
    optimizer: "SparseOptimizer | None" = None,
    anchor: torch.Tensor | None = None,
) -> torch.Tensor:
    """Pooled lookups of T tables in one call: returns [batch_size, sum of dims].

    ids hold every table's ids, table-major; bag (t, b) is ids[offsets[t*B+b]:offsets[t*B+b+1]].
    With `optimizer`, backward updates the weights in place (pass an `anchor` that requires grad
    so autograd calls it); otherwise backward gives each weight a dense or sparse gradient.
    """
    if pooling not in POOLING:
        raise ValueError(f"pooling must be one of {sorted(POOLING)}, got {pooling!r}")
    for name, t in (("ids", ids), ("offsets", offsets)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a tensor, got {type(t).__name__}")
        if t.device.type != "cpu":
            raise TypeError(f"{name} must be on the CPU, got {t.device} (CUDA kernels not built)")
    _check_batch_size(batch_size)
    pad = [-1] * len(weights) if padding_idx is None else [(-1 if p is None else p) for p in padding_idx]
    if anchor is None:
        anchor = _NO_ANCHOR
    return _EmbeddingBags.apply(anchor, ids, offsets, per_sample_weights, pad, POOLING[pooling],
                                batch_size, sparse, optimizer, *weights)


def _check_batch_size(batch_size) -> None:
    """An int in [0, 2^63) (a SymInt under torch.compile passes); the op checks it against the
    offsets without overflow."""
    if isinstance(batch_size, torch.SymInt):
        return
    if isinstance(batch_size, bool) or not isinstance(batch_size, int):
        raise TypeError(f"batch_size must be an int, got {type(batch_size).__name__}")
    if not 0 <= batch_size < 2**63:
        raise ValueError(f"batch_size must be in [0, 2^63), got {batch_size}")


def isa_info() -> dict:
    """ISA levels: compiled, supported by this CPU, and in use."""
    return {
        "compiled": _C.compiled_isas(),
        "supported": _C.supported_isas(),
        "active": _C.active_isa(),
    }


def set_isa(name: str) -> None:
    """Force an ISA level for this process (same as DLRMX_CPU_ISA before the first kernel call)."""
    _C.set_isa(name)
