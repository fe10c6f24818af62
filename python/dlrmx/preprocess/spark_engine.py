"""The scale-out engine: PySpark DataFrames (no Python UDFs, so rows never cross into Python).

Same stages and rules as the Polars engine; every row carries its input position ``pos``, so the
joins may scramble row order freely and one range-partitioned sort at the end restores it.
Intermediate parquet goes to the work directory, which must be visible to every executor.
"""

from __future__ import annotations

import os
import re
from functools import reduce
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import polars as pl

from dlrmx.preprocess import report as R
from dlrmx.preprocess.config import PipelineConfig
from dlrmx.preprocess.inputs import Segment, input_read_error
from dlrmx.preprocess.polars_engine import HEX_RE, INT_RE, key_dtype


def start_session(master: str | None = None, conf: dict[str, str] | None = None):
    """A SparkSession: ``master`` (default local[*] unless spark-submit chose one), UI off."""
    from pyspark.sql import SparkSession

    b = SparkSession.builder.appName("dlrmx.preprocess")
    if master:
        b = b.master(master)
    elif "PYSPARK_GATEWAY_PORT" not in os.environ:  # not under spark-submit
        b = b.master("local[*]")
    defaults = {"spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false",
                "spark.driver.memory": "4g", "spark.sql.ansi.enabled": "false"}
    local = master.startswith("local") if master else "PYSPARK_GATEWAY_PORT" not in os.environ
    if local:
        # The default 200 shuffle partitions suit clusters; on one machine they are mostly
        # per-task overhead (the dictionary window and its cache keep them all).
        defaults["spark.sql.shuffle.partitions"] = "8"
    for k, v in {**defaults, **(conf or {})}.items():
        b = b.config(k, v)
    spark = b.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


class SparkEngine:
    name = "spark"

    def __init__(self, spark=None, master: str | None = None, conf: dict[str, str] | None = None,
                 broadcast_limit_mb: float = 256.0) -> None:
        self.spark = spark or start_session(master, conf)
        # Non-ANSI casts: an unparsable or overflowing number becomes null, which the bad-row
        # rules below detect and name; ANSI mode would abort the job instead.
        self.spark.conf.set("spark.sql.ansi.enabled", "false")
        self.broadcast_limit = broadcast_limit_mb * 2**20
        self.join_kinds: dict[str, str] = {}  # column -> broadcast | merge (for the report/tests)

    # -- stage 0: lines with positions --------------------------------------------------------
    def _raw_lines(self, files: list[Path]):
        from pyspark.sql import DataFrame, functions as F

        # One read per file, so every partition of the union holds lines of one file, in order.
        dfs = [self.spark.read.text(str(f)).withColumn("file_idx", F.lit(i))
               for i, f in enumerate(files)]
        return (reduce(DataFrame.union, dfs)
                .withColumn("_pid", F.spark_partition_id())
                .withColumn("_off", F.monotonically_increasing_id().bitwiseAND(F.lit((1 << 33) - 1))))

    def count_lines(self, files: list[Path], header: bool) -> list[int]:
        from pyspark.sql import functions as F

        try:
            rows = (self._raw_lines(files).groupBy("_pid", "file_idx")
                    .agg(F.count("*").alias("n")).collect())
        except Exception as e:  # a Java exception that names no input (e.g. a truncated gzip)
            err = input_read_error(files, e)
            if err is None:
                raise
            raise err from e
        per_file = [0] * len(files)
        starts = []  # (pid, file_idx, first line index of the partition within its file)
        for r in sorted(rows, key=lambda r: r["_pid"]):
            starts.append((r["_pid"], r["file_idx"], per_file[r["file_idx"]]))
            per_file[r["file_idx"]] += r["n"]
        self._files, self._header = files, header
        self._starts = starts
        skip = 1 if header else 0
        self._file_rows = [max(n - skip, 0) for n in per_file]
        return self._file_rows

    def _lines(self):
        """pos (global data-line position), file_idx, line_no (1-based in the file), line."""
        from pyspark.sql import functions as F

        skip = 1 if self._header else 0
        offsets = np.concatenate([[0], np.cumsum(self._file_rows)])[:-1]
        table = self.spark.createDataFrame(
            [(int(p), int(s), int(offsets[f]) - skip) for p, f, s in self._starts],
            "_pid int, _start long, _base long")
        lines = self._raw_lines(self._files).join(F.broadcast(table), "_pid")
        lidx = F.col("_start") + F.col("_off")
        lines = lines.select((F.col("_base") + lidx).alias("pos"), "file_idx",
                             (lidx + 1).alias("line_no"), F.col("value").alias("line"))
        return lines.where(F.col("line_no") > skip)

    # -- stage 1: parse -----------------------------------------------------------------------
    def _rules(self, cfg: PipelineConfig):
        """Lines split into ``_a``, the typed value columns and the named bad-row flags."""
        from pyspark.sql import functions as F

        s, ops = cfg.schema, cfg.categorical_ops
        n = len(s.columns)
        arr = F.split(F.regexp_replace("line", "\r$", ""), re.escape(s.delimiter), -1)
        raw = {c: F.get(F.col("_a"), i) for i, c in enumerate(s.columns)}
        missing = {c: raw[c].isNull() | (raw[c] == "") for c in s.columns}
        flags: list[tuple[str, object]] = [(f"{R.ROW_LEVEL}:{R.TOO_MANY_FIELDS}", F.size("_a") > n)]
        utf8 = F.is_valid_utf8("line")

        def int_parse(c):
            ok = raw[c].rlike(INT_RE)
            val = raw[c].cast("long")  # null on overflow (non-ANSI)
            return val, ~missing[c] & ~ok, ~missing[c] & ok & val.isNull()

        val, non_num, ovf = int_parse(s.label)
        flags += [(f"{s.label}:{R.MISSING_LABEL}", missing[s.label]),
                  (f"{s.label}:{R.NON_NUMERIC}", non_num),
                  (f"{s.label}:{R.OVERFLOW}", ovf),
                  (f"{s.label}:{R.BAD_LABEL}", val.isNotNull() & ~val.isin(0, 1))]
        values = [val.alias("label")]
        for c in cfg.dense:
            val, non_num, ovf = int_parse(c)
            flags += [(f"{c}:{R.NON_NUMERIC}", non_num), (f"{c}:{R.OVERFLOW}", ovf)]
            values.append(F.coalesce(val, F.lit(cfg.dense_ops.fill).cast("long")).alias(c))
        for c in cfg.categorical:
            kind = s.parse_kind(c)
            if kind == "string":
                key = F.when(missing[c], F.lit("" if ops.missing == "zero" else None).cast("string")) \
                    .otherwise(raw[c])
            else:
                if kind == "hex":
                    ok = raw[c].rlike(HEX_RE)
                    digits = F.regexp_replace(raw[c], "^0+", "")
                    # int64 holds at most 16 hex digits, the first of them 0-7.
                    too_big = (F.length(digits) > 16) | \
                        ((F.length(digits) == 16) & digits.rlike("^[89a-fA-F]"))
                    val = F.when(ok & ~too_big, F.conv(raw[c], 16, 10).cast("long"))
                    flags += [(f"{c}:{R.NON_HEX}", ~missing[c] & ~ok),
                              (f"{c}:{R.OVERFLOW}", ~missing[c] & ok & too_big)]
                else:
                    val, non_num, ovf = int_parse(c)
                    flags += [(f"{c}:{R.NON_NUMERIC}", non_num), (f"{c}:{R.OVERFLOW}", ovf)]
                if ops.max_ind_range > 0:
                    val = F.pmod(val, F.lit(ops.max_ind_range).cast("long"))
                key = F.when(missing[c], F.lit(0 if ops.missing == "zero" else None).cast("long")) \
                    .otherwise(val)
            values.append(key.alias(c))
        drop = reduce(lambda a, b: a | b, [missing[c] for c in cfg.drop_rows_if_missing]) \
            if cfg.drop_rows_if_missing else F.lit(False)
        # A line that is not UTF-8 is named for that alone, as in the Polars engine.
        flags = [(f"{R.ROW_LEVEL}:{R.INVALID_UTF8}", ~utf8)] + \
            [(name, F.coalesce(e, F.lit(False)) & utf8) for name, e in flags]
        return self._lines().withColumn("_a", arr), values, flags, F.coalesce(drop, F.lit(False))

    def parse(self, cfg: PipelineConfig, files: list[Path], file_rows: list[int],
              segs: list[Segment], work: Path, bad: R.BadRows, quarantine: Path | None,
              progress: Callable[[int], None]) -> tuple[list[int], int]:
        from pyspark import StorageLevel
        from pyspark.sql import functions as F

        lines, values, flags, drop = self._rules(cfg)
        # Rows keep one "any flag" boolean, not one column per flag; the flags are computed
        # column by column only for the bad rows, in a second look at those lines alone.
        any_bad = reduce(lambda a, b: a | b, [e for _, e in flags])
        seg = reduce(lambda a, b: a + b, [(F.col("pos") >= sg.start).cast("int")
                                          for sg in segs[1:]], F.lit(0))
        parsed = lines.select("pos", *values, any_bad.alias("_bad"), drop.alias("_drop")) \
            .persist(StorageLevel.MEMORY_AND_DISK)
        try:
            good = ~F.col("_bad") & ~F.col("_drop")
            per_seg = parsed.groupBy(seg.alias("seg")).agg(
                F.sum(good.cast("long")).alias("good"), F.sum(F.col("_bad").cast("long")).alias("bad"),
                F.sum((F.col("_drop") & ~F.col("_bad")).cast("long")).alias("drop")).collect()
            counts = {r["seg"]: int(r["good"]) for r in per_seg}
            bad.rows += sum(int(r["bad"]) for r in per_seg)
            dropped = sum(int(r["drop"]) for r in per_seg)
            if bad.rows:
                self._diagnose(cfg, lines.where(any_bad), flags, files, bad, quarantine)
            parsed.where(good).select("pos", "label", *cfg.dense, *cfg.categorical) \
                .write.parquet(str(work / "parsed"))
        finally:
            parsed.unpersist()
        progress(sum(file_rows))
        return [counts.get(i, 0) for i in range(len(segs))], dropped

    @staticmethod
    def _diagnose(cfg: PipelineConfig, rows, flags, files: list[Path], bad: R.BadRows,
                  quarantine: Path | None) -> None:
        """Counts per (column, kind), examples and the quarantine file, from the bad lines."""
        from pyspark import StorageLevel
        from pyspark.sql import functions as F

        names = [name for name, _ in flags]
        rows = rows.select("pos", "file_idx", "line_no", "line",
                           *[e.alias(f"_bad{i}") for i, (_, e) in enumerate(flags)]) \
            .persist(StorageLevel.MEMORY_AND_DISK)
        try:
            sums = rows.agg(*[F.sum(F.col(f"_bad{i}").cast("long")).alias(f"s{i}")
                              for i in range(len(names))]).collect()[0]
            for i, name in enumerate(names):
                if sums[f"s{i}"]:
                    col, kind = name.rsplit(":", 1)
                    bad.counts[(col, kind)] += int(sums[f"s{i}"])
            problems = F.concat_ws(",", *[F.when(F.col(f"_bad{i}"), F.lit(name))
                                          for i, name in enumerate(names)])
            # The bytes, decoded here as the Polars engine decodes them (bad bytes -> \xNN).
            ex = rows.select("pos", "file_idx", "line_no", problems.alias("p"),
                             F.col("line").cast("binary").alias("raw")).orderBy("pos")
            it = ex.toLocalIterator() if quarantine is not None else ex.limit(bad.max_examples).collect()
            qf = open(quarantine, "w", encoding="utf-8") if quarantine is not None else None
            try:
                if qf:
                    qf.write("file\tline\tproblems\ttext\n")
                for r in it:
                    e = R.BadExample(str(files[r["file_idx"]]), int(r["line_no"]),
                                     r["p"].split(","),
                                     bytes(r["raw"] or b"").decode("utf-8", "backslashreplace"))
                    bad.add_examples([e])
                    if cfg.on_bad_row == "fail":
                        raise R.BadInputError("bad input row: " + e.describe())
                    if qf:
                        qf.write(f"{e.file}\t{e.line}\t{','.join(e.problems)}\t{e.text}\n")
            finally:
                if qf:
                    qf.close()
        finally:
            rows.unpersist()

    # -- stage 2: dictionaries ----------------------------------------------------------------
    def build_dictionaries(self, cfg: PipelineConfig, work: Path, fit_end: int | None
                           ) -> dict[str, pl.DataFrame]:
        from pyspark.sql import Window, functions as F

        ops = cfg.categorical_ops
        base = 1 if ops.reserved_id == "first" else 0
        g = self.spark.read.parquet(str(work / "parsed"))
        if fit_end is not None:
            g = g.where(F.col("pos") < fit_end)
        out: dict[str, pl.DataFrame] = {}
        for typ in ("long", "string"):  # keys of one type per stacked table
            cols = [c for c in cfg.categorical if (cfg.schema.parse_kind(c) == "string") == (typ == "string")]
            if not cols:
                continue
            # All columns stacked into (c, key): one shuffle for every dictionary.
            stacked = g.select("pos", F.explode(F.array(*[
                F.struct(F.lit(i).alias("c"), F.col(c).cast(typ).alias("key"))
                for i, c in enumerate(cols)])).alias("s")).select("pos", "s.c", "s.key")
            agg = (stacked.where(F.col("key").isNotNull()).groupBy("c", "key")
                   .agg(F.count("*").alias("count"), F.min("pos").alias("first_pos"))
                   .where(F.col("count") >= ops.min_freq))
            order = [F.desc("count"), F.asc("key")] if ops.order == "frequency" else [F.asc("first_pos")]
            ids = agg.withColumn("id", (F.row_number().over(Window.partitionBy("c").orderBy(*order))
                                        - 1 + base).cast("long"))
            path = work / f"dicts_{typ}"
            ids.write.partitionBy("c").parquet(str(path))
            for i, c in enumerate(cols):
                part = path / f"c={i}"
                files = sorted(part.glob("*.parquet")) if part.is_dir() else []
                d = pl.concat([pl.read_parquet(f) for f in files]) if files else \
                    pl.DataFrame(schema={"key": key_dtype(cfg, c), "count": pl.Int64,
                                         "first_pos": pl.Int64, "id": pl.Int64})
                out[c] = d.select(pl.col("key").cast(key_dtype(cfg, c)), pl.col("id").cast(pl.Int64),
                                  pl.col("count").cast(pl.Int64),
                                  pl.col("first_pos").cast(pl.Int64)).sort("id")
        return {c: out[c] for c in cfg.categorical}

    # -- stage 3: encode ----------------------------------------------------------------------
    def encode(self, cfg: PipelineConfig, work: Path, dicts: dict[str, pl.DataFrame],
               reserved: dict[str, int]) -> Iterator[pl.DataFrame]:
        from pyspark.sql import functions as F

        df = self.spark.read.parquet(str(work / "parsed"))
        ddir = work / "encode_dicts"
        ddir.mkdir()
        for c in cfg.categorical:
            d = dicts[c]
            path = ddir / f"{c}.parquet"
            d.select("key", "id").write_parquet(path)
            key_bytes = 8 if cfg.schema.parse_kind(c) != "string" else \
                (float(d["key"].str.len_bytes().mean() or 0) + 16)
            size = d.height * (key_bytes + 8 + 16)  # + hash-table overhead per entry (estimate)
            typ = "string" if cfg.schema.parse_kind(c) == "string" else "long"
            sd = self.spark.read.parquet(str(path)).select(F.col("key").cast(typ).alias(c),
                                                           F.col("id").alias(f"_id_{c}"))
            if size <= self.broadcast_limit:
                self.join_kinds[c] = "broadcast"
                sd = F.broadcast(sd)
            else:
                self.join_kinds[c] = "merge"
                sd = sd.hint("merge")
            df = df.join(sd, on=c, how="left")
        df = df.select("pos", "label", *cfg.dense,
                       *[F.coalesce(F.col(f"_id_{c}"), F.lit(reserved[c]).cast("long")).alias(c)
                         for c in cfg.categorical])
        # Joins scramble row order; one range-partitioned sort restores input order.
        df.orderBy("pos").write.parquet(str(work / "encoded"))
        for f in sorted((work / "encoded").glob("part-*.parquet")):
            yield from pl.read_parquet(f).iter_slices(500_000)
