"""Check a training-format directory against its spec.json before training.

A spec.json that lies (a table smaller than the ids in the files, negative ids, labels 0.5,
NaN features) otherwise fails late: an IndexError inside a kernel, or a NaN loss that looks
like a learning-rate problem. `validate_dataset` checks the spec's types, each file's dtype and
shape, the per-column min/max of the ids, the label values and the finiteness of the dense
features, and raises `DataFormatError` naming the file, the column, the first bad row, the value
and what to do.

Cost: one chunked, vectorized pass over the memory-mapped files (about 1M rows at a time),
whose per-file results (small: a min and max per column) are cached in `.dlrmx-stats.json`
beside the data, keyed by each file's size and mtime_ns; unchanged files are not read again.
The table sizes are compared with the cached min/max every time, so editing spec.json needs no
new pass. A read-only directory just goes uncached. Only when a check fails is the offending
column read a second time, to find the first bad row.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from dlrmx.data.format import (SPLITS, DataFormatError, bag_sizes, column_tables, open_split,
                               read_spec, split_paths)

STATS_FILE = ".dlrmx-stats.json"
STATS_VERSION = 1
CHUNK_ROWS = 1 << 20

FIX = "re-run dlrmx.preprocess (or dlrmx.data.reference) or fix spec.json"


# ------------------------------------------------------------------------------ spec types
def check_spec(spec: dict[str, Any], path: Path) -> None:
    """Types of the spec's fields: column name lists, positive integer table sizes (one per
    sparse column), non-negative integer row counts."""
    for key in ("dense_columns", "sparse_columns"):
        cols = spec[key]
        if not isinstance(cols, list) or not all(isinstance(c, str) for c in cols):
            raise DataFormatError(f"{path}: {key} must be a list of column names, got {cols!r}")
    sizes, names = spec["table_sizes"], spec["sparse_columns"]
    if not isinstance(sizes, list) or len(sizes) != len(names):
        raise DataFormatError(f"{path}: table_sizes must be a list with one size per sparse "
                              f"column ({len(names)}), got {sizes!r}")
    for j, t in enumerate(sizes):
        if not _is_int(t) or t <= 0:
            raise DataFormatError(f"{path}: table_sizes[{j}] ({names[j]}) = {t!r}; every table "
                                  f"needs a positive integer number of rows; {FIX}")
    try:
        bag_sizes(spec)  # multi-hot: one positive ids-per-bag count per sparse column
    except DataFormatError as e:
        raise DataFormatError(f"{path}: {str(e).removeprefix('spec.json: ')}; {FIX}") from None
    rows = spec["rows"]
    if not isinstance(rows, dict):
        raise DataFormatError(f"{path}: rows must map split names to row counts, got {rows!r}")
    for split, n in rows.items():
        if split not in SPLITS:
            raise DataFormatError(f"{path}: rows has unknown split {split!r} (expected {SPLITS})")
        if not _is_int(n) or n < 0:
            raise DataFormatError(f"{path}: rows[{split!r}] = {n!r}; row counts must be "
                                  "non-negative integers")


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


# ----------------------------------------------------------------------- one pass per file
def file_stats(part: str, arr: np.ndarray) -> dict[str, Any]:
    """The summary a check needs, in one chunked pass: per-column id min/max (sparse), the
    number of labels that are not 0/1 (label), per-column non-finite counts (dense)."""
    n = arr.shape[0]
    if part == "label":
        bad = 0
        if arr.dtype.kind != "b":
            for lo in range(0, n, CHUNK_ROWS):
                c = arr[lo:lo + CHUNK_ROWS]
                bad += int(np.count_nonzero((c != 0) & (c != 1)))
        return {"not_01": bad}
    cols = arr.shape[1]
    if part == "dense":
        nonfinite = np.zeros(cols, np.int64)
        for lo in range(0, n, CHUNK_ROWS):
            c = arr[lo:lo + CHUNK_ROWS]
            if not np.isfinite(c).all():
                nonfinite += (~np.isfinite(c)).sum(axis=0)
        return {"nonfinite": nonfinite.tolist()}
    low = np.full(cols, np.iinfo(np.int64).max, np.int64)
    high = np.full(cols, np.iinfo(np.int64).min, np.int64)
    for lo in range(0, n, CHUNK_ROWS):
        c = arr[lo:lo + CHUNK_ROWS]
        np.minimum(low, c.min(axis=0), out=low)
        np.maximum(high, c.max(axis=0), out=high)
    return {"min": low.tolist(), "max": high.tolist()} if n else {"min": None, "max": None}


class _StatsCache:
    """`.dlrmx-stats.json`: {file name: {size, mtime_ns, dtype, shape, stats}}."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / STATS_FILE
        self.entries: dict[str, Any] = {}
        self.dirty = False
        try:
            data = json.loads(self.path.read_text())
            if data.get("version") == STATS_VERSION:
                self.entries = data["files"]
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass  # absent, unreadable or stale: recompute

    @staticmethod
    def _key(path: Path, arr: np.ndarray) -> dict[str, Any]:
        st = path.stat()
        return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "dtype": arr.dtype.str,
                "shape": list(arr.shape)}

    def get(self, path: Path, part: str, arr: np.ndarray) -> tuple[dict[str, Any], bool]:
        """(stats, computed now?)."""
        key = self._key(path, arr)
        hit = self.entries.get(path.name)
        if isinstance(hit, dict) and {k: hit.get(k) for k in key} == key and "stats" in hit:
            return hit["stats"], False
        stats = file_stats(part, arr)
        self.entries[path.name] = {**key, "stats": stats}
        self.dirty = True
        return stats, True

    def save(self) -> str | None:
        """Write atomically; a read-only directory (or any OS error) just goes uncached."""
        if not self.dirty:
            return str(self.path) if self.path.is_file() else None
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(prefix=STATS_FILE, suffix=".tmp", dir=self.path.parent)
            os.chmod(tmp, 0o644)  # readable like the data (mkstemp makes it private)
            with os.fdopen(fd, "w") as f:
                json.dump({"version": STATS_VERSION, "files": self.entries}, f)
            os.replace(tmp, self.path)
        except OSError:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            return None
        return str(self.path)


# ---------------------------------------------------------------------------------- checks
def _first_bad_row(col: np.ndarray, bad) -> int:
    """The first row of a 1-D (memory-mapped) column where bad(chunk) holds: the second pass,
    run only after a summary check failed."""
    for lo in range(0, col.shape[0], CHUNK_ROWS):
        m = bad(np.asarray(col[lo:lo + CHUNK_ROWS]))
        if m.any():
            return lo + int(np.argmax(m))
    raise RuntimeError("internal error: summary statistics and data disagree")


def _check_sparse(path: Path, arr: np.ndarray, stats: dict[str, Any], spec: dict[str, Any]) -> None:
    if stats["min"] is None:
        return
    sizes, names = spec["table_sizes"], spec["sparse_columns"]
    tables, per_bag = column_tables(spec), bag_sizes(spec)
    for j, (low, high) in enumerate(zip(stats["min"], stats["max"])):
        t = tables[j]  # multi-hot files hold several columns per table
        size = int(sizes[t])
        if low >= 0 and high < size:
            continue
        r = _first_bad_row(arr[:, j], lambda c: (c < 0) | (c >= size))
        v = int(arr[r, j])
        what = "is negative" if v < 0 else f"is >= table_sizes[{t}] = {size} in spec.json"
        where = (f"column {names[t]} (index {t})" if per_bag is None else
                 f"column {names[t]} (table {t}; file column {j}, id {j - tables.index(t) + 1} "
                 f"of its {per_bag[t]} per bag)")
        raise DataFormatError(f"{path}: {where}: id {v} at row {r} {what}"
                              f" (ids must be in [0, {size})); {FIX}")


def _check_label(path: Path, arr: np.ndarray, stats: dict[str, Any]) -> None:
    if stats["not_01"]:
        r = _first_bad_row(arr, lambda c: (c != 0) & (c != 1))
        raise DataFormatError(f"{path}: label {arr[r].item()!r} at row {r} is not 0 or 1 "
                              f"({stats['not_01']} such rows); labels must be exactly 0 or 1; "
                              "fix the labels or re-run dlrmx.preprocess")


def _check_dense(path: Path, arr: np.ndarray, stats: dict[str, Any], spec: dict[str, Any]) -> None:
    for j, count in enumerate(stats["nonfinite"]):
        if count:
            r = _first_bad_row(arr[:, j], lambda c: ~np.isfinite(c))
            raise DataFormatError(
                f"{path}: column {spec['dense_columns'][j]} (index {j}): value {arr[r, j]} at "
                f"row {r} is not finite ({count} such rows); dense features must be finite "
                "(transform them before writing, as dlrmx.preprocess does)")


def validate_dataset(directory: str | Path) -> dict[str, Any]:
    """Check a training-format directory; raise DataFormatError at the first problem.

    Returns {"rows": {split: n}, "stats": {split: {part: summary}}, "cache": path of the stats
    cache or None, "computed": [files read in this call]}. Splits with 0 rows are skipped.
    """
    d = Path(directory)
    spec = read_spec(d)
    check_spec(spec, d / "spec.json")
    cache = _StatsCache(d)
    out: dict[str, Any] = {"rows": {}, "stats": {}, "computed": []}
    for split in SPLITS:
        n = int(spec["rows"].get(split, 0))
        out["rows"][split] = n
        if n == 0:
            continue
        arrays = open_split(d, split)  # presence, shapes, dtypes
        paths = split_paths(d, split)
        out["stats"][split] = {}
        for part in ("label", "dense", "sparse"):
            arr = getattr(arrays, part)
            stats, computed = cache.get(paths[part], part, arr)
            out["stats"][split][part] = stats
            if computed:
                out["computed"].append(paths[part].name)
    out["cache"] = cache.save()  # before the checks: a bad file is not read again next time
    for split, parts in out["stats"].items():
        arrays = open_split(d, split)
        paths = split_paths(d, split)
        _check_label(paths["label"], arrays.label, parts["label"])
        _check_dense(paths["dense"], arrays.dense, parts["dense"], spec)
        _check_sparse(paths["sparse"], arrays.sparse, parts["sparse"], spec)
    return out
