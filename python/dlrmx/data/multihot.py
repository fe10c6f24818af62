"""Multi-hot inputs made from one-hot ids by MLPerf DLRMv2's rule, in memory (`MultiHot`, used
by the batch sources) or written once as a new training-format directory (the command below).

The rule (MLPerf Training's recommendation_v2/torchrec_dlrm, whose `Multihot` class is the
file `torchrec_dlrm/multi_hot.py` of github.com/facebookresearch/dlrm, used on the fly by
`dlrm_main.py --multi_hot_sizes` and for the stored data set by
`torchrec_dlrm/scripts/materialize_synthetic_multihot_dataset.py`):

* NumPy's legacy global generator is seeded once, `np.random.seed(0)`, before the first table;
  the tables are then drawn in table order from that one stream.
* Table t, with rows_t rows and multi-hot size s_t, gets a lookup table L_t of shape
  (rows_t, s_t): column 0 is the row number itself (`arange(rows_t)`), columns 1..s_t-1 are
  drawn row by row (C order) as
  - uniform: `np.random.randint(0, rows_t, size=(rows_t, s_t - 1))`;
  - pareto: `np.random.pareto(a=0.25, size=(rows_t, s_t - 1)).astype(np.int32) % rows_t`.
  For s_t == 1 the draw has size 0: it consumes nothing from the stream, and L_t is the row
  numbers alone (the bag is the one-hot id). s_t may exceed rows_t (ids then repeat in a bag).
  MLPerf casts every L_t to int32 (`torch.from_numpy(...).int()`).
* Sample b's bag for table t is L_t[id_bt]: its own id first, then the s_t - 1 drawn ids of
  that row. (The materialization script first takes `id % rows_t`; dlrmx ids are already
  checked to lie in [0, rows_t), so that is the identity here.) A batch's bags are table-major
  (every sample's bag of table 0, then table 1, ...), offsets advancing by s_t.

What dlrmx does the same, and where it differs only in how:

* the same draws: a `np.random.RandomState(seed)` (seed 0, as MLPerf) gives the legacy global
  generator's stream; the draws are made in row chunks (bounded memory; the stream is the same,
  chunking draws row by row in C order), and uniform draws straight as int32 where the table
  fits (NumPy's legacy bounded-integer draw gives the same values for int32 and int64 when the
  range fits in 32 bits; the tests check the result against the plain int64 call);
* pareto's cast: NumPy's float64 -> int32 cast of a value >= 2**31 (about 0.5% of the draws,
  a=0.25 being very heavy-tailed) is undefined in C; on x86, where MLPerf ran, it gives
  -2**31, which `% rows_t` then maps to rows_t - (2**31 mod rows_t). dlrmx writes that x86
  result explicitly, so every platform gets MLPerf's ids;
* memory: column 0 is the id itself, so only columns 1..s_t-1 are stored (nothing for s_t ==
  1): `MultiHot.nbytes(table_sizes, sizes)` = sum_t rows_t * (s_t - 1) * 4 bytes (8 for a
  table above 2**31 - 1 rows, which MLPerf's int32 cast could not hold). The tables are built
  on first use (or `build()`), so a trainer can check the memory before paying it.

Materialized files, once, instead of expanding every batch:

    python -m dlrmx.data.multihot IN_DIR -o OUT_DIR --multi-hot-sizes mlperf \\
        --multi-hot-distribution uniform

reads a one-hot training-format directory and writes a new one: labels and dense features
hard-linked (copied with --copy, or where a link is impossible), `{split}_sparse.npy` of shape
(N, sum_t s_t) with table t's s_t ids in contiguous columns (table-grouped; written in chunks
of rows, never a whole split in memory), and a spec.json with `"multi_hot_sizes"` and, under
`produced_by`, the distribution, the seed and the rule. Everything is written in a temporary
directory beside OUT_DIR and renamed into place when complete and validated.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from dlrmx import atomic
from dlrmx.cli import CliError, Parser, die
from dlrmx.data.format import (INT32_MAX, SPLITS, DataFormatError, bag_sizes, check_output_dir,
                               open_split, read_spec, split_paths, sparse_dtype, write_spec)
from dlrmx.data.validate import validate_dataset

MLPERF_MULTI_HOT_SIZES = [3, 2, 1, 2, 6, 1, 1, 1, 1, 7, 3, 8, 1, 6, 9, 5, 1, 1, 1, 12, 100, 27,
                          10, 3, 1, 1]
MLPERF_SEED = 0  # MLPerf's np.random.seed(0): the lookup tables are part of the data set
PARETO_A = 0.25
DISTRIBUTIONS = ("uniform", "pareto")
RULE = ("MLPerf DLRMv2 multi-hot (mlcommons/training recommendation_v2/torchrec_dlrm; "
        "facebookresearch/dlrm torchrec_dlrm/multi_hot.py, class Multihot): one legacy NumPy "
        "stream seeded once, tables in order; table t's lookup table has column 0 = row id and "
        "columns 1..s_t-1 = randint(0, rows_t, (rows_t, s_t-1)) (uniform) or "
        "pareto(a=0.25, (rows_t, s_t-1)).astype(int32) % rows_t (pareto, x86 cast); a sample's "
        "bag for table t is lookup_t[id]")
CHUNK_VALUES = 1 << 22  # ids drawn or expanded per chunk (16-32 MiB of temporaries)

FLAG = "--multi-hot-sizes"


def parse_multi_hot_sizes(text: str, num_tables: int) -> list[int] | None:
    """`--multi-hot-sizes` -> ids per bag for each of `num_tables` tables, or None (one-hot).

    "" -> None; "mlperf" -> MLPerf DLRMv2's 26 sizes; one number -> that for every table;
    N1-N2-...-NT (dash-separated, as the --arch-* flags) -> one per table, each >= 1."""
    text = str(text).strip()
    if not text:
        return None
    if text.lower() == "mlperf":
        if num_tables != len(MLPERF_MULTI_HOT_SIZES):
            raise ValueError(f"{FLAG} mlperf gives MLPerf DLRMv2's {len(MLPERF_MULTI_HOT_SIZES)} "
                             f"sizes (one per Criteo table), but there are {num_tables} tables; "
                             f"give {num_tables} dash-separated sizes or one number for all")
        return list(MLPERF_MULTI_HOT_SIZES)
    if "," in text:
        raise ValueError(f"{FLAG} {text!r}: separate the sizes with dashes, as the --arch-* "
                         f"flags (e.g. {text.replace(',', '-')!r})")
    parts = text.split("-")
    sizes = []
    for i, tok in enumerate(parts):
        tok = tok.strip()
        where = f"entry {i + 1} of {len(parts)}" if len(parts) > 1 else "the value"
        if not tok.isdigit() or int(tok) < 1:
            raise ValueError(f"{FLAG} {text!r}: {where} ({tok!r}) is not a positive integer; "
                             "give ids per bag as one number for every table, N1-N2-...-NT "
                             "(one per table, each >= 1), or 'mlperf'")
        sizes.append(int(tok))
    if len(sizes) == 1:
        return sizes * num_tables
    if len(sizes) != num_tables:
        raise ValueError(f"{FLAG} {text!r} has {len(sizes)} entries but there are {num_tables} "
                         f"tables; give {num_tables} dash-separated sizes (one per table) or one "
                         "number for all")
    return sizes


def _check_sizes(table_sizes: Sequence[int], sizes: Sequence[int]) -> tuple[list[int], list[int]]:
    rows, per = [int(r) for r in table_sizes], [int(s) for s in sizes]
    if len(per) != len(rows):
        raise ValueError(f"{FLAG}: {len(per)} sizes for {len(rows)} tables; give one per table")
    for t, (r, s) in enumerate(zip(rows, per)):
        if r < 1:
            raise ValueError(f"table {t}: {r} rows; every table needs at least one row")
        if s < 1:
            raise ValueError(f"{FLAG}: table {t} (entry {t + 1}) has size {s}; every bag needs "
                             "at least one id (1 is one-hot)")
    return rows, per


def _table_dtype(rows: int) -> np.dtype:
    return np.dtype(np.int32 if rows <= INT32_MAX else np.int64)


def pareto_ids(draws: np.ndarray, rows: int) -> np.ndarray:
    """MLPerf's `draws.astype(np.int32) % rows` with x86's cast (truncation; a value >= 2**31
    becomes -2**31), platform-independent; int64 in [0, rows)."""
    trunc = np.where(draws < 2.0**31, draws, -(2.0**31)).astype(np.int64)
    return np.mod(trunc, rows)


class MultiHot:
    """One-hot ids -> MLPerf DLRMv2 multi-hot bags (see the module docstring for the rule).

    `table_sizes[t]` rows and `sizes[t]` ids per bag for table t; `distribution` "uniform" or
    "pareto"; `seed` 0 is MLPerf's. The lookup tables are built on the first `expand` (or
    `build()`), thread-safely; `nbytes(table_sizes, sizes)` says their memory beforehand.
    """

    def __init__(self, table_sizes: Sequence[int], sizes: Sequence[int],
                 distribution: str = "uniform", seed: int = MLPERF_SEED) -> None:
        if distribution not in DISTRIBUTIONS:
            raise ValueError(f"--multi-hot-distribution must be one of {DISTRIBUTIONS}, got "
                             f"{distribution!r}")
        self.table_sizes, self.sizes = _check_sizes(table_sizes, sizes)
        self.distribution, self.seed = distribution, int(seed)
        self.id_dtype = sparse_dtype(self.table_sizes)  # of expanded batches: the format's
        self.width = sum(self.sizes)
        self.columns = np.concatenate([[0], np.cumsum(self.sizes)]).astype(np.int64)
        self._extra: list[np.ndarray | None] | None = None
        self._lock = threading.Lock()

    @staticmethod
    def nbytes(table_sizes: Sequence[int], sizes: Sequence[int]) -> int:
        """Bytes the lookup tables hold: rows_t * (s_t - 1) ids per table (column 0, the id
        itself, is not stored), 4 bytes each (8 above 2**31 - 1 rows)."""
        rows, per = _check_sizes(table_sizes, sizes)
        return sum(r * (s - 1) * _table_dtype(r).itemsize for r, s in zip(rows, per))

    @property
    def built(self) -> bool:
        return self._extra is not None

    def build(self) -> "MultiHot":
        """Draw the lookup tables now (once; later calls return at once)."""
        if self._extra is None:
            with self._lock:
                if self._extra is None:
                    self._extra = self._draw()
        return self

    def _draw(self) -> list[np.ndarray | None]:
        rng = np.random.RandomState(self.seed)  # the stream of np.random.seed(seed)
        out: list[np.ndarray | None] = []
        for rows, s in zip(self.table_sizes, self.sizes):
            if s == 1:  # a size-0 draw: MLPerf's call consumes nothing from the stream
                out.append(None)
                continue
            dt = _table_dtype(rows)
            extra = np.empty((rows, s - 1), dtype=dt)
            step = max(1, CHUNK_VALUES // (s - 1))
            for lo in range(0, rows, step):
                n = min(step, rows - lo)
                if self.distribution == "uniform":
                    extra[lo:lo + n] = rng.randint(0, rows, size=(n, s - 1), dtype=dt)
                else:
                    extra[lo:lo + n] = pareto_ids(rng.pareto(PARETO_A, size=(n, s - 1)), rows)
            out.append(extra)
        return out

    def table(self, t: int) -> np.ndarray:
        """MLPerf's whole lookup table L_t, (rows_t, s_t): row ids, then the drawn ids."""
        self.build()
        ids = np.arange(self.table_sizes[t], dtype=_table_dtype(self.table_sizes[t]))[:, None]
        extra = self._extra[t]  # type: ignore[index]
        return ids if extra is None else np.concatenate([ids, extra], axis=1)

    def expand(self, sparse: np.ndarray) -> np.ndarray:
        """[B, T] one-hot ids -> [B, sum(sizes)] ids, table t's bag in columns
        columns[t]:columns[t+1] (table-grouped), in `id_dtype`."""
        sparse = np.asarray(sparse)
        t_count = len(self.sizes)
        if sparse.ndim != 2 or sparse.shape[1] != t_count:
            raise ValueError(f"MultiHot.expand: sparse must be [batch, {t_count}] one-hot ids "
                             f"(one column per table), got shape {sparse.shape}")
        if sparse.dtype.kind not in "iu":
            raise ValueError(f"MultiHot.expand: sparse ids have dtype {sparse.dtype}, expected "
                             "integers")
        b = sparse.shape[0]
        out = np.empty((b, self.width), dtype=self.id_dtype)
        if b == 0:
            return out
        low, high = sparse.min(axis=0), sparse.max(axis=0)
        for t in range(t_count):
            if low[t] < 0 or high[t] >= self.table_sizes[t]:
                col = sparse[:, t]
                r = int(np.argmax((col < 0) | (col >= self.table_sizes[t])))
                raise ValueError(f"MultiHot.expand: table {t}: id {col[r].item()} at row {r} is "
                                 f"outside [0, {self.table_sizes[t]})")
        self.build()
        for t in range(t_count):
            c, ids = int(self.columns[t]), sparse[:, t]
            out[:, c] = ids
            extra = self._extra[t]  # type: ignore[index]
            if extra is not None:
                out[:, c + 1:int(self.columns[t + 1])] = extra[ids]
        return out

    def provenance(self) -> dict[str, Any]:
        """What spec.json records about the expansion."""
        return {"multi_hot_sizes": list(self.sizes), "distribution": self.distribution,
                "seed": self.seed, "pareto_a": PARETO_A if self.distribution == "pareto" else None,
                "rule": RULE}

    def __repr__(self) -> str:
        return (f"MultiHot({len(self.sizes)} tables, {self.width} ids per sample, "
                f"{self.distribution}, seed {self.seed}, "
                f"{self.nbytes(self.table_sizes, self.sizes) / 2**20:.1f} MiB)")


# ------------------------------------------------------------------------ materialization
def _check_out(inp: Path, out: Path, overwrite: bool) -> None:
    if out == inp or inp in out.parents or out in inp.parents:
        raise DataFormatError(f"-o {out}: the output must not be the input directory {inp}, "
                              "nor inside it or around it; choose another directory")
    check_output_dir(out, overwrite, f"-o {out}")


def _link_or_copy(src: Path, dst: Path, link: bool) -> str:
    if link:
        try:
            os.link(src, dst)
            return "linked"
        except OSError:
            pass  # another filesystem, or links not allowed: copy
    shutil.copyfile(src, dst)
    return "copied"


def _write_sparse(path: Path, src: np.ndarray, mh: MultiHot) -> None:
    """Expand `src` (N, T) into an .npy (N, sum(sizes)) chunk by chunk, with plain writes (a
    full disk is an OSError naming the file, not a crash inside a memory map)."""
    n = src.shape[0]
    header = {"descr": np.lib.format.dtype_to_descr(mh.id_dtype), "fortran_order": False,
              "shape": (n, mh.width)}
    step = max(1, CHUNK_VALUES // max(1, mh.width))
    try:
        with open(path, "wb") as f:
            np.lib.format.write_array_header_1_0(f, header)
            for lo in range(0, n, step):
                f.write(mh.expand(np.asarray(src[lo:lo + step])).tobytes())
    except OSError as e:
        raise OSError(e.errno, e.strerror, str(path)) from e


def materialize(in_dir: str | Path, out_dir: str | Path, sizes: Sequence[int],
                distribution: str = "uniform", *, seed: int = MLPERF_SEED,
                overwrite: bool = False, link: bool = True) -> Path:
    """Write the multi-hot version of the one-hot training-format directory `in_dir` into
    `out_dir` (see the module docstring); returns `out_dir`. Nothing is left in `out_dir`
    unless the whole directory was written and validated."""
    inp, out = Path(in_dir).resolve(), Path(out_dir).resolve()
    validate_dataset(inp)
    spec = read_spec(inp)
    if bag_sizes(spec) is not None:
        raise DataFormatError(f"{inp}: already multi-hot (spec.json has multi_hot_sizes "
                              f"{bag_sizes(spec)}); materialize from the one-hot data")
    table_sizes = [int(t) for t in spec["table_sizes"]]
    mh = MultiHot(table_sizes, sizes, distribution, seed)
    _check_out(inp, out, overwrite)
    with atomic.staged_dir(out) as tmp:  # replaces out when done, removed on failure
        how = {}
        for split in SPLITS:
            if int(spec["rows"].get(split, 0)) == 0:
                continue
            data = open_split(inp, split)
            src, dst = split_paths(inp, split), split_paths(tmp, split)
            for part in ("label", "dense"):
                how[f"{split}_{part}"] = _link_or_copy(src[part], dst[part], link)
            _write_sparse(dst["sparse"], data.sparse, mh)
        write_spec(tmp, dense_columns=spec["dense_columns"], sparse_columns=spec["sparse_columns"],
                   label_column=spec.get("label_column", "label"), table_sizes=table_sizes,
                   rows=spec["rows"], multi_hot_sizes=mh.sizes,
                   produced_by={"tool": "dlrmx.data.multihot", "multi_hot": mh.provenance(),
                                "input": {"path": str(inp), "produced_by": spec.get("produced_by")},
                                "label_and_dense": how})
        validate_dataset(tmp)  # also leaves the stats cache (mtimes survive the rename)
    return out


# ---------------------------------------------------------------------------------- CLI
def build_parser() -> Parser:
    p = Parser(prog="python -m dlrmx.data.multihot",
               description="Write the MLPerf DLRMv2 multi-hot version of a one-hot training-"
                           "format directory (labels and dense features linked, sparse ids "
                           "expanded by MLPerf's rule).")
    p.add_argument("input", help="a one-hot training-format directory (spec.json + *.npy)")
    p.add_argument("-o", "--out-dir", required=True, help="output directory (training format)")
    p.add_argument(FLAG, required=True, help="ids per bag of each table: 'mlperf' (MLPerf "
                   "DLRMv2's 3-2-1-2-6-...), one number for all, or N1-N2-...-NT")
    p.add_argument("--multi-hot-distribution", default="uniform", choices=DISTRIBUTIONS,
                   help="how the extra ids are drawn (MLPerf's uniform or pareto)")
    p.add_argument("--copy", action="store_true", help="copy labels and dense features instead "
                   "of hard-linking them")
    p.add_argument("--force", action="store_true", help="replace an existing training-format "
                   "output directory")
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        a = build_parser().parse_args(argv)
        spec = read_spec(a.input)
        sizes = parse_multi_hot_sizes(a.multi_hot_sizes, len(spec["table_sizes"]))
        if sizes is None:
            raise CliError(f"{FLAG} is empty: give 'mlperf', one number, or N1-N2-...-NT")
        out = materialize(a.input, a.out_dir, sizes, a.multi_hot_distribution,
                          overwrite=a.force, link=not a.copy)
    except (CliError, DataFormatError, ValueError, OSError) as e:
        return die(e)
    made = read_spec(out)
    print(f"wrote {out}: {sum(sizes)} ids per sample ({a.multi_hot_distribution}), "
          + ", ".join(f"{s} {n:,} rows" for s, n in made["rows"].items() if n))
    return 0


if __name__ == "__main__":
    sys.exit(main())
