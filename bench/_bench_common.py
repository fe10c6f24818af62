"""Shared helpers for dlrmx's benchmarks: id generators, batches, timing, limits, memory."""

from __future__ import annotations

import os
import platform
import resource
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch


# ---------------------------------------------------------------------------------------------
# Ids


class ZipfIds:
    """Bounded Zipf(s) ids over `rows` rows: rank k (1-based) has probability ~ k**-s.

    Sampled by inverse CDF over the ranks. Ranks are mapped to rows through a random permutation,
    so the hot rows are spread over the table (not all in its first cache lines/pages)."""

    def __init__(self, rows: int, s: float, rng: np.random.Generator) -> None:
        weights = np.arange(1, rows + 1, dtype=np.float64) ** -s
        cdf = np.cumsum(weights)
        self.cdf = cdf / cdf[-1]
        self.rank_to_row = rng.permutation(rows).astype(np.int64)
        self.rng = rng

    def __call__(self, n: int) -> np.ndarray:
        ranks = np.searchsorted(self.cdf, self.rng.random(n), side="right")
        np.minimum(ranks, len(self.cdf) - 1, out=ranks)
        return self.rank_to_row[ranks]


class UniformIds:
    def __init__(self, rows: int, rng: np.random.Generator) -> None:
        self.rows, self.rng = rows, rng

    def __call__(self, n: int) -> np.ndarray:
        return self.rng.integers(0, self.rows, size=n, dtype=np.int64)


def make_id_sampler(dist: str, rows: int, rng: np.random.Generator):
    if dist == "uniform":
        return UniformIds(rows, rng)
    if dist.startswith("zipf"):
        return ZipfIds(rows, float(dist[len("zipf"):] or 1.05), rng)
    raise ValueError(f"unknown id distribution {dist!r} (uniform or zipf<s>, e.g. zipf1.05)")


@dataclass
class Batch:
    """One batch in every layout the systems take, built once, outside the timed region.

    values/offsets: TorchRec's table-major jagged layout (T*B+1 offsets) for dlrmx and FBGEMM;
    per_table: (ids, B offsets) per table, what T separate torch.nn.EmbeddingBag modules take."""

    values: torch.Tensor
    offsets: torch.Tensor
    per_table: list[tuple[torch.Tensor, torch.Tensor]]
    num_tables: int
    batch_size: int

    @property
    def num_lookups(self) -> int:
        return int(self.values.numel())


def make_batch(samplers: list, batch_size: int, ids_per_bag: int) -> Batch:
    """A batch with a fixed number of ids per bag (pooling factor), one sampler per table."""
    num_tables = len(samplers)
    per_table_ids = [torch.from_numpy(s(batch_size * ids_per_bag)) for s in samplers]
    values = torch.cat(per_table_ids).contiguous()
    offsets = torch.arange(0, num_tables * batch_size + 1, dtype=torch.int64) * ids_per_bag
    bag_offsets = torch.arange(0, batch_size, dtype=torch.int64) * ids_per_bag
    per_table = [(ids.contiguous(), bag_offsets) for ids in per_table_ids]
    return Batch(values, offsets, per_table, num_tables, batch_size)


# ---------------------------------------------------------------------------------------------
# Timing


def timed(fn: Callable[[], object]) -> float:
    """Seconds one call takes (wall clock)."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median(xs) -> float:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else float("nan")


# ---------------------------------------------------------------------------------------------
# Physical limit: random row gather


def measure_gather_limit(total_rows: int, dim: int, num_ids: int, reps: int,
                         rng: np.random.Generator, chunk: int = 8192) -> dict:
    """Random-row gather rate (rows/s) with the current torch thread count: uniform random rows
    of a [total_rows, dim] fp32 table copied with index_select into a preallocated output.

    Two variants, interleaved, each the median of `reps` gathers of `num_ids` rows (fresh ids
    each time) after a warm-up: "full" writes all rows to one [num_ids, dim] output (the gathered
    bytes also stream out to memory); "chunked" gathers `chunk` rows at a time into a cache-sized
    output (reads only, like a pooling lookup). The limit is the faster of the two."""
    table = torch.empty(total_rows, dim, dtype=torch.float32)
    table.fill_(1.0)  # touch every page so the gather hits physical memory
    out = torch.empty(num_ids, dim, dtype=torch.float32)
    small = torch.empty(chunk, dim, dtype=torch.float32)
    id_sets = [torch.from_numpy(rng.integers(0, total_rows, size=num_ids, dtype=np.int64))
               for _ in range(min(reps, 4))]

    def full(ids):
        torch.index_select(table, 0, ids, out=out)

    def chunked(ids):
        for c in ids.split(chunk):
            torch.index_select(table, 0, c, out=small[: c.numel()])

    full(id_sets[0]), chunked(id_sets[1 % len(id_sets)])
    times = {"full": [], "chunked": []}
    for i in range(reps):
        ids = id_sets[i % len(id_sets)]
        times["full"].append(timed(lambda: full(ids)))
        times["chunked"].append(timed(lambda: chunked(ids)))
    del table, out
    rates = {k: num_ids / median(v) for k, v in times.items()}
    rates["limit"] = max(rates["full"], rates["chunked"])
    return rates


# ---------------------------------------------------------------------------------------------
# Memory and environment


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB.

    VmHWM (the high-water mark of this address space) rather than ru_maxrss: Linux carries
    ru_maxrss across exec, so a child spawned by a big parent would report the parent's peak."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mib() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return float("nan")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"
