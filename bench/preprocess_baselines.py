"""What a user would write by hand, for side-by-side timing with dlrmx.preprocess.

Same steps: fill missing 0, negatives -> 0, log(x+1); hex -> int; per-column frequency-ordered
ids (reserved 0 for missing); 7 day-chunks, last halved into test/val; .npy output.
No bad-row checks (that is part of what dlrmx adds).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

DENSE = [f"I{i}" for i in range(1, 14)]
CAT = [f"C{i}" for i in range(1, 27)]
COLS = ["label", *DENSE, *CAT]


def _write(out: Path, n: int, label, dense, sparse) -> None:
    out.mkdir(parents=True, exist_ok=True)
    idx = np.array_split(np.arange(n), 7)
    test, val = np.array_split(idx[-1], 2)
    for name, sl in (("train", slice(0, idx[-1][0])), ("test", slice(test[0], test[-1] + 1)),
                     ("val", slice(val[0], val[-1] + 1))):
        np.save(out / f"{name}_label.npy", label[sl])
        np.save(out / f"{name}_dense.npy", dense[sl])
        np.save(out / f"{name}_sparse.npy", sparse[sl])


def polars_pipeline(path: str, out: str) -> int:
    import polars as pl

    # Explicit schema; short lines (stripped trailing fields) get nulls.
    lf = pl.scan_csv(path, separator="\t", has_header=False, schema={c: pl.String for c in COLS},
                     quote_char=None, missing_columns="insert")
    lf = lf.select(pl.col("label").cast(pl.Int8),
                   *[pl.col(c).cast(pl.Int64).fill_null(0).clip(0).log1p().cast(pl.Float32) for c in DENSE],
                   *[pl.col(c).str.to_integer(base=16) for c in CAT])
    df = lf.collect()
    for c in CAT:
        d = (df.group_by(c).len().drop_nulls(c).sort(["len", c], descending=[True, False])
             .with_row_index("id", offset=1).select(c, pl.col("id").cast(pl.Int32)))
        df = df.join(d, on=c, how="left", maintain_order="left").with_columns(
            pl.col("id").fill_null(0).alias(c)).drop("id")
    _write(Path(out), df.height, df["label"].to_numpy(), df.select(DENSE).to_numpy(),
           df.select(CAT).to_numpy())
    return df.height


def spark_pipeline(path: str, out: str, master: str = "local[2]") -> int:
    from pyspark.sql import SparkSession, Window, functions as F
    from pyspark.sql.types import StringType, StructField, StructType

    spark = (SparkSession.builder.master(master).config("spark.ui.enabled", "false")
             .config("spark.driver.memory", "4g").getOrCreate())
    schema = StructType([StructField(c, StringType()) for c in COLS])
    df = spark.read.csv(path, sep="\t", schema=schema).withColumn("pos", F.monotonically_increasing_id())
    df = df.select("pos", F.col("label").cast("int").alias("label"),
                   *[F.log1p(F.greatest(F.coalesce(F.col(c).cast("long"), F.lit(0)), F.lit(0)))
                     .cast("float").alias(c) for c in DENSE],
                   *[F.conv(c, 16, 10).cast("long").alias(c) for c in CAT])
    df = df.cache()
    n = df.count()
    for c in CAT:
        d = (df.groupBy(c).count().where(F.col(c).isNotNull())
             .withColumn("id", F.row_number().over(Window.orderBy(F.desc("count"), F.asc(c))))
             .select(c, "id"))
        df = df.join(d, on=c, how="left").withColumn(c, F.coalesce("id", F.lit(0))).drop("id")
    df.write.mode("overwrite").parquet(out)
    spark.stop()
    return n


def python_loop(path: str, out: str, limit: int) -> int:
    """The reference DLRM's style: a Python loop per line, dicts per column."""
    label, dense, cats = [], [], []
    with open(path) as f:
        for i, line in enumerate(f):
            if i == limit:
                break
            x = line.rstrip("\n").split("\t")
            x += [""] * (40 - len(x))
            label.append(int(x[0] or 0))
            dense.append([math.log(max(int(v or 0), 0) + 1) for v in x[1:14]])
            cats.append([int(v or "0", 16) for v in x[14:]])
    maps = [dict() for _ in CAT]
    for r in cats:
        for j, v in enumerate(r):
            maps[j].setdefault(v, len(maps[j]))
    sparse = np.array([[maps[j][v] for j, v in enumerate(r)] for r in cats], dtype=np.int32)
    _write(Path(out), len(label), np.array(label, np.int8), np.array(dense, np.float32), sparse)
    return len(label)
