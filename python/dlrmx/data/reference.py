"""The reference DLRM's processed data -> the dlrmx training format.

Two layouts of facebookresearch/dlrm's loaders:

* ``--processed-data-file=kaggleAdDisplayChallenge_processed.npz``: one .npz with ``X_int``
  (N, 13) raw integer counts (negatives possible), ``X_cat`` (N, 26) dense ids, ``y`` (N,) and
  ``counts`` (26,) table sizes. As the reference's Kaggle loader: the rows are cut into `days`
  chunks by divmod (the first N mod days chunks one row longer); train is every chunk but the
  last; the last is halved as np.array_split does: test the first half, val the second.
* ``--mlperf-bin-loader``: ``{prefix}_train.bin``, ``{prefix}_test.bin`` and optionally
  ``{prefix}_val.bin``, each little-endian int32 records of 40 values per row (label, 13 raw
  integers, 26 ids), and a counts file ``*_fea_count.npz`` with key ``counts``. Without a val
  file the test file is halved (test first, val second).

Both get the reference's transforms: dense = log(max(x, 0) + 1) as float32 (computed in float64,
as dlrmx.preprocess does), ids % max_ind_range and table sizes min(count, max_ind_range) when
max_ind_range > 0. Rows keep their order (the trainer shuffles by blocks).

Memory: both stream `CHUNK_ROWS` rows at a time (about 100 MB of temporaries), whatever N. The
.bin files are memory-mapped; an .npz member (a zip entry, compressed or not) is read as a
stream, so a compressed .npz costs its decompression time but no more memory. Output goes to a
temporary directory beside out_dir, is validated, and is renamed into place.

CLI: ``python -m dlrmx.data.reference INPUT -o OUT_DIR [--max-ind-range N] [--counts-file F]``.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from dlrmx import atomic
from dlrmx.cli import Parser, die
from dlrmx.data.format import (DataFormatError, SplitWriter, check_ids, check_labels,
                               check_output_dir, read_spec, sparse_dtype, write_spec)
from dlrmx.data.validate import validate_dataset

N_DENSE, N_SPARSE = 13, 26
RECORD = 1 + N_DENSE + N_SPARSE  # int32 values per row of an MLPerf .bin file
CHUNK_ROWS = 1 << 18
NPZ_KEYS = ("X_int", "X_cat", "y", "counts")
NPZ_LAYOUT = "X_int (N, 13), X_cat (N, 26), y (N,), counts (26,)"


# ---------------------------------------------------------------------------- transforms
def dense_transform(x: np.ndarray) -> np.ndarray:
    """Raw integer counts -> log(max(x, 0) + 1), float32."""
    return np.log1p(np.maximum(np.asarray(x, dtype=np.float64), 0.0)).astype(np.float32)


def table_sizes_for(counts: np.ndarray, max_ind_range: int) -> list[int]:
    sizes = [int(c) for c in counts]
    return [min(c, max_ind_range) for c in sizes] if max_ind_range > 0 else sizes


def kaggle_split_bounds(n: int, days: int = 7) -> tuple[int, int]:
    """(end of train, end of test) rows, as the reference's Kaggle loader splits N rows."""
    if days < 2:
        raise ValueError(f"days must be >= 2 (train is all days but the last), got {days}")
    last = n // days  # divmod: only the first N mod days chunks get the extra row
    train_end = n - last
    return train_end, train_end + (last + 1) // 2


# ------------------------------------------------------------------------- the npz reader
class _NpyStream:
    """One .npy member of an .npz, read row chunk by row chunk (works for compressed members)."""

    def __init__(self, zf: zipfile.ZipFile, key: str, source: Path) -> None:
        self.key, self.source = key, source
        self.f = zf.open(f"{key}.npy")
        try:
            version = np.lib.format.read_magic(self.f)
            read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                           (2, 0): np.lib.format.read_array_header_2_0}.get(version)
            if read_header is None:
                raise ValueError(f"unsupported .npy format version {version}")
            shape, fortran, dtype = read_header(self.f)
        except (ValueError, OSError, EOFError) as e:
            raise DataFormatError(f"{source}: key {key!r} is not a valid .npy array ({e})") from e
        if dtype.hasobject or dtype.kind not in "biuf":
            raise DataFormatError(f"{source}: key {key!r} has dtype {dtype}, expected numbers")
        if fortran and len(shape) > 1:
            raise DataFormatError(f"{source}: key {key!r} is stored in Fortran order; re-save it "
                                  "with np.savez(..., X=np.ascontiguousarray(X))")
        self.shape, self.dtype = tuple(shape), dtype
        self.row_bytes = dtype.itemsize * int(np.prod(shape[1:], dtype=np.int64))
        self.done = 0

    def read(self, rows: int) -> np.ndarray:
        want = rows * self.row_bytes
        try:
            data = self.f.read(want)
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as e:
            raise DataFormatError(f"{self.source}: key {self.key!r} is corrupt near row "
                                  f"{self.done} ({e})") from e
        if len(data) != want:
            raise DataFormatError(f"{self.source}: key {self.key!r} is truncated: expected "
                                  f"{self.shape[0]} rows, the data ends near row "
                                  f"{self.done + len(data) // max(self.row_bytes, 1)}")
        self.done += rows
        return np.frombuffer(data, dtype=self.dtype).reshape((rows,) + self.shape[1:])


def _open_npz(path: Path) -> zipfile.ZipFile:
    if not path.is_file():
        raise DataFormatError(f"{path}: no such file")
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise DataFormatError(f"{path}: not a readable .npz (zip) file ({e}); it may be "
                              "truncated: re-create it with the reference's preprocessing") from e


def _check_npz_shapes(path: Path, s: dict[str, _NpyStream]) -> int:
    n = s["y"].shape[0] if s["y"].shape else -1
    want = {"y": (n,), "X_int": (n, N_DENSE), "X_cat": (n, N_SPARSE), "counts": (N_SPARSE,)}
    text = {"y": "(N,)", "X_int": "(N, 13)", "X_cat": "(N, 26)", "counts": "(26,)"}
    for key in NPZ_KEYS:
        if s[key].shape != want[key]:
            raise DataFormatError(f"{path}: key {key!r} has shape {s[key].shape}, expected "
                                  f"{text[key]} with N = {n} rows (the layout is {NPZ_LAYOUT})")
    for key in ("X_int", "X_cat"):
        if s[key].dtype.kind not in "iu":
            raise DataFormatError(f"{path}: key {key!r} has dtype {s[key].dtype}, expected "
                                  "integers")
    return n


def convert_npz(npz_path: str | Path, out_dir: str | Path, *, max_ind_range: int = -1,
                days: int = 7, overwrite: bool = False) -> Path:
    """The reference's processed Kaggle .npz -> a dlrmx training-format directory (returned)."""
    src = Path(npz_path).resolve()
    with _open_npz(src) as zf:
        names = set(zf.namelist())
        for key in NPZ_KEYS:
            if f"{key}.npy" not in names:
                raise DataFormatError(f"{src}: missing key {key!r} (found "
                                      f"{sorted(n.removesuffix('.npy') for n in names)}); the "
                                      f"reference's processed Kaggle file holds {NPZ_LAYOUT}")
        streams = {k: _NpyStream(zf, k, src) for k in NPZ_KEYS}
        n = _check_npz_shapes(src, streams)
        counts = streams["counts"].read(N_SPARSE)
        sizes = _sizes(counts, max_ind_range, src)
        train_end, test_end = kaggle_split_bounds(n, days)
        bounds = {"train": (0, train_end), "test": (train_end, test_end), "val": (test_end, n)}

        def chunks() -> Iterator[Chunk]:
            for lo in range(0, n, CHUNK_ROWS):
                m = min(CHUNK_ROWS, n - lo)
                yield Chunk(f"{src} key 'y'", f"{src} key 'X_cat'", lo, streams["y"].read(m),
                            streams["X_int"].read(m), streams["X_cat"].read(m))

        produced = {"tool": "dlrmx.data.reference.convert_npz", "format": "reference-npz",
                    "days": days, **_source_record(src, max_ind_range)}
        return _write(Path(out_dir), chunks(), bounds, sizes, produced, max_ind_range,
                      overwrite)


# ------------------------------------------------------------------------- the bin reader
def _bin_prefix(path: Path) -> Path:
    """The reference's prefix: --processed-data-file without its extension (x.npz -> x), or a
    `{prefix}_train.bin` given directly, or the one `*_train.bin` in a directory."""
    if path.is_dir():
        found = sorted(path.glob("*_train.bin"))
        if len(found) != 1:
            raise DataFormatError(f"{path}: expected one *_train.bin file, found "
                                  f"{[p.name for p in found] or 'none'}")
        path = found[0]
    name = path.name
    stem = name[:-len("_train.bin")] if name.endswith("_train.bin") else name.split(".")[0]
    return path.with_name(stem)


def _find_counts(prefix: Path, counts_file: str | None) -> Path:
    if counts_file:
        return Path(counts_file)
    found = sorted(prefix.parent.glob("*_fea_count.npz"))
    own = prefix.with_name(prefix.name + "_fea_count.npz")
    if own in found:
        return own
    if len(found) == 1:
        return found[0]
    raise DataFormatError(f"{prefix.parent}: {'no' if not found else 'several'} *_fea_count.npz "
                          f"counts files{'' if not found else ' ' + str([p.name for p in found])};"
                          " pass --counts-file (the reference's {raw_data_file}_fea_count.npz)")


def _read_counts(path: Path) -> np.ndarray:
    try:
        with np.load(path) as data:
            if "counts" not in data:
                raise DataFormatError(f"{path}: missing key 'counts' (found {list(data.keys())})")
            counts = np.asarray(data["counts"])
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        if isinstance(e, DataFormatError):
            raise
        raise DataFormatError(f"{path}: not a readable counts .npz ({e})") from e
    if counts.shape != (N_SPARSE,) or counts.dtype.kind not in "iu":
        raise DataFormatError(f"{path}: key 'counts' has shape {counts.shape} dtype "
                              f"{counts.dtype}, expected (26,) integers")
    return counts


def _open_bin(path: Path) -> np.ndarray:
    size = path.stat().st_size
    if size % (4 * RECORD):
        raise DataFormatError(f"{path}: size {size} bytes is not a multiple of {4 * RECORD} "
                              f"({RECORD} int32 values per row): truncated, or not an MLPerf "
                              "binary file")
    if size == 0:
        return np.zeros((0, RECORD), np.int32)
    return np.memmap(path, dtype="<i4", mode="r").reshape(-1, RECORD)


def convert_bin(prefix_or_dir: str | Path, out_dir: str | Path, *, counts_file: str | None = None,
                max_ind_range: int = -1, overwrite: bool = False) -> Path:
    """The reference's MLPerf binary files -> a dlrmx training-format directory (returned)."""
    prefix = _bin_prefix(Path(prefix_or_dir).resolve())
    files = {s: prefix.with_name(f"{prefix.name}_{s}.bin") for s in ("train", "test", "val")}
    for s in ("train", "test"):
        if not files[s].is_file():
            raise DataFormatError(f"{files[s]}: no such file (--mlperf-bin-loader reads "
                                  f"{prefix.name}_train.bin and {prefix.name}_test.bin)")
    counts_path = _find_counts(prefix, counts_file)
    sizes = _sizes(_read_counts(counts_path), max_ind_range, counts_path)
    parts = [("train", _open_bin(files["train"])), ("test", _open_bin(files["test"]))]
    if files["val"].is_file():
        parts.append(("val", _open_bin(files["val"])))
    starts = np.cumsum([0] + [r.shape[0] for _, r in parts])
    bounds = {s: (int(starts[i]), int(starts[i + 1])) for i, (s, _) in enumerate(parts)}
    if "val" not in bounds:  # halve the test file: test first, val second (np.array_split)
        lo, hi = bounds["test"]
        mid = lo + (hi - lo + 1) // 2
        bounds["test"], bounds["val"] = (lo, mid), (mid, hi)

    def chunks() -> Iterator[Chunk]:
        for s, rec in parts:  # the files in order, as one row sequence
            for lo in range(0, rec.shape[0], CHUNK_ROWS):
                c = np.asarray(rec[lo:lo + CHUNK_ROWS])
                yield Chunk(f"{files[s]} (labels, value 0 of each row)",
                            f"{files[s]} (ids, values 14-39 of each row)", lo,
                            c[:, 0], c[:, 1:1 + N_DENSE], c[:, 1 + N_DENSE:])

    produced = {"tool": "dlrmx.data.reference.convert_bin", "format": "reference-bin",
                "files": {s: str(p) for s, p in files.items() if p.is_file()},
                "counts_file": str(counts_path.resolve()),
                **_source_record(files["train"], max_ind_range)}
    return _write(Path(out_dir), chunks(), bounds, sizes, produced, max_ind_range, overwrite)


# ---------------------------------------------------------------------------- the writer
def _sizes(counts: np.ndarray, max_ind_range: int, where: Path) -> list[int]:
    sizes = table_sizes_for(counts, max_ind_range)
    bad = [j for j, c in enumerate(sizes) if c <= 0]
    if bad:
        raise DataFormatError(f"{where}: counts[{bad[0]}] = {sizes[bad[0]]}; every table needs "
                              "a positive count")
    return sizes


def _source_record(src: Path, max_ind_range: int) -> dict[str, Any]:
    st = src.stat()
    return {"source": str(src), "source_size": st.st_size, "source_mtime_ns": st.st_mtime_ns,
            "max_ind_range": max_ind_range}


@dataclass
class Chunk:
    """Consecutive source rows: where they come from (for messages), the first row's number in
    its source, labels, raw dense values, ids."""

    label_source: str
    ids_source: str
    row0: int
    label: np.ndarray
    dense: np.ndarray
    ids: np.ndarray


def _write(out: Path, chunks: Iterator[Chunk], bounds: dict[str, tuple[int, int]],
           sizes: list[int], produced: dict[str, Any], max_ind_range: int,
           overwrite: bool) -> Path:
    """Route a row stream to the three splits (bounds: rows [lo, hi) of the stream), in a
    temporary directory beside `out` that is validated and renamed into place."""
    out = out.resolve()
    check_output_dir(out, overwrite)
    with atomic.staged_dir(out) as tmp:  # replaces out when done, removed on failure
        rows = {s: hi - lo for s, (lo, hi) in bounds.items()}
        st = sparse_dtype(sizes)
        writers = {s: SplitWriter(tmp, s, rows[s], N_DENSE, N_SPARSE, st) for s in bounds}
        pos = 0
        for c in chunks:
            label, ids = c.label, c.ids
            if max_ind_range > 0:
                ids = np.mod(ids, max_ind_range)
            check_labels(label, c.label_source, c.row0)
            check_ids(ids, sizes, c.ids_source, c.row0)
            dense = dense_transform(c.dense)
            for s, (lo, hi) in bounds.items():
                a, b = max(lo, pos) - pos, min(hi, pos + len(label)) - pos
                if a < b:
                    writers[s].write(slice(pos + a - lo, pos + b - lo), label[a:b], dense[a:b],
                                     ids[a:b].astype(st))
            pos += len(label)
        for w in writers.values():
            w.close()
        write_spec(tmp, dense_columns=[f"I{i}" for i in range(1, N_DENSE + 1)],
                   sparse_columns=[f"C{i}" for i in range(1, N_SPARSE + 1)], label_column="label",
                   table_sizes=sizes, rows=rows, produced_by=produced)
        validate_dataset(tmp)  # also leaves the stats cache (mtimes survive the rename)
    return out


# ----------------------------------------------------------------------- finding the data
def find_reference_data(path: str | Path, *, bin_loader: bool = False) -> tuple[str, Path]:
    """What `--processed-data-file` names: ("dlrmx", directory), ("npz", file) or ("bin",
    prefix). With `bin_loader` (the reference's --mlperf-bin-loader) the MLPerf binary files
    beside the named .npz are used, as the reference does."""
    p = Path(path)
    if p.is_dir() and (p / "spec.json").is_file():
        return "dlrmx", p
    if p.is_dir() and not any(p.glob("*_train.bin")):
        raise DataFormatError(f"{p}: neither a training-format directory (no spec.json) nor a "
                              "directory of MLPerf *_train.bin files")
    if not bin_loader and p.is_file() and p.suffix == ".npz":
        return "npz", p
    prefix = _bin_prefix(p)
    if prefix.with_name(prefix.name + "_train.bin").is_file():
        return "bin", prefix
    if bin_loader or p.suffix == ".bin":
        raise DataFormatError(f"{p}: no {prefix.name}_train.bin beside it (--mlperf-bin-loader "
                              "reads {prefix}_train.bin and {prefix}_test.bin)")
    if not p.exists():
        raise DataFormatError(f"{p}: no such file or directory")
    raise DataFormatError(f"{p}: not a dlrmx training-format directory (spec.json), a reference "
                          ".npz (X_int, X_cat, y, counts), or MLPerf .bin files")


def prepare_dataset(path: str | Path, *, bin_loader: bool = False, max_ind_range: int = -1,
                    counts_file: str | None = None, out_dir: str | Path | None = None) -> Path:
    """A training-format directory for `path`: itself if it is one; otherwise the conversion of
    the reference data, made once into `out_dir` (default: beside the source,
    `{name}.dlrmx[-mir{N}]`) and reused while the source file is unchanged."""
    kind, found = find_reference_data(path, bin_loader=bin_loader)
    if kind == "dlrmx":
        return found
    suffix = f"-mir{max_ind_range}" if max_ind_range > 0 else ""
    out = Path(out_dir) if out_dir else found.with_name(f"{found.name.split('.')[0]}"
                                                        f"{'.bin' if kind == 'bin' else ''}"
                                                        f".dlrmx{suffix}")
    src = found if kind == "npz" else found.with_name(found.name + "_train.bin")
    with contextlib.suppress(DataFormatError, OSError, KeyError, TypeError):
        made = read_spec(out)["produced_by"]
        if all(made.get(k) == v for k, v in _source_record(src.resolve(), max_ind_range).items()):
            return out
    try:
        if kind == "npz":
            return convert_npz(found, out, max_ind_range=max_ind_range, overwrite=True)
        return convert_bin(found, out, counts_file=counts_file, max_ind_range=max_ind_range,
                           overwrite=True)
    except PermissionError as e:
        raise DataFormatError(f"cannot write the converted data beside {found} ({e}); convert it "
                              "once with python -m dlrmx.data.reference INPUT -o DIR and pass "
                              "--processed-data-file=DIR") from e


# ---------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="python -m dlrmx.data.reference",
        description="Convert the reference DLRM's processed data (the Kaggle .npz, or the MLPerf "
                    "{prefix}_train/test[/val].bin files) to the dlrmx training format.")
    p.add_argument("input", help="a .npz (X_int, X_cat, y, counts), a {prefix}_train.bin, or a "
                   "directory holding one *_train.bin")
    p.add_argument("-o", "--out-dir", required=True, help="output directory (training format)")
    p.add_argument("--max-ind-range", type=int, default=-1,
                   help="ids %% N and table sizes min(count, N), as the reference (-1: off)")
    p.add_argument("--counts-file", default=None,
                   help="the .bin layout's counts file (default: the one *_fea_count.npz "
                   "beside it)")
    p.add_argument("--days", type=int, default=7, help="the .npz layout's day chunks (train: "
                   "all but the last; the last is halved into test and val)")
    p.add_argument("--force", action="store_true", help="replace an existing output directory")
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        a = build_parser().parse_args(argv)
        if a.max_ind_range < -1 or a.max_ind_range == 0 or a.days < 2:
            raise ValueError("--max-ind-range must be > 0 or -1 (off), and --days >= 2; got "
                             f"{a.max_ind_range} and {a.days}")
        kind, found = find_reference_data(a.input)
        if kind == "dlrmx":
            raise DataFormatError(f"{found}: already in the dlrmx training format")
        if kind == "npz":
            out = convert_npz(found, a.out_dir, max_ind_range=a.max_ind_range, days=a.days,
                              overwrite=a.force)
        else:
            out = convert_bin(found, a.out_dir, counts_file=a.counts_file,
                              max_ind_range=a.max_ind_range, overwrite=a.force)
    except (DataFormatError, ValueError, OSError) as e:
        return die(e)
    rows = read_spec(out)["rows"]
    print(f"wrote {out}: " + ", ".join(f"{s} {n:,} rows" for s, n in rows.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
