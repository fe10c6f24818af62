"""Each rank's share of the data: its contiguous slice of every global batch (train and
evaluation alike), and the gathering of evaluation outputs for one global AUC."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.distributed as dist

from dlrmx.data.loader import Batch, BatchSource, FileSource, WrappedSource
from dlrmx.distributed.launch import Dist, split_bounds


def slice_batch(batch: Batch, lo: int, hi: int) -> Batch:
    """Samples [lo, hi) of a table-major batch (any bag sizes)."""
    b = batch.size
    t = (batch.offsets.numel() - 1) // b if b else 0
    off = batch.offsets
    parts, lens = [], []
    for k in range(t):
        a, z = int(off[k * b + lo]), int(off[k * b + hi])
        parts.append(batch.values[a:z])
        lens.append(off[k * b + lo + 1:k * b + hi + 1] - off[k * b + lo:k * b + hi])
    offsets = torch.zeros(t * (hi - lo) + 1, dtype=torch.int64)
    if lens:
        torch.cumsum(torch.cat(lens), 0, out=offsets[1:])
    return Batch(batch.dense[lo:hi], torch.cat(parts) if parts else batch.values[:0], offsets,
                 batch.label[lo:hi], None if batch.prob is None else batch.prob[lo:hi])


class RankSlice(WrappedSource):
    """This rank's slice of each of `source`'s batches (the global batch is --mini-batch-size).
    From the training files a rank reads only its rows; synthetic and random batches are made
    whole (a pure function of the batch index) and sliced."""

    def __init__(self, source: BatchSource, ctx: Dist) -> None:
        super().__init__(source)
        self.ctx = ctx

    def get(self, split: str, index: int, batch_size: int, epoch: int = 0) -> Batch:
        r = self.ctx.rank
        if isinstance(self.source, FileSource):  # the training files: read only the slice
            bounds = split_bounds(self.source.batch_rows(split, index, batch_size), self.ctx.world)
            return self.source.get(split, index, batch_size, epoch, (bounds[r], bounds[r + 1]))
        full = self.source.get(split, index, batch_size, epoch)  # generated data: whole batch
        bounds = split_bounds(full.size, self.ctx.world)
        return slice_batch(full, bounds[r], bounds[r + 1])


def gather_arrays(arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Each array concatenated over the ranks, in rank order, on every rank."""
    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, list(arrays))
    return [np.concatenate([p[i] for p in parts]) for i in range(len(arrays))]


class GradientSum:
    """The dense gradients summed over the ranks, overlapped with the backward: each
    parameter's all-reduce starts (asynchronously, in fp32) as soon as its gradient is
    accumulated, and `wait()` (before the optimizer step) finishes them. Each rank's loss is its
    samples' loss over the global batch, so the sum is the global batch's gradient."""

    def __init__(self, params: Sequence[torch.nn.Parameter]) -> None:
        self._pending: list = []
        for p in params:
            p.register_post_accumulate_grad_hook(self._start)

    def _start(self, p: torch.nn.Parameter) -> None:
        g = p.grad.float() if p.grad.dtype != torch.float32 else p.grad
        self._pending.append((p, g, dist.all_reduce(g, async_op=True)))

    def wait(self) -> None:
        for p, g, work in self._pending:
            work.wait()
            if g is not p.grad:
                p.grad.copy_(g)
        self._pending.clear()


def sum_over_ranks(value: float) -> float:
    """A per-rank number summed over the job (a NaN anywhere reaches every rank, so all ranks
    stop together)."""
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t)


def shared(ctx: Dist | None, obj):
    """Rank 0's value of obj on every rank (a start-up choice every rank must make alike)."""
    if ctx is None:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
