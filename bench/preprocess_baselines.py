"""What a user would write by hand, for side-by-side timing with dlrmx.preprocess.

Same steps: fill missing 0, negatives -> 0, log(x+1); hex -> int; per-column frequency-ordered
ids (reserved 0 for missing); 7 day-chunks, last halved into test/val; .npy output.
No bad-row checks (that is part of what dlrmx adds).
"""

from __future__ import annotations

import math
import shutil
import tempfile
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
    """How a Spark user would write the same steps: the parsed table cached once; all 26
    columns counted in one stacked group-by; ids from a row_number per column (a window
    partitioned by column, so each column is numbered by its own task); each small dictionary
    broadcast to its join; one sort by input position; the driver writes the .npy files."""
    import polars as pl
    from pyspark.sql import SparkSession, Window, functions as F
    from pyspark.sql.types import StringType, StructField, StructType

    spark = (SparkSession.builder.master(master).config("spark.ui.enabled", "false")
             .config("spark.ui.showConsoleProgress", "false")
             .config("spark.driver.memory", "4g")
             # 200 shuffle partitions (the default) is tuned for clusters; 2 cores need few.
             .config("spark.sql.shuffle.partitions", "8").getOrCreate())
    schema = StructType([StructField(c, StringType()) for c in COLS])
    # quote="" : Criteo text has no quoting; short lines get nulls (PERMISSIVE mode).
    df = spark.read.csv(path, sep="\t", schema=schema, quote="")
    df = df.select(F.monotonically_increasing_id().alias("pos"),  # increasing in file order
                   F.col("label").cast("byte").alias("label"),
                   *[F.log1p(F.greatest(F.coalesce(F.col(c).cast("long"), F.lit(0)), F.lit(0)))
                     .cast("float").alias(c) for c in DENSE],
                   *[F.conv(c, 16, 10).cast("long").alias(c) for c in CAT]).cache()
    stacked = df.select(F.explode(F.array(*[F.struct(F.lit(i).alias("c"), F.col(c).alias("key"))
                                            for i, c in enumerate(CAT)])).alias("s")).select("s.*")
    ids = (stacked.where(F.col("key").isNotNull()).groupBy("c", "key").count()
           .withColumn("id", F.row_number().over(Window.partitionBy("c")
                                                 .orderBy(F.desc("count"), F.asc("key"))))
           .select("c", "key", F.col("id").cast("int").alias("id")).cache())
    enc = df
    for i, c in enumerate(CAT):
        d = ids.where(F.col("c") == i).select(F.col("key").alias(c), F.col("id").alias("_id"))
        enc = enc.join(F.broadcast(d), c, "left").withColumn(c, F.coalesce("_id", F.lit(0))) \
            .drop("_id")
    tmp = tempfile.mkdtemp(prefix="hand_spark_")
    enc.select("pos", "label", *DENSE, *CAT).orderBy("pos").write.mode("overwrite").parquet(tmp)
    spark.stop()
    t = pl.read_parquet(tmp + "/*.parquet")  # part files sort by name = by position range
    _write(Path(out), t.height, t["label"].to_numpy(), t.select(DENSE).to_numpy(),
           t.select(CAT).to_numpy())
    shutil.rmtree(tmp)
    return t.height


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
