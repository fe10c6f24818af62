"""The cache's native kernels (kernels/cpu/cache.cpp) on NumPy arrays and CPU tensors: the hot
map of a set of tables, the remap/classify pass over a batch, and bulk row gather/scatter."""

from __future__ import annotations

import ctypes
from typing import Sequence

import numpy as np
import torch

from dlrmx import native

_P, _I32, _I64 = ctypes.c_void_p, ctypes.c_int32, ctypes.c_int64
_remap = native.declare("dlrmx_cache_remap", _I64, _P, _P, _P, _P, _P, _I32, _P, _I64, _P, _P, _P,
                         _I32)
_gather = native.declare("dlrmx_gather_rows", _P, _I64, _I64, _P, _I64, _P, _I32)
_scatter = native.declare("dlrmx_scatter_rows", _P, _I64, _I64, _P, _P, _I64, _I32)
_IDS = {torch.int32: 2, torch.int64: 3}  # DLRMX_I32, DLRMX_I64


def _threads() -> int:
    return max(1, torch.get_num_threads())


class HotMap:
    """Which rows of each table are hot, and their slot in the hot tier.

    `rows[t]`: table t's hot row ids (distinct, in [0, table_sizes[t])); slot i holds rows[t][i]
    after they are sorted ascending (sequential gathers). A table whose hot rows are one run of
    ids [lo, hi) (frequency-ordered ids, the preprocessor's `order: frequency`, put the hot rows
    at the front) needs no map: a range test remaps it. Others keep an int32 slot per row (-1:
    cold), 4 bytes per row.
    """

    def __init__(self, rows: Sequence[np.ndarray], table_sizes: Sequence[int]) -> None:
        if len(rows) != len(table_sizes):
            raise ValueError(f"HotMap: {len(rows)} hot-row arrays for {len(table_sizes)} tables")
        self.table_sizes = [int(n) for n in table_sizes]
        self.rows: list[np.ndarray] = []
        self.maps: list[np.ndarray | None] = []
        for t, (r, n) in enumerate(zip(rows, self.table_sizes)):
            r = np.unique(np.asarray(r, dtype=np.int64))  # sorted, and distinct
            if r.size != np.asarray(rows[t]).size:
                raise ValueError(f"HotMap: table {t}'s hot rows repeat an id")
            if r.size and (r[0] < 0 or r[-1] >= n):
                raise IndexError(f"HotMap: table {t}'s hot rows hold {r[0] if r[0] < 0 else r[-1]}, "
                                 f"outside its rows [0, {n})")
            self.rows.append(r)
            if r.size and r[-1] - r[0] != r.size - 1:  # not one run of ids: a slot per row
                m = np.full(n, -1, dtype=np.int32)
                m[r] = np.arange(r.size, dtype=np.int32)
                self.maps.append(m)
            else:
                self.maps.append(None)
        self._map_ptrs = (_P * len(rows))(*[m.ctypes.data if m is not None else None
                                           for m in self.maps])
        run = [(int(r[0]), int(r[-1]) + 1) if r.size and m is None else (0, 0)
               for r, m in zip(self.rows, self.maps)]
        self._lo, self._hi = (np.asarray(x, dtype=np.int64) for x in zip(*run))
        self._sizes = np.asarray(self.table_sizes, dtype=np.int64)

    @property
    def num_tables(self) -> int:
        return len(self.rows)

    @property
    def hot_counts(self) -> list[int]:
        return [int(r.size) for r in self.rows]

    def remap(self, values: torch.Tensor, offsets: torch.Tensor, batch: int, slots: bool = True
              ) -> tuple[torch.Tensor | None, np.ndarray, int]:
        """A table-major batch -> (its ids as hot slots, int32, -1 where cold; or None when
        `slots` is False), the per-sample hot flags (1: every lookup hot) and the number of
        cold lookups. An id outside its table is an IndexError naming table and position."""
        values, offsets = _checked_batch(values, offsets, batch, self.num_tables)
        out = torch.empty(values.numel(), dtype=torch.int32) if slots else None
        hot = np.empty(batch, dtype=np.uint8)
        misses = ctypes.c_int64(0)
        native.call(_remap, self.num_tables, self._map_ptrs, self._lo.ctypes.data,
                    self._hi.ctypes.data, self._sizes.ctypes.data, values.data_ptr(), _IDS[values.dtype],
                    offsets.data_ptr(), batch, None if out is None else out.data_ptr(),
                    hot.ctypes.data, ctypes.byref(misses), _threads())
        return out, hot.view(bool), int(misses.value)

    def classify(self, values: torch.Tensor, offsets: torch.Tensor, batch: int) -> np.ndarray:
        """Per sample of the batch: True iff all of its lookups hit hot rows."""
        return self.remap(values, offsets, batch, slots=False)[1]


def _checked_batch(values, offsets, batch: int, tables: int):
    if not isinstance(values, torch.Tensor) or values.dtype not in _IDS or values.dim() != 1:
        raise TypeError("values must be a 1-D int32 or int64 tensor of ids")
    if not isinstance(offsets, torch.Tensor) or offsets.dim() != 1:
        raise TypeError("offsets must be a 1-D integer tensor")
    if offsets.numel() != tables * batch + 1:
        raise ValueError(f"offsets must have T*B+1 = {tables * batch + 1} entries for T={tables} "
                         f"tables and B={batch}, got {offsets.numel()}")
    offsets = offsets.to(torch.int64).contiguous()
    if int(offsets[-1]) != values.numel():
        raise ValueError(f"offsets end at {int(offsets[-1])}, but values holds {values.numel()} ids")
    return values.contiguous(), offsets


def _row_bytes(t: torch.Tensor, what: str) -> int:
    """The bytes of one row (dim 0) of a contiguous CPU tensor."""
    if t.device.type != "cpu" or not t.is_contiguous() or t.dim() < 1:
        raise ValueError(f"{what} must be a contiguous CPU tensor of rows")
    return t.element_size() * (t[0].numel() if t.shape[0] else int(np.prod(t.shape[1:])))


def _checked(name: str, indexed: torch.Tensor, packed: torch.Tensor, idx) -> tuple[np.ndarray, int]:
    """(the indices as int64, the row bytes) of a copy between the `indexed` tensor's rows idx
    and the `packed` tensor's first len(idx) rows."""
    row_bytes = _row_bytes(indexed, f"{name}: the indexed tensor")
    i = np.ascontiguousarray(np.asarray(idx, dtype=np.int64))
    if (_row_bytes(packed, f"{name}: the packed tensor") != row_bytes
            or packed.dtype != indexed.dtype or packed.shape[0] < i.size):
        raise ValueError(f"{name}: {tuple(packed.shape)} {packed.dtype} cannot hold {i.size} rows "
                         f"of {tuple(indexed.shape)} {indexed.dtype}")
    return i, row_bytes


def gather_rows(src: torch.Tensor, idx, out: torch.Tensor) -> torch.Tensor:
    """out[i] = src[idx[i]] (any dtype; rows as bytes), in one native parallel pass."""
    i, row_bytes = _checked("gather_rows", src, out, idx)
    native.call(_gather, src.data_ptr(), src.shape[0], row_bytes, i.ctypes.data, i.size,
                out.data_ptr(), _threads())
    return out


def scatter_rows(src: torch.Tensor, idx, dst: torch.Tensor) -> torch.Tensor:
    """dst[idx[i]] = src[i] (idx distinct), in one native parallel pass."""
    i, row_bytes = _checked("scatter_rows", dst, src, idx)
    native.call(_scatter, src.data_ptr(), i.size, row_bytes, i.ctypes.data, dst.data_ptr(),
                dst.shape[0], _threads())
    return dst
