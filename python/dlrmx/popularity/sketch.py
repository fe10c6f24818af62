"""`CountMinSketch` and `ExactCounter` over the native kernels (kernels/cpu/per_isa/sketch.cpp).

A count-min sketch (Cormode and Muthukrishnan, 2005) keeps `depth` rows of `width` counters;
an id adds to one counter per row and its estimate is the smallest of them: never below the true
count, and above it by at most eps * N (N the total count) with probability 1 - delta when
width >= e / eps and depth >= ln(1 / delta). Conservative update (Estan and Varghese) raises only
the counters below the new estimate: never an underestimate, usually much closer.
"""

from __future__ import annotations

import ctypes
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dlrmx import atomic, native

_P, _I32, _I64 = ctypes.c_void_p, ctypes.c_int32, ctypes.c_int64
_update = native.declare("dlrmx_cms_update", _P, _I64, _I64, _P, _P, _P, _I64, _I32, _I32)
_query = native.declare("dlrmx_cms_query", _P, _I64, _I64, _P, _P, _I64, _P, _I32)
_exact = native.declare("dlrmx_exact_count", _P, _I64, _P, _I64, _I32)
FORMAT = "dlrmx.count_min_sketch/1"


def _ids(ids: Any, arg: str = "ids") -> np.ndarray:
    """Ids as a contiguous int64 array (uint64 keys are taken bit for bit)."""
    a = ids.detach().cpu().numpy() if isinstance(ids, torch.Tensor) else np.asarray(ids)
    if a.dtype == np.uint64:
        a = a.view(np.int64)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{arg} must be integers (int64 or uint64 keys), got {a.dtype}")
    return np.ascontiguousarray(a.reshape(-1), dtype=np.int64)


def _threads() -> int:
    return torch.get_num_threads()


class CountMinSketch:
    """Approximate counts of raw 64-bit ids in depth x width int64 counters.

    Give `eps` and `delta` (width = 2^ceil(log2(e / eps)), depth = ceil(ln(1 / delta))), or
    `width` (rounded up to a power of two) and `depth`. `track` ids with the largest estimates
    are kept as heavy-hitter candidates while updating (`heavy_hitters(k)`, k <= track).
    """

    def __init__(self, eps: float | None = None, delta: float | None = None, *,
                 width: int | None = None, depth: int | None = None, seed: int = 0,
                 conservative: bool = False, track: int = 1024) -> None:
        if width is None or depth is None:
            if eps is None or delta is None:
                raise ValueError("CountMinSketch: give eps and delta, or width and depth")
            if not (0 < eps < 1) or not (0 < delta < 1):
                raise ValueError(f"CountMinSketch: eps and delta must be in (0, 1), got eps={eps}, "
                                 f"delta={delta}")
            width, depth = math.ceil(math.e / eps), math.ceil(math.log(1 / delta))
        if int(width) < 2 or not 1 <= int(depth) <= 64:
            raise ValueError(f"CountMinSketch: width must be >= 2 and depth in [1, 64], got "
                             f"width={width}, depth={depth}")
        if track < 0:
            raise ValueError(f"CountMinSketch: track must be >= 0, got {track}")
        self.log2_width = max(1, math.ceil(math.log2(int(width))))
        if self.log2_width > 40:
            raise ValueError(f"CountMinSketch: width {width} is too large (at most 2^40)")
        self.depth, self.seed, self.conservative, self.track = int(depth), int(seed), conservative, track
        self.seeds = np.random.default_rng([self.seed, 0xC0DE]).integers(
            0, 2**64, self.depth, dtype=np.uint64)
        self.table = np.zeros((self.depth, self.width), dtype=np.int64)
        self.total = 0
        self._candidates = np.zeros(0, dtype=np.int64)

    @property
    def width(self) -> int:
        return 1 << self.log2_width

    @property
    def eps(self) -> float:
        """The additive error bound per unit of total count (e / width)."""
        return math.e / self.width

    @property
    def delta(self) -> float:
        return math.exp(-self.depth)

    def update(self, ids: Any, weights: Any | None = None) -> None:
        """Count each id once (or weights[i] times; weights >= 0)."""
        x = _ids(ids)
        w = None
        if weights is not None:
            w = _ids(weights, "weights")
            if w.shape != x.shape:
                raise ValueError(f"weights has {w.size} entries, ids {x.size}: one weight per id")
        native.call(_update, self.table.ctypes.data, self.log2_width, self.depth,
                    self.seeds.ctypes.data, x.ctypes.data, 0 if w is None else w.ctypes.data,
                    x.size, int(self.conservative), _threads())
        self.total += int(x.size if w is None else w.sum())
        if self.track:
            self._track(x)

    def query(self, ids: Any) -> np.ndarray:
        """Estimated counts (int64), never below the true ones."""
        x = _ids(ids)
        out = np.empty(x.size, dtype=np.int64)
        native.call(_query, self.table.ctypes.data, self.log2_width, self.depth,
                    self.seeds.ctypes.data, x.ctypes.data, x.size, out.ctypes.data, _threads())
        return out

    def _track(self, new: np.ndarray) -> None:
        """Keep the `track` ids with the largest estimates. Only ids estimated above the smallest
        tracked estimate can enter: the native query filters the batch before any sort."""
        if self._candidates.size >= self.track:
            floor = self.query(self._candidates).min()
            new = new[self.query(new) > floor]
        cand = np.union1d(self._candidates, new)
        if cand.size > self.track:
            est = self.query(cand)
            cand = cand[np.argsort(-est, kind="stable")[: self.track]]
        self._candidates = cand

    def heavy_hitters(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k tracked ids with the largest estimates and those estimates, largest first."""
        if not 0 <= k <= self.track:
            raise ValueError(f"heavy_hitters: k must be in [0, track={self.track}], got {k}")
        est = self.query(self._candidates)
        order = np.argsort(-est, kind="stable")[:k]
        return self._candidates[order], est[order]

    def merge(self, other: "CountMinSketch") -> "CountMinSketch":
        """Add another sketch's counts (from another worker or partition) into this one."""
        if not isinstance(other, CountMinSketch):
            raise TypeError(f"merge: expected a CountMinSketch, got {type(other).__name__}")
        if (other.depth, other.width) != (self.depth, self.width) or not np.array_equal(
                other.seeds, self.seeds):
            raise ValueError(f"merge: sketches must have the same shape and seeds (this one "
                             f"{self.depth}x{self.width} seed {self.seed}, the other "
                             f"{other.depth}x{other.width} seed {other.seed})")
        if self.conservative or other.conservative:
            raise ValueError("merge: conservative-update sketches do not add up exactly; merge "
                             "plain ones")
        self.table += other.table
        self.total += other.total
        if self.track:
            self._track(other._candidates)
        return self

    def state_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "log2_width": self.log2_width, "depth": self.depth,
                "seed": self.seed, "conservative": self.conservative, "track": self.track,
                "table": torch.from_numpy(self.table), "total": self.total,
                "candidates": torch.from_numpy(self._candidates)}

    def save(self, path: str | Path) -> None:
        """Written atomically: a reader sees the old file or the new one."""
        path = Path(path)
        tmp = atomic.temp_name(path)
        torch.save(self.state_dict(), tmp)
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> "CountMinSketch":
        state = torch.load(path, weights_only=True)
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise ValueError(f"{path}: not a dlrmx count-min sketch (format {FORMAT})")
        s = cls(width=1 << int(state["log2_width"]), depth=int(state["depth"]),
                seed=int(state["seed"]), conservative=bool(state["conservative"]),
                track=int(state["track"]))
        table = state["table"].numpy()
        if table.shape != s.table.shape:
            raise ValueError(f"{path}: table shape {table.shape} does not match "
                             f"{s.depth}x{s.width}")
        s.table[...] = table
        s.total = int(state["total"])
        s._candidates = state["candidates"].numpy().astype(np.int64)
        return s


class ExactCounter:
    """Exact lookup counts of dense row ids in [0, rows): one int64 per row."""

    def __init__(self, rows: int) -> None:
        if int(rows) < 1:
            raise ValueError(f"ExactCounter: rows must be >= 1, got {rows}")
        self.rows = int(rows)
        self.counts = np.zeros(self.rows, dtype=np.int64)

    def update(self, ids: Any) -> None:
        """Count each id; an id outside [0, rows) is an IndexError naming its position, raised
        before any count changes."""
        x = _ids(ids)
        native.call(_exact, self.counts.ctypes.data, self.rows, x.ctypes.data, x.size, _threads())

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def top(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k most looked-up rows and their counts, largest first (ties: lower id first)."""
        k = min(int(k), self.rows)
        order = np.argsort(-self.counts, kind="stable")[:k]
        return order, self.counts[order]
