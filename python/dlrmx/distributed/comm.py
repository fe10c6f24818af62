"""The collectives of the sharded embeddings, and the time spent in them.

`AllToAll` is an autograd function: what the forward sends, the backward sends back the other
way. Every rank calls it at the same point of its forward and backward (the graphs are the same
on every rank), with gloo over TCP or MPI. `TRAFFIC` adds up the seconds each rank is blocked
in a collective and the bytes it sends: the trainer reports the split of a step into compute
and communication from it."""

from __future__ import annotations

import contextlib
import time
from typing import Sequence

import torch
import torch.distributed as dist


class Traffic:
    """Seconds blocked in collectives (the transfer itself and any wait for a slower rank) and
    bytes this rank sent, since the last reset. Paused while evaluating."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.seconds, self.bytes, self._on = 0.0, 0, True

    def add(self, seconds: float, nbytes: int) -> None:
        if self._on:
            self.seconds += seconds
            self.bytes += int(nbytes)

    @contextlib.contextmanager
    def timed(self, nbytes: int = 0):
        t = time.perf_counter()
        try:
            yield
        finally:
            self.add(time.perf_counter() - t, nbytes)

    @contextlib.contextmanager
    def paused(self):
        on, self._on = self._on, False
        try:
            yield
        finally:
            self._on = on


TRAFFIC = Traffic()


def all_to_all(x: torch.Tensor, send: Sequence[int], recv: Sequence[int]) -> torch.Tensor:
    """A flat tensor's consecutive pieces of send[j] elements to rank j; returns what each rank
    sent here, recv[s] elements from rank s, in rank order (no autograd)."""
    out = x.new_empty(int(sum(recv)))
    me = dist.get_rank()
    with TRAFFIC.timed((sum(send) - send[me]) * x.element_size()):
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


def ring_bytes(nbytes: int) -> int:
    """What one rank sends in a ring all-reduce of nbytes: 2 (w - 1) / w of them."""
    w = dist.get_world_size()
    return 2 * (w - 1) * nbytes // w
