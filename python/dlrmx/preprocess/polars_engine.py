"""The one-machine engine: Polars' streaming engine, so inputs larger than memory work.

Stages: (1) parse every line into typed columns and bad-row flags, batch by batch, writing the
good rows to parquet parts under the work directory; (2) one group-by per categorical column over
those parts (one column read each); (3) join the dictionaries and stream the encoded rows, in
input order, to the writer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import polars as pl

from dlrmx.preprocess import report as R
from dlrmx.preprocess.config import PipelineConfig
from dlrmx.preprocess.inputs import Segment

INT_RE = r"^[+-]?[0-9]+$"
HEX_RE = r"^[0-9a-fA-F]+$"
PART_ROWS = 1_000_000  # good rows per parquet part


def flag_name(column: str, kind: str) -> str:
    return f"!{column}:{kind}"


def key_dtype(cfg: PipelineConfig, column: str) -> pl.DataType:
    return pl.String() if cfg.schema.parse_kind(column) == "string" else pl.Int64()


def _lines(files: list[Path], file_rows: list[int], header: bool) -> pl.LazyFrame:
    """All data lines with their global position, file index and 1-based line number."""
    frames, offset = [], 0
    for i, (f, n) in enumerate(zip(files, file_rows)):
        lf = pl.scan_lines(str(f), name="line", row_index_name="_i")
        if header:
            lf = lf.slice(1)
        skip = 1 if header else 0
        frames.append(lf.select(
            (pl.col("_i").cast(pl.Int64) + (offset - skip)).alias("pos"),
            pl.lit(i, pl.Int32).alias("file_idx"),
            (pl.col("_i").cast(pl.Int64) + 1).alias("line_no"),
            pl.col("line")))
        offset += n
    return pl.concat(frames, how="vertical")


def _int_parse(raw: pl.Expr, missing: pl.Expr) -> tuple[pl.Expr, pl.Expr, pl.Expr]:
    ok = raw.str.contains(INT_RE).fill_null(False)
    val = raw.cast(pl.Int64, strict=False)
    return val, (~missing & ~ok), (~missing & ok & val.is_null())


def parse_frame(lf: pl.LazyFrame, cfg: PipelineConfig) -> tuple[pl.LazyFrame, list[str]]:
    """Typed columns plus one boolean flag column per (column, bad kind); returns flag names."""
    s, ops = cfg.schema, cfg.categorical_ops
    n = len(s.columns)
    raw_names = [f"_f{i}" for i in range(n)] + ["_extra"]
    lf = lf.with_columns(pl.col("line").str.strip_suffix("\r").str.splitn(s.delimiter, n + 1)
                         .struct.rename_fields(raw_names).alias("_s")).unnest("_s")
    raw = {c: pl.col(f"_f{i}") for i, c in enumerate(s.columns)}
    missing = {c: (raw[c].is_null() | (raw[c] == "")) for c in s.columns}
    flags: dict[str, pl.Expr] = {flag_name(R.ROW_LEVEL, R.TOO_MANY_FIELDS): pl.col("_extra").is_not_null()}
    values: list[pl.Expr] = []

    val, non_num, ovf = _int_parse(raw[s.label], missing[s.label])
    flags[flag_name(s.label, R.MISSING_LABEL)] = missing[s.label]
    flags[flag_name(s.label, R.NON_NUMERIC)] = non_num
    flags[flag_name(s.label, R.OVERFLOW)] = ovf | (val.is_not_null() & ((val < -128) | (val > 127)))
    values.append(val.alias("label"))

    for c in cfg.dense:
        val, non_num, ovf = _int_parse(raw[c], missing[c])
        flags[flag_name(c, R.NON_NUMERIC)] = non_num
        flags[flag_name(c, R.OVERFLOW)] = ovf
        values.append(val.fill_null(cfg.dense_ops.fill).alias(c))

    for c in cfg.categorical:
        kind = s.parse_kind(c)
        if kind == "string":
            key = pl.when(missing[c]).then(pl.lit("" if ops.missing == "zero" else None, pl.String)) \
                .otherwise(raw[c])
        else:
            if kind == "hex":
                ok = raw[c].str.contains(HEX_RE).fill_null(False)
                val = raw[c].str.to_integer(base=16, strict=False).cast(pl.Int64)
                flags[flag_name(c, R.NON_HEX)] = ~missing[c] & ~ok
                flags[flag_name(c, R.OVERFLOW)] = ~missing[c] & ok & val.is_null()
            else:
                val, non_num, ovf = _int_parse(raw[c], missing[c])
                flags[flag_name(c, R.NON_NUMERIC)] = non_num
                flags[flag_name(c, R.OVERFLOW)] = ovf
            if ops.max_ind_range > 0:
                val = val % ops.max_ind_range  # floor modulo: never negative, like Spark's pmod
            key = pl.when(missing[c]).then(pl.lit(0 if ops.missing == "zero" else None, pl.Int64)) \
                .otherwise(val)
        values.append(key.alias(c))

    drop = pl.any_horizontal([missing[c] for c in cfg.drop_rows_if_missing]) \
        if cfg.drop_rows_if_missing else pl.lit(False)
    flag_exprs = [e.fill_null(False).alias(k) for k, e in flags.items()]
    out = lf.select(pl.col("pos"), pl.col("file_idx"), pl.col("line_no"), pl.col("line"),
                    *values, *flag_exprs, drop.alias("_dropped"))
    return out, list(flags)


class PolarsEngine:
    name = "polars"

    def count_lines(self, files: list[Path], header: bool) -> list[int]:
        counts = pl.collect_all([pl.scan_lines(str(f)).select(pl.len()) for f in files])
        return [max(int(c.item()) - (1 if header else 0), 0) for c in counts]

    def parse(self, cfg: PipelineConfig, files: list[Path], file_rows: list[int],
              segs: list[Segment], work: Path, bad: R.BadRows, quarantine: Path | None,
              progress: Callable[[int], None]) -> tuple[list[int], int]:
        """Stage 1. Returns good rows per segment and rows dropped by ``drop_rows_if_missing``."""
        lf, flag_names = parse_frame(_lines(files, file_rows, cfg.schema.header), cfg)
        out_dir = work / "parsed"
        out_dir.mkdir(parents=True)
        bounds = np.array([sg.end for sg in segs[:-1]], dtype=np.int64)
        good_per_segment = np.zeros(len(segs), dtype=np.int64)
        keep = ["pos", "label", *cfg.dense, *cfg.categorical]
        pending: list[pl.DataFrame] = []
        pending_rows, part, dropped = 0, 0, 0
        qf = None
        if quarantine is not None:
            qf = open(quarantine, "w", encoding="utf-8")
            qf.write("file\tline\tproblems\ttext\n")

        def flush() -> None:
            nonlocal pending, pending_rows, part
            if pending:
                pl.concat(pending).write_parquet(out_dir / f"part-{part:06d}.parquet")
                part += 1
            pending, pending_rows = [], 0

        try:
            for batch in lf.collect_batches(chunk_size=200_000, maintain_order=True):
                progress(batch.height)
                any_bad = pl.any_horizontal(flag_names)
                sums = batch.select(pl.col(flag_names).sum())
                for name, total in zip(flag_names, sums.row(0)):
                    if total:
                        col, kind = name[1:].rsplit(":", 1)
                        bad.counts[(col, kind)] += int(total)
                bad_rows = batch.filter(any_bad)
                if bad_rows.height:
                    bad.rows += bad_rows.height
                    if cfg.on_bad_row == "fail" or len(bad.examples) < bad.max_examples or qf:
                        self._bad_examples(bad_rows, flag_names, files, bad, qf)
                    if cfg.on_bad_row == "fail":
                        raise R.BadInputError("bad input row: " + bad.examples[0].describe())
                good = batch.filter(~any_bad)
                n_drop = int(good["_dropped"].sum())
                if n_drop:
                    dropped += n_drop
                    good = good.filter(~pl.col("_dropped"))
                good = good.select(keep)
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
    def _bad_examples(rows: pl.DataFrame, flag_names: list[str], files: list[Path],
                      bad: R.BadRows, qf) -> None:
        problems = rows.select(pl.concat_list([pl.when(pl.col(f)).then(pl.lit(f[1:]))
                                               for f in flag_names]).list.drop_nulls())
        examples = [R.BadExample(str(files[fi]), int(ln), list(pr), text or "")
                    for fi, ln, pr, text in zip(rows["file_idx"], rows["line_no"],
                                                problems.to_series(), rows["line"])]
        bad.add_examples(examples)
        if qf:
            for e in examples:
                qf.write(f"{e.file}\t{e.line}\t{','.join(e.problems)}\t{e.text}\n")

    def build_dictionaries(self, cfg: PipelineConfig, work: Path, fit_end: int | None
                           ) -> dict[str, pl.DataFrame]:
        """Stage 2: key -> id per column (columns key, id, count, first_pos; sorted by id)."""
        ops = cfg.categorical_ops
        base = 1 if ops.reserved_id == "first" else 0
        lf = pl.scan_parquet(str(work / "parsed" / "*.parquet"))
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
        """Stage 3: batches of (pos, label, dense..., ids...) in input order."""
        lf = pl.scan_parquet(str(work / "parsed" / "*.parquet"))
        for c in cfg.categorical:
            d = dicts[c].lazy().select(pl.col("key").cast(key_dtype(cfg, c)).alias(c),
                                       pl.col("id").alias(f"_id_{c}"))
            lf = lf.join(d, on=c, how="left", maintain_order="left")
        lf = lf.select("pos", "label", *cfg.dense,
                       *[pl.col(f"_id_{c}").fill_null(reserved[c]).alias(c) for c in cfg.categorical])
        yield from lf.collect_batches(chunk_size=500_000, maintain_order=True)
