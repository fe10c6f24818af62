"""Each rank's share of the data: its contiguous slice of every global batch (train and
evaluation alike), and the gathering of evaluation outputs for one global AUC."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.distributed as dist

from dlrmx.data.loader import Batch, BatchSource, FileSource, WrappedSource
from dlrmx.distributed.comm import TRAFFIC, ring_bytes
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
    """The dense gradients summed over the ranks in buckets, overlapped with the backward.
    Parameters are grouped, in the reverse of their order (about the order the backward
    finishes them), into buckets of about `bucket_bytes`; a bucket's all-reduce starts
    (asynchronously, in fp32, as one flat tensor) once each of its gradients is accumulated, and
    `wait()` (before the optimizer step) finishes them all. Each rank's loss is its samples'
    loss over the global batch, so the sum is the global batch's gradient."""

    def __init__(self, params: Sequence[torch.nn.Parameter], bucket_bytes: int = 4 << 20) -> None:
        self._buckets: list[list[torch.nn.Parameter]] = [[]]
        size = 0
        for p in reversed(list(params)):
            if size >= bucket_bytes:
                self._buckets.append([])
                size = 0
            self._buckets[-1].append(p)
            size += p.numel() * 4
        self._bucket_of = {id(p): i for i, ps in enumerate(self._buckets) for p in ps}
        self._ready = [0] * len(self._buckets)
        self._pending: list = []
        for p in params:
            p.register_post_accumulate_grad_hook(self._accumulated)

    def _accumulated(self, p: torch.nn.Parameter) -> None:
        i = self._bucket_of[id(p)]
        self._ready[i] += 1
        if self._ready[i] == len(self._buckets[i]):
            self._start(i)

    def _start(self, i: int) -> None:
        ps = self._buckets[i]
        for p in ps:  # a parameter this step did not reach sends zeros
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        flat = torch.cat([p.grad.reshape(-1).float() for p in ps])
        self._pending.append((ps, flat, dist.all_reduce(flat, async_op=True)))
        self._ready[i] = -1  # started

    def wait(self) -> None:
        for i, n in enumerate(self._ready):
            if n > 0:  # some of its gradients never came: send what there is
                self._start(i)
        with TRAFFIC.timed(ring_bytes(sum(flat.numel() * 4 for _, flat, _ in self._pending))):
            for ps, flat, work in self._pending:
                work.wait()
                pos = 0
                for p in ps:
                    p.grad.copy_(flat[pos:pos + p.numel()].view_as(p.grad))
                    pos += p.numel()
        self._pending.clear()
        self._ready = [0] * len(self._buckets)


def sum_over_ranks(value: float) -> float:
    """A per-rank number summed over the job (a NaN anywhere reaches every rank, so all ranks
    stop together)."""
    t = torch.tensor([value], dtype=torch.float64)
    with TRAFFIC.timed(8):  # the loss; also where a rank waits for a slower one
        dist.all_reduce(t)
    return float(t)


def shared(ctx: Dist | None, obj):
    """Rank 0's value of obj on every rank (a start-up choice every rank must make alike)."""
    if ctx is None:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
