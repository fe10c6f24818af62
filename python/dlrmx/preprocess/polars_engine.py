"""The one-machine engine: Polars' streaming engine, so inputs larger than memory work.

Stages: (1) parse every line into typed columns, batch by batch, with one cheap "is this row
bad" test per row (the detailed per-column, per-kind diagnosis runs only on the few bad rows),
writing the good rows to parts under the work directory; (2) one group-by per categorical column
over those parts (one column read each); (3) one narrow join per column (key -> id; the other
columns are not carried through it) and the encoded rows stream, in input order, to the writer.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import polars as pl

from dlrmx.preprocess import report as R
from dlrmx.preprocess.config import PipelineConfig
from dlrmx.preprocess.inputs import Segment, has_invalid_utf8, input_read_error, utf8_copy

INT_RE = r"^[+-]?[0-9]+$"
HEX_RE = r"^[0-9a-fA-F]+$"
PART_ROWS = 1_000_000  # good rows per part file
BATCH_ROWS = 250_000  # rows per streamed batch (parse and encode)


def flag_name(column: str, kind: str) -> str:
    return f"!{column}:{kind}"


def key_dtype(cfg: PipelineConfig, column: str) -> pl.DataType:
    return pl.String() if cfg.schema.parse_kind(column) == "string" else pl.Int64()


UTF8_BAD = "_utf8_bad"  # the line was not UTF-8 (its text has the bad bytes as \xNN escapes)


def _lines(files: list[Path], file_rows: list[int], header: bool,
           invalid_utf8: dict[int, list[int]] | None = None) -> pl.LazyFrame:
    """All data lines with their global position, file index, 1-based line number and whether
    the line was not UTF-8 (``invalid_utf8``: file index -> such line numbers)."""
    frames, offset = [], 0
    for i, (f, n) in enumerate(zip(files, file_rows)):
        lf = pl.scan_lines(str(f), name="line", row_index_name="_i")
        if header:
            lf = lf.slice(1)
        skip = 1 if header else 0
        line_no = pl.col("_i").cast(pl.Int64) + 1
        bad = (invalid_utf8 or {}).get(i)
        bad_lines = pl.lit(pl.Series(bad, dtype=pl.Int64)).implode() if bad else None
        frames.append(lf.select(
            (pl.col("_i").cast(pl.Int64) + (offset - skip)).alias("pos"),
            pl.lit(i, pl.Int32).alias("file_idx"),
            line_no.alias("line_no"),
            pl.col("line"),
            (line_no.is_in(bad_lines) if bad else pl.lit(False)).alias(UTF8_BAD)))
        offset += n
    return pl.concat(frames, how="vertical")


def _with_utf8_flag(lf: pl.LazyFrame) -> pl.LazyFrame:
    return lf if UTF8_BAD in lf.collect_schema() else lf.with_columns(pl.lit(False).alias(UTF8_BAD))


# ------------------------------------------------------------------------------- parsing rules
# Every value comes from one non-strict cast (null when the text is not a number or overflows).
# The rules below decide bad rows from those casts alone; `parse_frame` names the exact kind with
# the regexes, but only for rows already known to be bad. The two agree because Polars' integer
# cast accepts exactly INT_RE, and its base-16 parse accepts HEX_RE plus a leading sign (rejected
# here explicitly); tests/test_preprocess.py checks this on edge cases.

def _split(lf: pl.LazyFrame, cfg: PipelineConfig) -> tuple[pl.LazyFrame, dict, dict]:
    """The raw fields (``_f<i>``, ``_extra`` past the schema) plus raw/missing expressions."""
    s = cfg.schema
    n = len(s.columns)
    names = [f"_f{i}" for i in range(n)] + ["_extra"]
    lf = lf.with_columns(pl.col("line").str.strip_suffix("\r").str.splitn(s.delimiter, n + 1)
                         .struct.rename_fields(names).alias("_s")).unnest("_s")
    raw = {c: pl.col(f"_f{i}") for i, c in enumerate(s.columns)}
    missing = {c: (raw[c].is_null() | (raw[c] == "")) for c in s.columns}
    return lf, raw, missing


def _int(raw: pl.Expr) -> pl.Expr:
    return raw.cast(pl.Int64, strict=False)


def _hex(raw: pl.Expr) -> pl.Expr:
    return raw.str.to_integer(base=16, strict=False).cast(pl.Int64)


def _label_not_binary(val: pl.Expr) -> pl.Expr:
    return val.is_not_null() & ~val.is_in([0, 1])


def _values(cfg: PipelineConfig, raw: dict, missing: dict) -> list[pl.Expr]:
    """label, dense (filled), categorical keys: the typed columns of a good row."""
    s, ops = cfg.schema, cfg.categorical_ops
    out = [_int(raw[s.label]).alias("label")]
    out += [_int(raw[c]).fill_null(cfg.dense_ops.fill).alias(c) for c in cfg.dense]
    for c in cfg.categorical:
        kind = s.parse_kind(c)
        if kind == "string":
            key = pl.when(missing[c]).then(pl.lit("" if ops.missing == "zero" else None, pl.String)) \
                .otherwise(raw[c])
        else:
            val = _hex(raw[c]) if kind == "hex" else _int(raw[c])
            if ops.max_ind_range > 0:
                val = val % ops.max_ind_range  # floor modulo: never negative, like Spark's pmod
            key = pl.when(missing[c]).then(pl.lit(0 if ops.missing == "zero" else None, pl.Int64)) \
                .otherwise(val)
        out.append(key.alias(c))
    return out


def _any_bad(cfg: PipelineConfig, raw: dict, missing: dict) -> pl.Expr:
    """True where any rule of `parse_frame` flags the row, from the casts alone (no regex)."""
    s = cfg.schema
    label = _int(raw[s.label])
    bad = [pl.col(UTF8_BAD), pl.col("_extra").is_not_null(),
           missing[s.label] | label.is_null() | _label_not_binary(label)]
    for c in cfg.dense:
        bad.append(~missing[c] & _int(raw[c]).is_null())
    for c in cfg.categorical:
        kind = s.parse_kind(c)
        if kind == "hex":
            signed = raw[c].str.starts_with("+") | raw[c].str.starts_with("-")
            bad.append(~missing[c] & (_hex(raw[c]).is_null() | signed))
        elif kind == "int":
            bad.append(~missing[c] & _int(raw[c]).is_null())
    return pl.any_horizontal(bad).fill_null(False)


def screen_frame(lf: pl.LazyFrame, cfg: PipelineConfig) -> pl.LazyFrame:
    """pos, file_idx, line_no, line, typed columns, ``_bad`` and ``_dropped`` per line."""
    lf, raw, missing = _split(_with_utf8_flag(lf), cfg)
    drop = pl.any_horizontal([missing[c] for c in cfg.drop_rows_if_missing]) \
        if cfg.drop_rows_if_missing else pl.lit(False)
    return lf.select("pos", "file_idx", "line_no", "line", UTF8_BAD, *_values(cfg, raw, missing),
                     _any_bad(cfg, raw, missing).alias("_bad"), drop.fill_null(False).alias("_dropped"))


def _int_flags(raw: pl.Expr, missing: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
    ok = raw.str.contains(INT_RE).fill_null(False)
    return (~missing & ~ok), (~missing & ok & _int(raw).is_null())


def parse_frame(lf: pl.LazyFrame, cfg: PipelineConfig) -> tuple[pl.LazyFrame, list[str]]:
    """The diagnosis: one boolean column per (column, bad kind); returns the flag names."""
    s = cfg.schema
    lf, raw, missing = _split(_with_utf8_flag(lf), cfg)
    flags: dict[str, pl.Expr] = {flag_name(R.ROW_LEVEL, R.TOO_MANY_FIELDS): pl.col("_extra").is_not_null()}
    non_num, ovf = _int_flags(raw[s.label], missing[s.label])
    flags[flag_name(s.label, R.MISSING_LABEL)] = missing[s.label]
    flags[flag_name(s.label, R.NON_NUMERIC)] = non_num
    flags[flag_name(s.label, R.OVERFLOW)] = ovf
    flags[flag_name(s.label, R.BAD_LABEL)] = _label_not_binary(_int(raw[s.label]))
    for c in cfg.dense:
        flags[flag_name(c, R.NON_NUMERIC)], flags[flag_name(c, R.OVERFLOW)] = \
            _int_flags(raw[c], missing[c])
    for c in cfg.categorical:
        kind = s.parse_kind(c)
        if kind == "hex":
            ok = raw[c].str.contains(HEX_RE).fill_null(False)
            flags[flag_name(c, R.NON_HEX)] = ~missing[c] & ~ok
            flags[flag_name(c, R.OVERFLOW)] = ~missing[c] & ok & _hex(raw[c]).is_null()
        elif kind == "int":
            flags[flag_name(c, R.NON_NUMERIC)], flags[flag_name(c, R.OVERFLOW)] = \
                _int_flags(raw[c], missing[c])
    # A line that was not UTF-8 is named for that alone: its escaped text says nothing more.
    utf8 = pl.col(UTF8_BAD)
    flags = {k: e.fill_null(False) & ~utf8 for k, e in flags.items()}
    flags = {flag_name(R.ROW_LEVEL, R.INVALID_UTF8): utf8, **flags}
    out = lf.select("pos", "file_idx", "line_no", "line", *[e.alias(k) for k, e in flags.items()])
    return out, list(flags)


# ------------------------------------------------------------------------ intermediate parts
def _part_format(work: Path, rows: int, columns: int) -> str:
    """Uncompressed Arrow IPC (about 4x faster to write than zstd parquet, 5x larger) when it
    takes under a quarter of the free disk; parquet otherwise (Terabyte-sized inputs)."""
    need = rows * (columns * 8 + 1)
    return "arrow" if need < shutil.disk_usage(work).free / 4 else "parquet"


def scan_parts(work: Path) -> pl.LazyFrame:
    d = work / "parsed"
    if any(d.glob("*.arrow")):
        return pl.scan_ipc(str(d / "*.arrow"))
    return pl.scan_parquet(str(d / "*.parquet"))


class PolarsEngine:
    name = "polars"

    def count_lines(self, files: list[Path], header: bool) -> list[int]:
        try:
            counts = pl.collect_all([pl.scan_lines(str(f)).select(pl.len()) for f in files])
        except OSError as e:  # Polars names no file (a truncated gzip: "unexpected end of file")
            raise input_read_error(files, e) or e
        return [max(int(c.item()) - (1 if header else 0), 0) for c in counts]

    def parse(self, cfg: PipelineConfig, files: list[Path], file_rows: list[int],
              segs: list[Segment], work: Path, bad: R.BadRows, quarantine: Path | None,
              progress: Callable[[int], None]) -> tuple[list[int], int]:
        """Stage 1. Returns good rows per segment and rows dropped by ``drop_rows_if_missing``."""
        try:
            return self._parse(cfg, files, files, {}, file_rows, segs, work, bad, quarantine,
                               progress)
        except pl.exceptions.ComputeError as e:
            if "invalid utf8" not in str(e):
                raise
        # Polars reads only UTF-8. Parse again from copies of the files that are not, in which
        # each such line is escaped and marked bad (invalid_utf8), like any other bad row.
        sources, invalid = list(files), {}
        (work / "utf8").mkdir()
        for i, f in enumerate(files):
            if has_invalid_utf8(f):
                sources[i] = work / "utf8" / f"{i}.txt"
                invalid[i] = utf8_copy(f, sources[i])
        shutil.rmtree(work / "parsed", ignore_errors=True)
        bad.reset()
        return self._parse(cfg, files, sources, invalid, file_rows, segs, work, bad, quarantine,
                           progress)

    def _parse(self, cfg: PipelineConfig, files: list[Path], sources: list[Path],
               invalid_utf8: dict[int, list[int]], file_rows: list[int], segs: list[Segment],
               work: Path, bad: R.BadRows, quarantine: Path | None,
               progress: Callable[[int], None]) -> tuple[list[int], int]:
        lf = screen_frame(_lines(sources, file_rows, cfg.schema.header, invalid_utf8), cfg)
        out_dir = work / "parsed"
        out_dir.mkdir(parents=True)
        keep = ["pos", "label", *cfg.dense, *cfg.categorical]
        fmt = _part_format(work, sum(file_rows), len(keep))
        bounds = np.array([sg.end for sg in segs[:-1]], dtype=np.int64)
        good_per_segment = np.zeros(len(segs), dtype=np.int64)
        pending: list[pl.DataFrame] = []
        pending_rows, part, dropped = 0, 0, 0
        qf = None
        if quarantine is not None:
            qf = open(quarantine, "w", encoding="utf-8")
            qf.write("file\tline\tproblems\ttext\n")

        def flush() -> None:
            nonlocal pending, pending_rows, part
            if pending:
                df = pl.concat(pending, rechunk=False)
                path = out_dir / f"part-{part:06d}.{fmt}"
                if fmt == "arrow":
                    df.write_ipc(path, compression="uncompressed")
                else:
                    df.write_parquet(path)
                part += 1
            pending, pending_rows = [], 0

        try:
            for batch in lf.collect_batches(chunk_size=BATCH_ROWS, maintain_order=True):
                progress(batch.height)
                if batch["_bad"].any():
                    self._bad_rows(cfg, batch.filter("_bad"), files, bad, qf)
                    batch = batch.filter(~pl.col("_bad"))
                if batch["_dropped"].any():
                    dropped += int(batch["_dropped"].sum())
                    batch = batch.filter(~pl.col("_dropped"))
                good = batch.select(keep)
                seg_idx = np.searchsorted(bounds, good["pos"].to_numpy(), side="right")
                good_per_segment += np.bincount(seg_idx, minlength=len(segs))
                pending.append(good)
                pending_rows += good.height
                if pending_rows >= PART_ROWS:
                    flush()
            flush()
        finally:
            if qf:
                qf.close()
        return [int(x) for x in good_per_segment], dropped

    @staticmethod
    def _bad_rows(cfg: PipelineConfig, rows: pl.DataFrame, files: list[Path], bad: R.BadRows,
                  qf) -> None:
        """Diagnose the bad rows of a batch: counts per (column, kind), examples, quarantine."""
        lf, flag_names = parse_frame(rows.select("pos", "file_idx", "line_no", "line", UTF8_BAD)
                                     .lazy(), cfg)
        rows = lf.collect()
        bad.rows += rows.height
        for name, total in zip(flag_names, rows.select(pl.col(flag_names).sum()).row(0)):
            if total:
                col, kind = name[1:].rsplit(":", 1)
                bad.counts[(col, kind)] += int(total)
        if cfg.on_bad_row != "fail" and len(bad.examples) >= bad.max_examples and not qf:
            return
        problems = rows.select(pl.concat_list([pl.when(pl.col(f)).then(pl.lit(f[1:]))
                                               for f in flag_names]).list.drop_nulls()).to_series()
        examples = [R.BadExample(str(files[fi]), int(ln), list(pr), text or "")
                    for fi, ln, pr, text in zip(rows["file_idx"], rows["line_no"], problems, rows["line"])]
        if any(not e.problems for e in examples):
            raise RuntimeError("internal error: a row failed the screen but no rule names why")
        bad.add_examples(examples)
        if cfg.on_bad_row == "fail":
            raise R.BadInputError("bad input row: " + bad.examples[0].describe())
        if qf:
            for e in examples:
                qf.write(f"{e.file}\t{e.line}\t{','.join(e.problems)}\t{e.text}\n")

    def build_dictionaries(self, cfg: PipelineConfig, work: Path, fit_end: int | None
                           ) -> dict[str, pl.DataFrame]:
        """Stage 2: key -> id per column (columns key, id, count, first_pos; sorted by id)."""
        ops = cfg.categorical_ops
        base = 1 if ops.reserved_id == "first" else 0
        lf = scan_parts(work)
        if fit_end is not None:
            lf = lf.filter(pl.col("pos") < fit_end)
        queries = []
        for c in cfg.categorical:
            q = (lf.select(pl.col(c).alias("key"), "pos").drop_nulls("key").group_by("key")
                 .agg(pl.len().cast(pl.Int64).alias("count"), pl.col("pos").min().alias("first_pos"))
                 .filter(pl.col("count") >= ops.min_freq))
            q = q.sort(["count", "key"], descending=[True, False]) if ops.order == "frequency" \
                else q.sort("first_pos")
            queries.append(q.with_row_index("id", offset=base)
                           .select("key", pl.col("id").cast(pl.Int64), "count", "first_pos"))
        return dict(zip(cfg.categorical, pl.collect_all(queries)))

    def encode(self, cfg: PipelineConfig, work: Path, dicts: dict[str, pl.DataFrame],
               reserved: dict[str, int]) -> Iterator[pl.DataFrame]:
        """Stage 3: batches of (pos, label, dense..., ids...) in input order.

        One join per column over that column alone, zipped back side by side: a join of the
        whole row would copy every other column 26 times. Each join builds its hash table once
        and streams the rows through it."""
        lf = scan_parts(work)
        parts = [lf.select("pos", "label", *cfg.dense)]
        for c in cfg.categorical:
            d = dicts[c].lazy().select(pl.col("key").cast(key_dtype(cfg, c)).alias(c), "id")
            parts.append(lf.select(c).join(d, on=c, how="left", maintain_order="left")
                         .select(pl.col("id").fill_null(reserved[c]).alias(c)))
        yield from pl.concat(parts, how="horizontal").collect_batches(chunk_size=BATCH_ROWS,
                                                                      maintain_order=True)
