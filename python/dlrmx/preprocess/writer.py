"""From encoded rows (in input order) to the training format, and the dictionaries on disk.

Shared by both engines, so the final transform of the dense values, the split routing and the
row shuffle are the same code whichever engine computed the ids.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import polars as pl

from dlrmx.data.format import SPLITS, SplitWriter, sparse_dtype
from dlrmx.preprocess.config import DenseOps, PipelineConfig, RowOrder
from dlrmx.preprocess.inputs import Segment

DICT_META = "meta.json"


def transform_dense(x: np.ndarray, ops: DenseOps) -> np.ndarray:
    """int64 (filled) -> float32: ``max(x + shift, clip_min)`` then log(x+1) in float64."""
    x = np.maximum(x + ops.shift, ops.clip_min)
    x = x.astype(np.float64)
    return (np.log1p(x) if ops.log1p else x).astype(np.float32)


def train_permutation(order: RowOrder, day_rows: list[int]) -> np.ndarray | None:
    """Destination row of each train row (in input order), or None to keep input order."""
    if order.order == "input":
        return None
    rng = np.random.default_rng(order.seed)
    n = int(sum(day_rows))
    if order.order == "shuffle_all":
        return rng.permutation(n)
    parts, start = [], 0  # shuffle_day: rows stay inside their day
    for r in day_rows:
        parts.append(start + rng.permutation(r))
        start += r
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def _open_writer(out: Path, split: str, rows: int, n_dense: int, n_sparse: int,
                 st: np.dtype) -> SplitWriter:
    try:
        w = SplitWriter(out, split, rows, n_dense, n_sparse, st)
    except OSError as e:
        if e.filename:
            raise
        raise OSError(e.errno, e.strerror, str(out / f"{split}_*.npy")) from e
    return w


def write_splits(cfg: PipelineConfig, batches: Iterable[pl.DataFrame], segs: list[Segment],
                 good_per_segment: list[int], table_sizes: list[int], out: Path,
                 progress: Callable[[int], None]) -> dict[str, int]:
    rows = {s: 0 for s in SPLITS}
    for sg, n in zip(segs, good_per_segment):
        rows[sg.split] += n
    st = sparse_dtype(table_sizes)
    writers = {s: _open_writer(out, s, rows[s], len(cfg.dense), len(cfg.categorical), st)
               for s in SPLITS}
    perm = train_permutation(cfg.row_order, [n for sg, n in zip(segs, good_per_segment)
                                             if sg.split == "train"])
    # Splits are contiguous in position order: train, then test, then val.
    ends = {s: max((sg.end for sg in segs if sg.split == s), default=0) for s in SPLITS}
    cuts = np.array([ends["train"], max(ends["test"], ends["train"])], dtype=np.int64)
    order = ("train", "test", "val")
    filled = {s: 0 for s in SPLITS}
    last_pos = -1
    for b in batches:
        if b.height == 0:
            continue
        pos = b["pos"].to_numpy()
        if pos[0] <= last_pos or (pos.size > 1 and np.any(np.diff(pos) <= 0)):
            raise RuntimeError("internal error: encoded rows are not in input order")
        last_pos = int(pos[-1])
        label = b["label"].to_numpy().astype(np.int8)
        dense = b.select(cfg.dense).to_numpy().astype(np.int64) if cfg.dense \
            else np.zeros((b.height, 0), np.int64)
        dense = transform_dense(dense, cfg.dense_ops)
        sparse = b.select(cfg.categorical).to_numpy().astype(st) if cfg.categorical \
            else np.zeros((b.height, 0), st)
        bounds = np.searchsorted(pos, cuts, side="left")
        for s, lo, hi in zip(order, [0, bounds[0], bounds[1]], [bounds[0], bounds[1], b.height]):
            if hi <= lo:
                continue
            start = filled[s]
            dest = slice(start, start + hi - lo)
            if s == "train" and perm is not None:
                dest = perm[start:start + hi - lo]
            writers[s].write(dest, label[lo:hi], dense[lo:hi], sparse[lo:hi])
            filled[s] += hi - lo
        progress(b.height)
    for s in SPLITS:
        if filled[s] != rows[s]:
            raise RuntimeError(f"internal error: {s} got {filled[s]} rows, expected {rows[s]}")
        writers[s].close()
    return rows


def save_dictionaries(cfg: PipelineConfig, dicts: dict[str, pl.DataFrame], reserved: dict[str, int],
                      directory: Path) -> None:
    """One parquet per column (key, id, count, first_pos; sorted by id) and meta.json."""
    directory.mkdir(parents=True, exist_ok=True)
    for c in cfg.categorical:
        dicts[c].write_parquet(directory / f"{c}.parquet")
    ops = cfg.categorical_ops
    meta = {"columns": cfg.categorical,
            "key_kinds": {c: cfg.schema.parse_kind(c) for c in cfg.categorical},
            "reserved_id": reserved,
            "table_sizes": {c: dicts[c].height + 1 for c in cfg.categorical},
            "max_ind_range": ops.max_ind_range, "missing": ops.missing,
            "order": ops.order, "min_freq": ops.min_freq, "fit_on": ops.fit_on}
    (directory / DICT_META).write_text(json.dumps(meta, indent=2) + "\n")


def load_dictionaries(cfg: PipelineConfig, directory: Path
                      ) -> tuple[dict[str, pl.DataFrame], dict[str, int]]:
    """Reuse dictionaries from an earlier run; the options that decide keys must match."""
    meta_path = directory / DICT_META
    if not meta_path.is_file():
        raise FileNotFoundError(f"--dictionaries {directory}: no {DICT_META} (not a dlrmx dictionary dir)")
    meta = json.loads(meta_path.read_text())
    ops = cfg.categorical_ops
    for k, v in (("max_ind_range", ops.max_ind_range), ("missing", ops.missing)):
        if meta[k] != v:
            raise ValueError(f"--dictionaries {directory}: built with {k}={meta[k]!r}, "
                             f"this run has {k}={v!r}")
    dicts = {}
    for c in cfg.categorical:
        if c not in meta["columns"]:
            raise ValueError(f"--dictionaries {directory}: no dictionary for column {c!r}")
        if meta["key_kinds"][c] != cfg.schema.parse_kind(c):
            raise ValueError(f"--dictionaries {directory}: column {c!r} keys are "
                             f"{meta['key_kinds'][c]}, this run parses {cfg.schema.parse_kind(c)}")
        dicts[c] = pl.read_parquet(directory / f"{c}.parquet")
    return dicts, {c: int(meta["reserved_id"][c]) for c in cfg.categorical}


def reserved_ids(cfg: PipelineConfig, dicts: dict[str, pl.DataFrame]) -> dict[str, int]:
    first = cfg.categorical_ops.reserved_id == "first"
    return {c: 0 if first else dicts[c].height for c in cfg.categorical}
