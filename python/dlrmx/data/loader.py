"""Batches for the trainer: the training-format files (memory-mapped; see dlrmx.data.format),
the planted-teacher synthetic data, and the reference's random data; prefetched by background
threads."""

from __future__ import annotations

import queue
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from dlrmx.data.format import SPLITS as SPLIT_NAMES
from dlrmx.data.format import DataFormatError, open_split, read_spec
from dlrmx.data.synthetic import NUM_DENSE, SyntheticCriteo


@dataclass
class Batch:
    """One mini-batch in the layout the model takes (ids table-major, one id per bag)."""

    dense: torch.Tensor    # [B, 13] float32
    values: torch.Tensor   # [T*B] int32/int64, table-major
    offsets: torch.Tensor  # [T*B + 1] int64
    label: torch.Tensor    # [B] float32
    prob: torch.Tensor | None = None  # [B] teacher probability (synthetic data only)

    @property
    def size(self) -> int:
        return self.dense.shape[0]


_OFFSETS: dict[int, torch.Tensor] = {}


def make_batch(dense: np.ndarray, sparse: np.ndarray, label: np.ndarray,
               prob: np.ndarray | None = None) -> Batch:
    """[B, 13] dense, [B, T] ids, [B] labels (NumPy) -> a Batch (ids transposed table-major)."""
    b, t = sparse.shape
    n = b * t
    offsets = _OFFSETS.get(n)
    if offsets is None:  # one id per bag: offsets are 0..T*B, shared by every batch of this size
        offsets = _OFFSETS.setdefault(n, torch.arange(n + 1, dtype=torch.int64))
    values = torch.from_numpy(np.ascontiguousarray(sparse.T).reshape(-1))
    return Batch(torch.from_numpy(np.ascontiguousarray(dense, dtype=np.float32)), values, offsets,
                 torch.from_numpy(np.ascontiguousarray(label, dtype=np.float32)),
                 None if prob is None else torch.from_numpy(prob))


# ---------------------------------------------------------------------------------- sources
class BatchSource:
    """Batch i of a split, as a pure function of i (so any position can be resumed)."""

    table_sizes: list[int]

    def num_batches(self, split: str, batch_size: int) -> int:
        raise NotImplementedError

    def get(self, split: str, index: int, batch_size: int, epoch: int = 0) -> Batch:
        raise NotImplementedError


class SyntheticSource(BatchSource):
    """The planted-teacher data. Train is unbounded (an epoch is `train_batches` batches);
    val/test are fixed sets of `eval_samples` samples."""

    def __init__(self, gen: SyntheticCriteo, train_batches: int, eval_samples: int) -> None:
        self.gen, self.train_batches, self.eval_samples = gen, train_batches, eval_samples
        self.table_sizes = gen.sizes

    def num_batches(self, split: str, batch_size: int) -> int:
        if split == "train":
            return self.train_batches
        return -(-self.eval_samples // batch_size)

    def get(self, split: str, index: int, batch_size: int, epoch: int = 0) -> Batch:
        if split == "train":  # every epoch sees new samples from the same distribution
            index = epoch * self.train_batches + index
            size = batch_size
        else:
            size = min(batch_size, self.eval_samples - index * batch_size)
        sb = self.gen.batch(split, index, size)
        return make_batch(sb.dense, sb.sparse, sb.label, sb.prob)


class RandomSource(BatchSource):
    """The reference's `--data-generation random`: uniform dense features, uniform ids, random
    labels (for speed tests; nothing to learn)."""

    def __init__(self, table_sizes: Sequence[int], num_batches: int, seed: int) -> None:
        self.table_sizes, self.n, self.seed = list(table_sizes), num_batches, seed

    def num_batches(self, split: str, batch_size: int) -> int:
        return self.n if split == "train" else max(1, self.n // 10)

    def get(self, split: str, index: int, batch_size: int, epoch: int = 0) -> Batch:
        rng = np.random.default_rng([self.seed, SPLIT_NAMES.index(split), epoch, index])
        dense = rng.random((batch_size, NUM_DENSE), dtype=np.float32)
        high = np.asarray(self.table_sizes, dtype=np.int64)
        sparse = rng.integers(0, high, (batch_size, len(high))).astype(np.int32)
        label = rng.integers(0, 2, batch_size).astype(np.float32)
        return make_batch(dense, sparse, label)


class FileSource(BatchSource):
    """The training format, memory-mapped. Train batches are shuffled by blocks: each epoch
    visits blocks of `block_batches` batches in a seeded random order, and shuffles rows within
    a block (a contiguous region of the file, so reads stay mostly sequential)."""

    def __init__(self, directory: str | Path, seed: int = 0, block_batches: int = 16,
                 shuffle: bool = True) -> None:
        self.dir = Path(directory)
        self.spec = read_spec(self.dir)
        self.table_sizes = [int(c) for c in self.spec["table_sizes"]]
        self.seed, self.block_batches, self.shuffle = seed, block_batches, shuffle
        self.splits = {s: open_split(self.dir, s) for s in SPLIT_NAMES
                       if int(self.spec["rows"].get(s, 0)) > 0}
        if "train" not in self.splits:
            raise DataFormatError(f"{self.dir / 'spec.json'}: rows['train'] must be > 0")

    def rows(self, split: str) -> int:
        return len(self.splits[split]) if split in self.splits else 0

    def num_batches(self, split: str, batch_size: int) -> int:
        n = self.rows(split)
        return n // batch_size if split == "train" else -(-n // batch_size)  # drop last in train

    def get(self, split: str, index: int, batch_size: int, epoch: int = 0) -> Batch:
        data = self.splits[split]
        label, dense, sparse = data.label, data.dense, data.sparse
        if split != "train" or not self.shuffle:
            sl = slice(index * batch_size, min((index + 1) * batch_size, label.shape[0]))
            return make_batch(np.array(dense[sl]), np.array(sparse[sl]),  # copies: mmap is read-only
                              np.asarray(label[sl], dtype=np.float32))
        block_rows = batch_size * self.block_batches
        nblocks = -(-self.num_batches("train", batch_size) // self.block_batches)
        order = np.random.default_rng([self.seed, epoch]).permutation(nblocks)
        block, within = divmod(index, self.block_batches)
        start = int(order[block]) * block_rows
        stop = min(start + block_rows, (label.shape[0] // batch_size) * batch_size)
        perm = np.random.default_rng([self.seed, epoch, int(order[block])]).permutation(stop - start)
        rows = np.sort(perm[within * batch_size:(within + 1) * batch_size]) + start
        return make_batch(dense[rows], sparse[rows], np.asarray(label[rows], dtype=np.float32))


# ------------------------------------------------------------------------------- prefetching
class Prefetcher:
    """Yields fn(i) for i in `indices`, in order, computed `depth` ahead by `workers` threads.
    NumPy and torch release the GIL in their bulk work, so producing overlaps training."""

    def __init__(self, fn: Callable[[int], Batch], indices: Sequence[int], workers: int = 2,
                 depth: int = 4) -> None:
        self.fn, self.indices, self.depth = fn, list(indices), max(1, depth)
        self.pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="dlrmx-data")

    def __iter__(self) -> Iterator[Batch]:
        pending: queue.Queue[Future] = queue.Queue()
        it = iter(self.indices)
        try:
            for i in it:
                pending.put(self.pool.submit(self.fn, i))
                if pending.qsize() >= self.depth:
                    break
            while not pending.empty():
                batch = pending.get().result()
                nxt = next(it, None)
                if nxt is not None:
                    pending.put(self.pool.submit(self.fn, nxt))
                yield batch
        finally:
            while not pending.empty():
                pending.get().cancel()

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
