"""Where popularity comes from, best first: the preprocessor's dictionaries (each key's exact
count, at no cost), else a streaming profile of a sample of the training batches.

A profile counts with the exact counter (one int64 per row) where a table's counters fit
`exact_bytes`, and with a count-min sketch (bounded memory; only its tracked heavy hitters come
out as candidates) for larger tables. Counts are per table: a dense int64 array of every row's
count, or, from a sketch, (candidate row ids, estimated counts) with the table's total lookups.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence, Union

import numpy as np

from dlrmx.popularity.sketch import CountMinSketch, ExactCounter

Counts = Union[np.ndarray, tuple]  # dense per-row counts, or (ids, counts) candidates
EXACT_BYTES = 256 << 20  # per table: larger tables are profiled with a sketch
SKETCH_LOG2_WIDTH, SKETCH_DEPTH = 20, 4  # 32 MiB of counters; eps = e / 2^20


@dataclass
class Popularity:
    counts: list[Counts]
    totals: list[int]
    source: str  # "dictionaries" or "profile"
    notes: list[str] = field(default_factory=list)
    prefix_ordered: bool = False  # ids are numbered most frequent first (order: frequency)


def from_dictionaries(directory: str | Path) -> Popularity | None:
    """Exact per-row counts from `DIR/dictionaries` (written by `python -m dlrmx.preprocess`), or
    None when there are none. The reserved id (missing, rare or unseen keys) has no dictionary
    entry: its count is the rows the dictionaries were fit on minus the kept keys' counts."""
    import polars as pl

    from dlrmx.data.format import read_spec

    d = Path(directory) / "dictionaries"
    if not (d / "meta.json").is_file():
        return None
    meta, spec = json.loads((d / "meta.json").read_text()), read_spec(directory)
    columns, sizes = spec["sparse_columns"], [int(n) for n in spec["table_sizes"]]
    rows = spec["rows"]
    fitted = int(rows.get("train", 0)) + (0 if meta.get("fit_on") == "train" else
                                          int(rows.get("val", 0)) + int(rows.get("test", 0)))
    counts = []
    for c, n in zip(columns, sizes):
        if c not in meta["columns"]:
            return None  # the dictionaries of another layout: profile instead
        df = pl.read_parquet(d / f"{c}.parquet", columns=["id", "count"])
        ids, cnt = df["id"].to_numpy().astype(np.int64), df["count"].to_numpy().astype(np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= n):
            return None
        full = np.zeros(n, dtype=np.int64)
        full[ids] = cnt
        reserved = int(meta["reserved_id"][c])
        if 0 <= reserved < n:
            full[reserved] = max(0, fitted - int(cnt.sum()))
        counts.append(full)
    return Popularity(counts, [int(c.sum()) for c in counts], "dictionaries",
                      prefix_ordered=meta.get("order") == "frequency")


def profile(source, batch_size: int, batches_per_epoch: int, fraction: float, seed: int = 0,
            exact_bytes: int = EXACT_BYTES, track: Sequence[int] | None = None) -> Popularity:
    """Count the lookups of `fraction` of epoch 0's train batches (a seeded sample, read in
    order). `track[t]`: heavy-hitter candidates kept for a sketched table (at most the rows the
    budget could hold)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"--profile-fraction must be in (0, 1], got {fraction}")
    sizes = list(source.table_sizes)
    k = max(1, math.ceil(fraction * batches_per_epoch))
    picked = np.sort(np.random.default_rng([seed, 0xF00D]).choice(batches_per_epoch, k,
                                                                  replace=False))
    counters: list = []
    for t, n in enumerate(sizes):
        if n * 8 <= exact_bytes:
            counters.append(ExactCounter(n))
        else:
            keep = int(min(1 << 16, track[t] if track is not None else 1 << 16))
            counters.append(CountMinSketch(width=1 << SKETCH_LOG2_WIDTH, depth=SKETCH_DEPTH,
                                           seed=seed + t, track=max(1, keep)))
    for i in picked:
        batch = source.get("train", int(i), batch_size, 0)
        b = batch.size
        for t, counter in enumerate(counters):
            ids = batch.values[int(batch.offsets[t * b]):int(batch.offsets[(t + 1) * b])]
            try:
                counter.update(ids.numpy())
            except IndexError as e:
                raise IndexError(f"profiling train batch {int(i)}, table {t}: {e}") from None
    counts, totals, notes = [], [], []
    for t, c in enumerate(counters):
        if isinstance(c, ExactCounter):
            counts.append(c.counts)
            totals.append(c.total)
        else:
            counts.append(c.heavy_hitters(c.track))
            totals.append(int(c.total))
            notes.append(f"table {t} ({sizes[t]:,} rows): count-min sketch "
                         f"{c.depth}x{c.width}, {c.track:,} candidates")
    return Popularity(counts, totals, "profile", notes)
