"""How concentrated embedding lookups are: lookup coverage and the fraction of all-hot samples
against the fast-memory budget (weights + optimizer state), from exact counts.

  python bench/popularity.py            # synthetic Kaggle-like data (full Kaggle tables) and
                                        # the real Criteo sample in ../shared/data (if present)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from roofline import cpu_line  # noqa: E402

from dlrmx.data.synthetic import SyntheticCriteo, table_sizes  # noqa: E402
from dlrmx.popularity import ExactCounter, coverage_curve, row_bytes  # noqa: E402

CRITEO = Path(__file__).resolve().parents[2] / "shared" / "data" / "criteo"


def show(name: str, counts, sizes, cost: int, sample: np.ndarray, budgets) -> None:
    curve = coverage_curve(counts, [cost] * len(counts), budgets, sample, sizes)
    total_bytes = sum(sizes) * cost
    print(f"# {name}: {sum(sizes):,} rows, {_size(total_bytes)} at {cost} B/row "
          f"(d=16, split-SGD); {sum(int(c.sum()) for c in counts):,} lookups counted")
    for c in curve:
        print(f"{name} budget {_size(c['budget']):>9} ({c['budget'] / total_bytes:7.3%} "
              f"of the tables): {c['rows']:>10,} rows, lookups covered {c['coverage']:.1%}, "
              f"samples all hot {c['hot_samples']:.1%}")


def _size(b: int) -> str:
    return f"{b / 2**20:,.1f} MiB" if b >= 2**20 else f"{b / 2**10:,.0f} KiB"


def synthetic(samples: int) -> None:
    sizes = table_sizes("kaggle", 1.0)
    gen = SyntheticCriteo(sizes, seed=0)
    counters = [ExactCounter(n) for n in sizes]
    t = time.perf_counter()
    batch = 16384
    for i in range(samples // batch):
        sp = gen.batch("train", i, batch).sparse.astype(np.int64)
        for k, c in enumerate(counters):
            c.update(sp[:, k])
    print(f"# counted {samples:,} synthetic samples x 26 tables in {time.perf_counter() - t:.1f} s")
    held_out = gen.batch("val", 0, 50_000).sparse.astype(np.int64)
    cost = row_bytes(16, "split_sgd")
    show("synthetic-kaggle", [c.counts for c in counters], sizes, cost, held_out,
         [2**k for k in range(20, 32, 2)])


def criteo_sample() -> None:
    files = sorted(CRITEO.glob("*.tsv")) if CRITEO.is_dir() else []
    if not files:
        print(f"# no Criteo sample in {CRITEO}: skipped")
        return
    rows = [line.rstrip("\n").split("\t") for line in files[0].read_text().splitlines()]
    print(f"# {files[0].name}: {len(rows)} rows, counted and measured in-sample")
    cats = [[(r[14 + k] if len(r) > 14 + k else "") for r in rows] for k in range(26)]
    ids, sizes = [], []
    for col in cats:
        _, inv = np.unique(np.array(col), return_inverse=True)
        ids.append(inv.astype(np.int64))
        sizes.append(int(inv.max()) + 1)
    sample = np.stack(ids, 1)
    counts = [np.bincount(i, minlength=n) for i, n in zip(ids, sizes)]
    show("criteo-sample", counts, sizes,
         row_bytes(16, "split_sgd"), sample, [2**k for k in range(10, 20, 2)])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=2_000_000)
    args = p.parse_args()
    print(f"# CPU: {cpu_line()}")
    synthetic(args.samples)
    criteo_sample()


if __name__ == "__main__":
    main()
