"""The dlrmx training data format: what `dlrmx.preprocess` writes and the trainer reads.

A directory holds

* ``spec.json``: ``format_version``, the column names, ``table_sizes`` (the cardinality of each
  categorical column, i.e. the number of embedding rows it needs), ``rows`` per split, and
  ``produced_by`` (the tool, its configuration and inputs);
* per split (``train``, ``val``, ``test``) three standard ``.npy`` files:
  ``{split}_label.npy`` (N,) int8, ``{split}_dense.npy`` (N, n_dense) float32, already
  transformed, and ``{split}_sparse.npy`` (N, n_sparse) int32, or int64 when a table has more
  than 2**31 - 1 rows.

Multi-hot data (`dlrmx.data.multihot`) adds ``multi_hot_sizes`` to spec.json, s_t ids per bag of
table t: ``{split}_sparse.npy`` is then (N, sum_t s_t), table-grouped (table t's s_t ids in
contiguous columns, tables in order), and ``produced_by`` says how the ids were made.

Plain NumPy files so that anyone's tools read them and the trainer memory-maps them; only numpy
is needed here.
"""

from __future__ import annotations

import errno
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")
LABEL_DTYPE = np.dtype(np.int8)
DENSE_DTYPE = np.dtype(np.float32)
INT32_MAX = 2**31 - 1
SPARSE_DTYPES = (np.dtype(np.int32), np.dtype(np.int64))  # what the embedding kernels take


class DataFormatError(ValueError):
    """A training-format directory is missing a file or holds the wrong shapes or types."""


def sparse_dtype(table_sizes: list[int]) -> np.dtype:
    """int32 ids unless some table has more rows than int32 can index."""
    return np.dtype(np.int64 if table_sizes and max(table_sizes) > INT32_MAX else np.int32)


def bag_sizes(spec: dict[str, Any]) -> list[int] | None:
    """spec.json's ``multi_hot_sizes`` (ids per bag of each table), or None for one-hot data;
    DataFormatError when it is not one positive integer per sparse column."""
    sizes = spec.get("multi_hot_sizes")
    if sizes is None:
        return None
    n = len(spec.get("sparse_columns", []))
    if (not isinstance(sizes, list) or len(sizes) != n
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in sizes)):
        raise DataFormatError(f"spec.json: multi_hot_sizes must be a list of {n} positive "
                              f"integers (ids per bag, one per sparse column), got {sizes!r}")
    return list(sizes)


def sparse_width(spec: dict[str, Any]) -> int:
    """Columns of ``{split}_sparse.npy``: one per table, or sum(multi_hot_sizes)."""
    sizes = bag_sizes(spec)
    return len(spec["sparse_columns"]) if sizes is None else sum(sizes)


def column_tables(spec: dict[str, Any]) -> list[int]:
    """The table of each column of ``{split}_sparse.npy`` (table-grouped for multi-hot)."""
    sizes = bag_sizes(spec) or [1] * len(spec["sparse_columns"])
    return [t for t, s in enumerate(sizes) for _ in range(s)]


def split_paths(directory: str | Path, split: str) -> dict[str, Path]:
    d = Path(directory)
    return {part: d / f"{split}_{part}.npy" for part in ("label", "dense", "sparse")}


@dataclass
class Split:
    """One split's arrays (memory-mapped when opened with ``mmap=True``)."""

    label: np.ndarray  # (N,) int8
    dense: np.ndarray  # (N, n_dense) float32
    sparse: np.ndarray  # (N, n_sparse) int32 or int64

    def __len__(self) -> int:
        return int(self.label.shape[0])


def reserve_space(paths: Iterable[Path]) -> None:
    """Allocate the files' blocks now. The splits are written through memory maps of sparse
    files, where a full disk is a SIGBUS crash mid-write; here it is an OSError naming the file."""
    if not hasattr(os, "posix_fallocate"):
        return
    for path in paths:
        size = path.stat().st_size
        fd = os.open(path, os.O_RDWR)
        try:
            if size:
                os.posix_fallocate(fd, 0, size)
        except OSError as e:
            if e.errno in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENODEV):
                continue  # a filesystem without fallocate: nothing to reserve with
            raise OSError(e.errno, e.strerror, str(path)) from e
        finally:
            os.close(fd)


class SplitWriter:
    """Preallocates one split's three files and fills them in pieces (rows at any positions).

    The row count must be known up front; the files are valid .npy files from the start
    (numpy's ``open_memmap`` writes the header), and complete once every row was written.
    """

    def __init__(self, directory: str | Path, split: str, n_rows: int, n_dense: int,
                 n_sparse: int, sparse_type: np.dtype = np.dtype(np.int32)) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        p = split_paths(directory, split)
        mm = np.lib.format.open_memmap
        self.label = mm(p["label"], mode="w+", dtype=LABEL_DTYPE, shape=(n_rows,))
        self.dense = mm(p["dense"], mode="w+", dtype=DENSE_DTYPE, shape=(n_rows, n_dense))
        self.sparse = mm(p["sparse"], mode="w+", dtype=np.dtype(sparse_type),
                         shape=(n_rows, n_sparse))
        reserve_space(p.values())
        self.n_rows, self.paths = n_rows, p

    def write(self, rows: slice | np.ndarray, label: np.ndarray, dense: np.ndarray,
              sparse: np.ndarray) -> None:
        """Write a block of rows at ``rows`` (a slice or an index array); refuses labels other
        than 0/1 and negative ids (a cast would hide them)."""
        check_labels(label, str(self.paths["label"]))
        check_ids(sparse, None, str(self.paths["sparse"]))
        self.label[rows] = label
        self.dense[rows] = dense
        self.sparse[rows] = sparse

    def close(self) -> None:
        for a in (self.label, self.dense, self.sparse):
            a.flush()
        # Dropping the memmaps closes the files.
        del self.label, self.dense, self.sparse


def write_split(directory: str | Path, split: str, label: np.ndarray, dense: np.ndarray,
                sparse: np.ndarray) -> None:
    """Write one split from in-memory arrays (checks shapes; casts to the format's dtypes)."""
    label = np.asarray(label)
    dense = np.asarray(dense)
    sparse = np.asarray(sparse)
    n = label.shape[0]
    if label.ndim != 1 or dense.ndim != 2 or sparse.ndim != 2:
        raise ValueError("label must be (N,), dense (N, n_dense), sparse (N, n_sparse); got "
                         f"{label.shape}, {dense.shape}, {sparse.shape}")
    if dense.shape[0] != n or sparse.shape[0] != n:
        raise ValueError(f"row counts differ: label {n}, dense {dense.shape[0]}, "
                         f"sparse {sparse.shape[0]}")
    check_labels(label, f"{split} label")
    check_ids(sparse, None, f"{split} sparse")
    # int32 unless an id needs more (pass table sizes through write_spec as usual).
    st = np.dtype(np.int64 if sparse.size and sparse.max() > INT32_MAX else np.int32)
    w = SplitWriter(directory, split, n, dense.shape[1], sparse.shape[1], st)
    w.write(slice(0, n), label.astype(LABEL_DTYPE), dense.astype(DENSE_DTYPE), sparse.astype(st))
    w.close()


def check_labels(label: np.ndarray, where: str, row0: int = 0) -> None:
    """Labels must be exactly 0 or 1 (a cast to int8 would turn 0.5 into 0 silently)."""
    label = np.asarray(label)
    if label.dtype.kind == "b" or label.size == 0:
        return
    bad = (label != 0) & (label != 1)
    if bad.any():
        r = int(np.argmax(bad))
        raise DataFormatError(f"{where}: label {label[r].item()!r} at row {row0 + r} is not 0 or "
                              "1; labels must be exactly 0 or 1 (clicks)")


def check_ids(sparse: np.ndarray, table_sizes: list[int] | None, where: str, row0: int = 0
              ) -> None:
    """Ids of a (N, T) block must be in [0, table_sizes[t]) (only >= 0 when sizes are None);
    the message names the column, the first bad row and the value."""
    sparse = np.asarray(sparse)
    if sparse.size == 0:
        return
    if sparse.dtype.kind not in "iu":
        raise DataFormatError(f"{where}: ids have dtype {sparse.dtype}, expected integers")
    if table_sizes is not None and len(table_sizes) != sparse.shape[1]:
        raise DataFormatError(f"{where}: {sparse.shape[1]} id columns but {len(table_sizes)} "
                              "table sizes")
    low = sparse.min(axis=0)
    high = sparse.max(axis=0)
    for j in range(sparse.shape[1]):
        size = None if table_sizes is None else int(table_sizes[j])
        if low[j] >= 0 and (size is None or high[j] < size):
            continue
        col = sparse[:, j]
        r = int(np.argmax((col < 0) | (False if size is None else col >= size)))
        v = col[r].item()
        what = ("is negative" if v < 0 else f"is >= table_sizes[{j}] = {size}")
        raise DataFormatError(f"{where}: column C{j + 1} (index {j}): id {v} at row {row0 + r} "
                              f"{what}; ids must be in [0, table size)")


def write_spec(directory: str | Path, *, dense_columns: list[str], sparse_columns: list[str],
               label_column: str, table_sizes: list[int], rows: dict[str, int],
               produced_by: dict[str, Any], multi_hot_sizes: list[int] | None = None
               ) -> dict[str, Any]:
    """Write ``spec.json`` and return it as a dict (with ``multi_hot_sizes`` for multi-hot
    sparse files)."""
    if len(table_sizes) != len(sparse_columns):
        raise ValueError("one table size per sparse column")
    for j, t in enumerate(table_sizes):
        if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or t <= 0:
            raise ValueError(f"table_sizes[{j}] ({sparse_columns[j]}) = {t!r}: every table needs "
                             "a positive integer number of rows")
    spec = {
        "format_version": FORMAT_VERSION,
        "label_column": label_column,
        "dense_columns": list(dense_columns),
        "sparse_columns": list(sparse_columns),
        "table_sizes": [int(t) for t in table_sizes],
        "sparse_dtype": sparse_dtype(table_sizes).name,
        "rows": {s: int(rows.get(s, 0)) for s in SPLITS},
        "produced_by": produced_by,
    }
    if multi_hot_sizes is not None:
        spec["multi_hot_sizes"] = [int(s) for s in multi_hot_sizes]
        bag_sizes(spec)  # one positive size per sparse column
    (Path(directory) / "spec.json").write_text(json.dumps(spec, indent=2) + "\n")
    return spec


def read_spec(directory: str | Path) -> dict[str, Any]:
    """Read ``spec.json``; names the file and what was expected when it is missing or wrong,
    and refuses a format version this code does not know."""
    d = Path(directory)
    path = d / "spec.json"
    if not d.is_dir():
        raise DataFormatError(f"{d}: not a directory (expected the training format: spec.json "
                              "plus {split}_label/dense/sparse.npy)")
    if not path.is_file():
        raise DataFormatError(f"{path}: missing (the training format needs spec.json with "
                              "format_version, table_sizes and rows)")
    try:
        spec = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DataFormatError(f"{path}: not valid JSON ({e})") from e
    for key in ("format_version", "dense_columns", "sparse_columns", "table_sizes", "rows"):
        if key not in spec:
            raise DataFormatError(f"{path}: missing key {key!r}")
    if spec["format_version"] != FORMAT_VERSION:
        raise DataFormatError(f"{path}: format_version {spec['format_version']!r}, this dlrmx "
                              f"reads {FORMAT_VERSION}")
    return spec


def open_split(directory: str | Path, split: str, mmap: bool = True) -> Split:
    """Open one split; with ``mmap=True`` (default) the arrays are read-only memory maps.
    Each file is checked against spec.json (present, shape, dtype) with a message naming it."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    spec = read_spec(directory)
    n = int(spec["rows"].get(split, 0))
    shapes = {"label": (n,), "dense": (n, len(spec["dense_columns"])),
              "sparse": (n, sparse_width(spec))}
    kinds = {"label": ("biuf", "numeric (int8, or any dtype holding exactly 0 and 1)"),
             "dense": ("f", "float32"),
             "sparse": ("i", "int32 or int64, what the embedding kernels take (convert the file: "
                             "np.save(path, np.load(path).astype(np.int64)))")}
    arrays = {}
    for part, path in split_paths(directory, split).items():
        if not path.is_file():
            raise DataFormatError(f"{path}: missing (spec.json says {split} has {n} rows)")
        try:
            arr = np.load(path, mmap_mode="r" if mmap else None)
        except (ValueError, OSError, EOFError) as e:  # not an .npy file, or a cut one
            raise DataFormatError(f"{path}: not a readable .npy file ({e})".replace("\n", " ")) from None
        if arr.shape != shapes[part]:
            raise DataFormatError(f"{path}: shape {arr.shape}, expected {shapes[part]} (from spec.json)")
        kind, want = kinds[part]
        if arr.dtype.kind not in kind or (part == "dense" and arr.dtype != DENSE_DTYPE) or (
                part == "sparse" and arr.dtype not in SPARSE_DTYPES):
            raise DataFormatError(f"{path}: dtype {arr.dtype}, expected {want}")
        arrays[part] = arr
    return Split(arrays["label"], arrays["dense"], arrays["sparse"])


def write_dataset(directory: str | Path, splits: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
                  table_sizes: list[int], produced_by: dict[str, Any] | None = None) -> Path:
    """Write {split: (label, dense, sparse)} arrays in the training format: a small converter
    for users' own data (and the tests' writer)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    rows = {}
    for split, (label, dense, sparse) in splits.items():
        check_ids(sparse, list(table_sizes), f"{split} sparse")
        write_split(d, split, label, dense, sparse)
        rows[split] = len(label)
    n_dense = next(iter(splits.values()))[1].shape[1]
    write_spec(d, dense_columns=[f"I{i}" for i in range(1, n_dense + 1)],
               sparse_columns=[f"C{i}" for i in range(1, len(table_sizes) + 1)],
               label_column="label", table_sizes=list(table_sizes), rows=rows,
               produced_by=produced_by or {"tool": "dlrmx.data.format.write_dataset"})
    return d


# Re-exported here (the checks live in validate.py, which imports this module).
from dlrmx.data.validate import validate_dataset  # noqa: E402


def check_output_dir(out: Path, overwrite: bool, name: str = "") -> None:
    """An output directory may be replaced only when empty, or with `overwrite` (--force) when
    it is a training-format directory: never an arbitrary directory. `name` prefixes the
    messages (e.g. "-o DIR")."""
    where = name or str(out)
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return
    if not out.is_dir():
        raise DataFormatError(f"{where}: exists and is not a directory; choose another one")
    if not (out / "spec.json").is_file():
        raise DataFormatError(f"{where}: not empty and not a training-format directory (no "
                              "spec.json); refusing to replace it: choose another directory")
    if not overwrite:
        raise DataFormatError(f"{where}: already holds training data; remove it, choose "
                              "another directory, or pass --force to replace it")
