"""The collectives of the sharded embeddings, as autograd functions: what the forward sends,
the backward sends back the other way. Every rank calls each of them at the same point of its
forward and backward (the graphs are the same on every rank), with gloo over TCP or MPI."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.distributed as dist


def all_to_all(x: torch.Tensor, send: Sequence[int], recv: Sequence[int]) -> torch.Tensor:
    """A flat tensor's consecutive pieces of send[j] elements to rank j; returns what each rank
    sent here, recv[s] elements from rank s, in rank order (no autograd)."""
    out = x.new_empty(int(sum(recv)))
    dist.all_to_all_single(out, x.contiguous(), [int(n) for n in recv], [int(n) for n in send])
    return out


class AllToAll(torch.autograd.Function):
    """all_to_all with the reverse exchange of the gradient in the backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, send: Sequence[int], recv: Sequence[int]) -> torch.Tensor:
        ctx.sizes = (send, recv)
        return all_to_all(x, send, recv)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        send, recv = ctx.sizes
        return all_to_all(grad, recv, send), None, None


class SliceOfGlobal(torch.autograd.Function):
    """Rows [lo, hi) of a result every rank computed over the global batch (a replicated
    table's lookups). Backward: every rank's slice gradient goes to every rank, so each rank
    holds the gradient of the whole global batch and applies the same update."""

    @staticmethod
    def forward(ctx, full: torch.Tensor, lo: int, hi: int, rows: Sequence[int]) -> torch.Tensor:
        ctx.shape, ctx.rows = full.shape, rows
        return full[lo:hi].clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        width = ctx.shape[1]
        world = len(ctx.rows)
        flat = grad.contiguous().reshape(-1)
        got = all_to_all(flat.repeat(world), [flat.numel()] * world,
                         [n * width for n in ctx.rows])
        return got.reshape(ctx.shape), None, None, None
