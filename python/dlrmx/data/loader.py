"""Batches for the trainer: the training-format files (memory-mapped), the planted-teacher
synthetic data, and the reference's random data; prefetched by background threads.

The training format (the contract with `python -m dlrmx.preprocess`): a directory with
`spec.json` and, per split in (train, val, test), `{split}_label.npy` (N,),
`{split}_dense.npy` (N, 13) float32 and `{split}_sparse.npy` (N, 26) int32 (int64 when a table
exceeds 2^31 rows). spec.json holds at least `format_version`, `cardinalities` (one per sparse
column) and `rows` ({split: N}); also `dense_columns`, `sparse_columns`, `produced_by`.
"""

from __future__ import annotations

import json
import queue
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from dlrmx.data.synthetic import NUM_DENSE, SyntheticCriteo

FORMAT_VERSION = 1
SPLIT_NAMES = ("train", "val", "test")


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


class DataFormatError(ValueError):
    """A training-format directory is missing a file or holds the wrong shapes/types."""


class FileSource(BatchSource):
    """The training format, memory-mapped. Train batches are shuffled by blocks: each epoch
    visits blocks of `block_batches` batches in a seeded random order, and shuffles rows within
    a block (a contiguous region of the file, so reads stay mostly sequential)."""

    def __init__(self, directory: str | Path, seed: int = 0, block_batches: int = 16,
                 shuffle: bool = True) -> None:
        self.dir = Path(directory)
        self.spec = read_spec(self.dir)
        self.table_sizes = [int(c) for c in self.spec["cardinalities"]]
        self.seed, self.block_batches, self.shuffle = seed, block_batches, shuffle
        self.arrays = {s: _open_split(self.dir, s, self.spec) for s in SPLIT_NAMES
                       if int(self.spec["rows"].get(s, 0)) > 0}
        if "train" not in self.arrays:
            raise DataFormatError(f"{self.dir / 'spec.json'}: rows['train'] must be > 0")

    def rows(self, split: str) -> int:
        return self.arrays[split][0].shape[0] if split in self.arrays else 0

    def num_batches(self, split: str, batch_size: int) -> int:
        n = self.rows(split)
        return n // batch_size if split == "train" else -(-n // batch_size)  # drop last in train

    def get(self, split: str, index: int, batch_size: int, epoch: int = 0) -> Batch:
        label, dense, sparse = self.arrays[split]
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


def read_spec(directory: Path) -> dict:
    path = directory / "spec.json"
    if not directory.is_dir():
        raise DataFormatError(f"--processed-data-file {directory}: not a directory (expected the "
                              "training format: spec.json plus {split}_label/dense/sparse.npy)")
    if not path.is_file():
        raise DataFormatError(f"{path}: missing (the training format needs spec.json with "
                              "format_version, cardinalities and rows)")
    try:
        spec = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DataFormatError(f"{path}: not valid JSON ({e})") from e
    for key in ("format_version", "cardinalities", "rows"):
        if key not in spec:
            raise DataFormatError(f"{path}: missing key {key!r}")
    if int(spec["format_version"]) != FORMAT_VERSION:
        raise DataFormatError(f"{path}: format_version {spec['format_version']}, this dlrmx reads "
                              f"{FORMAT_VERSION}")
    return spec


def _open_split(directory: Path, split: str, spec: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n, t = int(spec["rows"][split]), len(spec["cardinalities"])
    out = []
    for part, shape, kinds in (("label", (n,), "biuf"), ("dense", (n, NUM_DENSE), "f"),
                               ("sparse", (n, t), "iu")):
        path = directory / f"{split}_{part}.npy"
        if not path.is_file():
            raise DataFormatError(f"{path}: missing (spec.json says {split} has {n} rows)")
        arr = np.load(path, mmap_mode="r")
        if arr.shape != shape:
            raise DataFormatError(f"{path}: shape {arr.shape}, expected {shape} "
                                  f"({n} rows from spec.json, {t} cardinalities)")
        if arr.dtype.kind not in kinds or (part == "dense" and arr.dtype != np.float32):
            want = {"label": "numeric", "dense": "float32", "sparse": "int32 or int64"}[part]
            raise DataFormatError(f"{path}: dtype {arr.dtype}, expected {want}")
        out.append(arr)
    return tuple(out)  # type: ignore[return-value]


def write_arrays(directory: str | Path, splits: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
                 cardinalities: Sequence[int], produced_by: str = "dlrmx.data.loader.write_arrays"
                 ) -> Path:
    """Write {split: (label, dense, sparse)} in the training format (a small converter for
    users' own arrays, and the tests' writer)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    big = max(cardinalities) > 2 ** 31 - 1
    rows = {}
    for split, (label, dense, sparse) in splits.items():
        if split not in SPLIT_NAMES:
            raise ValueError(f"split must be one of {SPLIT_NAMES}, got {split!r}")
        np.save(d / f"{split}_label.npy", np.asarray(label, dtype=np.float32))
        np.save(d / f"{split}_dense.npy", np.asarray(dense, dtype=np.float32))
        np.save(d / f"{split}_sparse.npy", np.asarray(sparse, dtype=np.int64 if big else np.int32))
        rows[split] = int(len(label))
    spec = {"format_version": FORMAT_VERSION,
            "dense_columns": [f"I{i}" for i in range(1, NUM_DENSE + 1)],
            "sparse_columns": [f"C{i}" for i in range(1, len(cardinalities) + 1)],
            "cardinalities": [int(c) for c in cardinalities], "rows": rows,
            "produced_by": produced_by}
    (d / "spec.json").write_text(json.dumps(spec, indent=1))
    return d


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
