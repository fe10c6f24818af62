"""Batches for the trainer: the training-format files (memory-mapped; see dlrmx.data.format),
the planted-teacher synthetic data, and the reference's random data; prefetched by background
threads."""

from __future__ import annotations

import functools
import queue
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import numpy as np
import torch

from dlrmx.data.format import SPLITS as SPLIT_NAMES
from dlrmx.data.format import DataFormatError, bag_sizes, open_split, read_spec, sparse_dtype
from dlrmx.data.validate import validate_dataset
from dlrmx.data.synthetic import NUM_DENSE, SyntheticCriteo

if TYPE_CHECKING:  # a run-time import would load dlrmx.data.multihot before `python -m` runs it
    from dlrmx.data.multihot import MultiHot


@dataclass
class Batch:
    """One mini-batch in the layout the model takes: jagged ids, table-major (bag t*B + b is
    table t, sample b; its ids are values[offsets[t*B + b]:offsets[t*B + b + 1]]).

    One-hot data has one id per bag (values [T*B], offsets 0..T*B). Multi-hot data (MLPerf
    DLRMv2's, `dlrmx.data.multihot`: s_t ids per bag of table t) holds all of table 0's bags,
    then table 1's, ...: values [B * sum_t s_t], bag t*B + b being sample b's s_t ids of table
    t in order, and offsets [T*B + 1] advancing by s_t within table t. The reference's random
    multi-hot bags (--num-indices-per-lookup) have varying lengths, same layout."""

    dense: torch.Tensor    # [B, 13] float32
    values: torch.Tensor   # [T*B] (multi-hot: [B * sum(bag sizes)]) int32/int64, table-major
    offsets: torch.Tensor  # [T*B + 1] int64
    label: torch.Tensor    # [B] float32
    prob: torch.Tensor | None = None  # [B] teacher probability (synthetic data only)

    @property
    def size(self) -> int:
        return self.dense.shape[0]


_BAG_OFFSETS: dict[tuple[int, tuple[int, ...]], torch.Tensor] = {}


def bag_offsets(batch_size: int, bag_sizes: Sequence[int]) -> torch.Tensor:
    """Offsets [T*B + 1] of fixed-size bags, table-major (table t's B bags hold bag_sizes[t]
    ids each); cached per (B, sizes) and shared by every batch of that shape (read-only)."""
    key = (int(batch_size), tuple(int(s) for s in bag_sizes))
    offsets = _BAG_OFFSETS.get(key)
    if offsets is None:
        lengths = np.repeat(np.asarray(key[1], dtype=np.int64), key[0])
        o = np.zeros(lengths.size + 1, dtype=np.int64)
        np.cumsum(lengths, out=o[1:])
        offsets = _BAG_OFFSETS.setdefault(key, torch.from_numpy(o))
    return offsets


def make_batch(dense: np.ndarray, sparse: np.ndarray, label: np.ndarray,
               prob: np.ndarray | None = None, bag_sizes: Sequence[int] | None = None) -> Batch:
    """[B, 13] dense, [B, T] ids, [B] labels (NumPy) -> a Batch (ids transposed table-major).

    With `bag_sizes` (s_t ids per bag of table t) `sparse` is multi-hot, [B, sum(bag_sizes)]
    table-grouped (table t's s_t ids in contiguous columns, tables in order), and the Batch
    gets table t's B bags of s_t ids after table t-1's (see Batch)."""
    b, width = sparse.shape
    if bag_sizes is None:  # one id per bag: the ids transposed, offsets 0..T*B
        values = np.ascontiguousarray(sparse.T).reshape(-1)
        offsets = bag_offsets(b, (1,) * width)
    else:
        if width != sum(bag_sizes):
            raise ValueError(f"make_batch: sparse has {width} columns but bag_sizes add up to "
                             f"{sum(bag_sizes)} (table-grouped multi-hot ids)")
        values = np.empty(b * width, dtype=sparse.dtype)
        col = 0
        for s in bag_sizes:  # table t's [B, s_t] block, row by row: one copy per table
            values[b * col:b * (col + s)].reshape(b, s)[...] = sparse[:, col:col + s]
            col += s
        offsets = bag_offsets(b, bag_sizes)
    return Batch(torch.from_numpy(np.ascontiguousarray(dense, dtype=np.float32)),
                 torch.from_numpy(values), offsets,
                 torch.from_numpy(np.ascontiguousarray(label, dtype=np.float32)),
                 None if prob is None else torch.from_numpy(prob))


# ---------------------------------------------------------------------------------- sources
class BatchSource:
    """Batch i of a split, as a pure function of i (so any position can be resumed).

    `multi_hot_sizes`: ids per bag of each table when every bag has a fixed size (MLPerf
    multi-hot), None for one-hot data or the reference's random bags."""

    table_sizes: list[int]
    multi_hot_sizes: list[int] | None = None

    def num_batches(self, split: str, batch_size: int) -> int:
        raise NotImplementedError

    def get(self, split: str, index: int, batch_size: int, epoch: int = 0) -> Batch:
        raise NotImplementedError


class WrappedSource(BatchSource):
    """A source that changes another's batches (their order, or a rank's slice of them) and
    answers everything else as that source does (rows(), spec, ...)."""

    def __init__(self, source: BatchSource) -> None:
        self.source = source
        self.table_sizes, self.multi_hot_sizes = source.table_sizes, source.multi_hot_sizes

    def __getattr__(self, name: str):
        if name == "source":  # not set yet (unpickling, half-built): no recursion
            raise AttributeError(name)
        return getattr(self.source, name)

    def num_batches(self, split: str, batch_size: int) -> int:
        return self.source.num_batches(split, batch_size)


class SyntheticSource(BatchSource):
    """The planted-teacher data. Train is unbounded (an epoch is `train_batches` batches);
    val/test are fixed sets of `eval_samples` samples. With `multi_hot` each sample's ids are
    expanded into MLPerf multi-hot bags (the teacher's labels still come from the one-hot ids)."""

    def __init__(self, gen: SyntheticCriteo, train_batches: int, eval_samples: int,
                 multi_hot: MultiHot | None = None) -> None:
        self.gen, self.train_batches, self.eval_samples = gen, train_batches, eval_samples
        self.table_sizes = gen.sizes
        self.multi_hot = _check_multi_hot(multi_hot, self.table_sizes)
        self.multi_hot_sizes = None if multi_hot is None else list(multi_hot.sizes)

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
        if self.multi_hot is not None:
            return make_batch(sb.dense, self.multi_hot.expand(sb.sparse), sb.label, sb.prob,
                              self.multi_hot.sizes)
        return make_batch(sb.dense, sb.sparse, sb.label, sb.prob)


def _check_multi_hot(multi_hot: MultiHot | None, table_sizes: Sequence[int]) -> MultiHot | None:
    if multi_hot is not None and list(multi_hot.table_sizes) != list(table_sizes):
        raise ValueError(f"multi_hot: built for table sizes {multi_hot.table_sizes}, but the "
                         f"data has {list(table_sizes)}")
    return multi_hot


class RandomSource(BatchSource):
    """The reference's `--data-generation random`: uniform dense features, uniform ids, random
    labels (for speed tests; nothing to learn).

    Bags follow the reference's `--num-indices-per-lookup N` and `--num-indices-per-lookup-fixed`:
    fixed, every bag holds exactly N ids (uniform, so duplicates are possible); not fixed, a bag
    draws size round(max(1, u * min(table_size, N))) with u uniform in [0, 1), then that many
    uniform ids, deduplicated and sorted (np.unique), so a bag can end up shorter.
    Batch (split, epoch, index) is a pure function of its own RNG stream, drawn in this order:
    dense (B, 13); then for N=1 fixed ids (B, T); for N>1 fixed ids (T, B, N); not fixed u (T, B)
    and then all ids, table-major and bag by bag; finally the labels (B,).

    With `multi_hot` (MLPerf's multi-hot, `dlrmx.data.multihot`) each bag is instead the
    expansion of one uniform id: the ids are drawn as for N=1 fixed, (B, T), and expanded, and
    --num-indices-per-lookup(-fixed) do not apply.
    """

    def __init__(self, table_sizes: Sequence[int], num_batches: int, seed: int,
                 num_indices_per_lookup: int = 1, fixed: bool = True,
                 multi_hot: MultiHot | None = None) -> None:
        if num_indices_per_lookup < 1:
            raise ValueError(f"--num-indices-per-lookup must be >= 1, got {num_indices_per_lookup}")
        self.table_sizes, self.n, self.seed = list(table_sizes), num_batches, seed
        self.per_lookup, self.fixed = int(num_indices_per_lookup), bool(fixed)
        self.id_dtype = sparse_dtype(self.table_sizes)
        self.multi_hot = _check_multi_hot(multi_hot, self.table_sizes)
        self.multi_hot_sizes = None if multi_hot is None else list(multi_hot.sizes)

    def num_batches(self, split: str, batch_size: int) -> int:
        return self.n if split == "train" else max(1, self.n // 10)

    def get(self, split: str, index: int, batch_size: int, epoch: int = 0) -> Batch:
        rng = np.random.default_rng([self.seed, SPLIT_NAMES.index(split), epoch, index])
        dense = rng.random((batch_size, NUM_DENSE), dtype=np.float32)
        high = np.asarray(self.table_sizes, dtype=np.int64)
        if self.multi_hot is not None or (self.fixed and self.per_lookup == 1):
            sparse = rng.integers(0, high, (batch_size, len(high))).astype(self.id_dtype)
            label = rng.integers(0, 2, batch_size).astype(np.float32)
            if self.multi_hot is not None:
                return make_batch(dense, self.multi_hot.expand(sparse), label,
                                  bag_sizes=self.multi_hot.sizes)
            return make_batch(dense, sparse, label)  # one id per bag: the plain layout
        values, offsets = self._bags(rng, high, batch_size)
        label = rng.integers(0, 2, batch_size).astype(np.float32)
        return Batch(torch.from_numpy(dense), torch.from_numpy(values), torch.from_numpy(offsets),
                     torch.from_numpy(label))

    def _bags(self, rng: np.random.Generator, high: np.ndarray, b: int
              ) -> tuple[np.ndarray, np.ndarray]:
        """Multi-hot bags, table-major: (values, offsets of length T*B+1)."""
        t, n = len(high), self.per_lookup
        if self.fixed:
            ids = rng.integers(0, high[:, None, None], (t, b, n))
            return ids.reshape(-1).astype(self.id_dtype), np.arange(t * b + 1, dtype=np.int64) * n
        u = rng.random((t, b))
        sizes = np.round(np.maximum(1.0, u * np.minimum(high, n)[:, None])).astype(np.int64)
        ids = rng.integers(0, np.repeat(high, sizes.sum(axis=1)))
        bag = np.repeat(np.arange(t * b), sizes.reshape(-1))
        order = np.lexsort((ids, bag))  # sort ids within each bag (bags stay in order)
        ids, bag = ids[order], bag[order]
        first = np.ones(ids.size, dtype=bool)
        first[1:] = (bag[1:] != bag[:-1]) | (ids[1:] != ids[:-1])  # drop repeats within a bag
        counts = np.bincount(bag[first], minlength=t * b)
        offsets = np.zeros(t * b + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        return ids[first].astype(self.id_dtype), offsets


@functools.lru_cache(maxsize=8)
def block_schedule(n_rows: int, batch_size: int, block_batches: int, seed: int, epoch: int
                   ) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """The train order of one epoch, a pure function of its arguments (resume relies on it).

    The epoch uses the num_batches * batch_size positions [start, start + num_batches *
    batch_size), where start in [0, n_rows mod batch_size] is drawn per epoch, so the fewer than
    batch_size rows dropped change from epoch to epoch. Those positions are cut into blocks of
    `block_batches` batches (the last block holds the remaining batches, possibly fewer), and the
    blocks are visited in a seeded random order. Returns (start, blocks in visit order, batches
    in each block, first batch index of each visited block with the total appended).
    """
    nb = n_rows // batch_size
    nblocks = -(-nb // block_batches)
    sizes = np.full(nblocks, block_batches, dtype=np.int64)
    if nb % block_batches:
        sizes[-1] = nb % block_batches
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(nblocks)
    start = int(rng.integers(0, n_rows - nb * batch_size + 1))
    bounds = np.zeros(nblocks + 1, dtype=np.int64)
    np.cumsum(sizes[order], out=bounds[1:])
    return start, order, sizes, bounds


def kept_rows(label: np.ndarray, rate: float, seed: int, chunk: int = 1 << 20) -> np.ndarray:
    """The reference's `--data-sub-sample-rate`: each negative row is dropped with probability
    `rate`, positives are all kept; decided once by a seeded RNG, in chunks of the (memory-
    mapped) labels. Returns the kept row numbers, ascending (int32 when they fit: 4 bytes per
    kept row)."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"--data-sub-sample-rate must be in [0, 1], got {rate}")
    n = label.shape[0]
    dtype = np.int32 if n <= 2**31 - 1 else np.int64
    rng = np.random.default_rng([seed, 0x5AB5])
    parts = []
    for lo in range(0, n, chunk):
        y = np.asarray(label[lo:lo + chunk])
        keep = (y != 0) | (rng.random(y.shape[0]) >= rate)
        parts.append((np.flatnonzero(keep) + lo).astype(dtype))
    return np.concatenate(parts) if parts else np.zeros(0, dtype)


class FileSource(BatchSource):
    """The training format, memory-mapped, validated against spec.json when opened
    (`dlrmx.data.validate`). Train batches are shuffled by blocks (see `block_schedule`):
    each epoch visits blocks of `block_batches` batches in a seeded random order and shuffles
    rows within a block (a contiguous region of the file, so reads stay mostly sequential).
    Every train batch has exactly batch_size rows; the last eval batch may be partial.

    `sub_sample_rate` > 0 drops negative train rows as the reference's --data-sub-sample-rate
    (`kept_rows`); the block schedule then runs over the kept rows.

    A directory whose spec.json has `multi_hot_sizes` (written by `python -m
    dlrmx.data.multihot`) gives multi-hot batches as stored; `multi_hot` expands one-hot files
    batch by batch instead (refused for files that are multi-hot already).
    """

    def __init__(self, directory: str | Path, seed: int = 0, block_batches: int = 16,
                 shuffle: bool = True, sub_sample_rate: float = 0.0,
                 multi_hot: MultiHot | None = None) -> None:
        if block_batches < 1:
            raise ValueError(f"block_batches must be >= 1, got {block_batches}")
        self.dir = Path(directory)
        validate_dataset(self.dir)
        self.spec = read_spec(self.dir)
        self.table_sizes = [int(c) for c in self.spec["table_sizes"]]
        self.stored_bag_sizes = bag_sizes(self.spec)
        if self.stored_bag_sizes is not None and multi_hot is not None:
            raise ValueError(f"{self.dir} is multi-hot already (spec.json multi_hot_sizes "
                             f"{self.stored_bag_sizes}); it cannot be expanded again")
        self.multi_hot = _check_multi_hot(multi_hot, self.table_sizes)
        self.multi_hot_sizes = (self.stored_bag_sizes if multi_hot is None
                                else list(multi_hot.sizes))
        self.seed, self.block_batches, self.shuffle = seed, block_batches, shuffle
        self.splits = {s: open_split(self.dir, s) for s in SPLIT_NAMES
                       if int(self.spec["rows"].get(s, 0)) > 0}
        if "train" not in self.splits:
            raise DataFormatError(f"{self.dir / 'spec.json'}: rows['train'] must be > 0")
        self.kept = (kept_rows(self.splits["train"].label, sub_sample_rate, seed)
                     if sub_sample_rate > 0 else None)

    def rows(self, split: str) -> int:
        if split == "train" and self.kept is not None:
            return int(self.kept.size)
        return len(self.splits[split]) if split in self.splits else 0

    def num_batches(self, split: str, batch_size: int) -> int:
        n = self.rows(split)
        return n // batch_size if split == "train" else -(-n // batch_size)  # drop last in train

    def get(self, split: str, index: int, batch_size: int, epoch: int = 0,
            part: tuple[int, int] | None = None) -> Batch:
        """Batch `index`; with `part` = (lo, hi) only its samples [lo, hi), and only those are
        read (a rank's slice of a global batch)."""
        n = self.num_batches(split, batch_size)
        if not 0 <= index < n:
            raise IndexError(f"{split} batch {index} out of range: {n} batches of {batch_size}")
        data = self.splits[split]
        lo, hi = part or (0, batch_size)
        if split != "train":
            first = index * batch_size
            sl = slice(first + lo, min(first + hi, len(data)))
            # copies: the memory maps are read-only
            return self._batch(np.array(data.dense[sl]), np.array(data.sparse[sl]),
                               np.asarray(data.label[sl], dtype=np.float32))
        if self.shuffle:
            pos = self._shuffled_positions(index, batch_size, epoch)[lo:hi]
        else:
            pos = np.arange(index * batch_size + lo, index * batch_size + hi)
        rows = pos if self.kept is None else self.kept[pos]
        return self._batch(data.dense[rows], data.sparse[rows],
                           np.asarray(data.label[rows], dtype=np.float32))

    def batch_rows(self, split: str, index: int, batch_size: int) -> int:
        """The samples in batch `index` (the last evaluation batch may be short)."""
        if split == "train":
            return batch_size
        return min(batch_size, self.rows(split) - index * batch_size)

    def _batch(self, dense: np.ndarray, sparse: np.ndarray, label: np.ndarray) -> Batch:
        if self.multi_hot is not None:
            sparse = self.multi_hot.expand(sparse)
        return make_batch(dense, sparse, label, bag_sizes=self.multi_hot_sizes)

    def _shuffled_positions(self, index: int, batch_size: int, epoch: int) -> np.ndarray:
        """Positions (into the train rows, or the kept rows) of train batch `index`, ascending."""
        start, order, sizes, bounds = block_schedule(self.rows("train"), batch_size,
                                                     self.block_batches, self.seed, epoch)
        slot = int(np.searchsorted(bounds, index, side="right")) - 1
        block, within = int(order[slot]), index - int(bounds[slot])
        first = start + block * self.block_batches * batch_size
        perm = np.random.default_rng([self.seed, epoch, block]).permutation(
            int(sizes[block]) * batch_size)
        return np.sort(perm[within * batch_size:(within + 1) * batch_size]) + first


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
