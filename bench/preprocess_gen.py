"""Synthetic Criteo-Kaggle-format TSV: label, 13 ints, 26 hex ids; Zipf frequencies, realistic
vocabulary sizes (scaled to the row count), missing fields, stripped trailing tabs.

    python bench/preprocess_gen.py --rows 1000000 -o /tmp/synth_1m.tsv
"""

from __future__ import annotations

import argparse

import numpy as np
import polars as pl

# Kaggle's distinct values per column (shared/data/README.md), capped relative to the rows.
KAGGLE_CARD = [1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194,
               27, 14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572]
MISSING = [0.0, 0.0, 0.03, 0.03, 0.0, 0.12, 0.0, 0.0, 0.0, 0.0, 0.0, 0.03, 0.0, 0.0, 0.0, 0.03,
           0.0, 0.0, 0.44, 0.44, 0.03, 0.76, 0.0, 0.03, 0.44, 0.03]


def generate(rows: int, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    cols = {"label": pl.Series((rng.random(rows) < 0.256).astype(np.int8)).cast(pl.String)}
    for i in range(13):
        v = np.floor(rng.lognormal(1.5, 2.0, rows)).astype(np.int64) - (1 if i == 1 else 0)
        s = pl.Series(v).cast(pl.String)
        cols[f"I{i + 1}"] = pl.select(pl.when(pl.lit(pl.Series(rng.random(rows) < 0.3)))
                                      .then(pl.lit("")).otherwise(s)).to_series()
    for j, card in enumerate(KAGGLE_CARD):
        card = max(2, min(card, rows // 4))
        ids = rng.integers(0, 2**32, card, dtype=np.uint64)  # random 32-bit hashes as ids
        rank = np.minimum(rng.zipf(1.1, rows), card) - 1  # Zipf popularity over the vocabulary
        hexes = pl.Series([f"{x:08x}" for x in ids])
        s = hexes.gather(rank)
        miss = rng.random(rows) < MISSING[j]
        cols[f"C{j + 1}"] = pl.select(pl.when(pl.lit(pl.Series(miss))).then(pl.lit("")).otherwise(s)).to_series()
    return pl.DataFrame(cols)


def write_tsv(df: pl.DataFrame, path: str) -> None:
    line = pl.concat_str(list(df.columns), separator="\t").str.strip_suffix("\t")
    # Strip every trailing empty field, as the published Kaggle sample does.
    line = line.str.replace(r"\t+$", "")
    df.select(line.alias("l")).write_csv(path, include_header=False, quote_style="never")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-o", "--output", required=True)
    a = ap.parse_args()
    write_tsv(generate(a.rows, a.seed), a.output)
