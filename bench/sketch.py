"""Popularity counting, side by side in one run: dlrmx's count-min sketch against a NumPy
sketch (the same hash, np.add.at per row) and Apache DataSketches' Python count-min sketch
(`pip install datasketches`; skipped with a note when absent), and dlrmx's exact counter against
np.bincount. Same Zipf(1.1) ids for all, same width/depth, 1 and 2 threads.

Accuracy: the lookups covered by the sketch's top 0.5% ids, as a fraction of those covered by the
exact top 0.5% (1.0 = it found the true hot set).

    python bench/sketch.py                  # 4M ids, width 2^14, depth 5
    python bench/sketch.py --ids 1000000 --threads 1
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from roofline import cpu_line  # noqa: E402

from dlrmx.popularity import CountMinSketch, ExactCounter  # noqa: E402
from dlrmx.train.precision import median_seconds  # noqa: E402

_M = [np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)]


def numpy_cms(ids: np.ndarray, seeds: np.ndarray, log2w: int) -> np.ndarray:
    """The same sketch in NumPy: splitmix64 per row, then np.add.at."""
    table = np.zeros((len(seeds), 1 << log2w), dtype=np.int64)
    x0 = ids.view(np.uint64)
    with np.errstate(over="ignore"):
        for r, seed in enumerate(seeds):
            x = x0 ^ seed
            x = (x ^ (x >> np.uint64(30))) * _M[0]
            x = (x ^ (x >> np.uint64(27))) * _M[1]
            x = x ^ (x >> np.uint64(31))
            np.add.at(table[r], (x >> np.uint64(64 - log2w)).astype(np.int64), 1)
    return table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ids", type=int, default=4_000_000)
    p.add_argument("--log2-width", type=int, default=14)
    p.add_argument("--depth", type=int, default=5)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--reps", type=int, default=5)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    ranks = rng.zipf(1.1, args.ids).astype(np.uint64)
    keys = (ranks * np.uint64(0x9E3779B97F4A7C15)).view(np.int64)  # raw 64-bit keys
    print(f"# CPU: {cpu_line()}")
    print(f"# {args.ids:,} Zipf(1.1) keys, {np.unique(keys).size:,} distinct; sketch "
          f"{args.depth} x 2^{args.log2_width}; median of {args.reps}")
    width = 1 << args.log2_width
    u, c = np.unique(keys, return_counts=True)
    k = max(1, int(0.005 * u.size))
    exact_top = c[np.argsort(-c, kind="stable")[:k]].sum()
    for nt in args.threads:
        torch.set_num_threads(nt)
        rate = {}
        for name, kw in (("dlrmx", {}), ("dlrmx-conservative", {"conservative": True})):
            def run(kw=kw):
                s = CountMinSketch(width=width, depth=args.depth, track=0, **kw)
                s.update(keys)
            rate[name] = args.ids / median_seconds(run, args.reps, warmup=False)
        s = CountMinSketch(width=width, depth=args.depth, track=max(1024, 2 * k))
        t = time.perf_counter()
        for part in np.array_split(keys, 64):
            s.update(part)
        rate["dlrmx+heavy-hitters"] = args.ids / (time.perf_counter() - t)
        top, _ = s.heavy_hitters(k)
        found = c[np.searchsorted(u, top)].sum()
        if nt == args.threads[0]:
            seeds = s.seeds
            rate["numpy"] = args.ids / median_seconds(lambda: numpy_cms(keys, seeds, args.log2_width), 2)
            assert np.array_equal(numpy_cms(keys[:100_000], seeds, args.log2_width),
                                  _dlrmx_table(keys[:100_000], width, args.depth)), "hash mismatch"
            try:
                import datasketches
                n = min(args.ids, 300_000)
                sample = keys[:n].tolist()

                def ds():
                    d = datasketches.count_min_sketch(args.depth, width)
                    for x in sample:
                        d.update(x)
                rate["datasketches"] = n / median_seconds(ds, 1)
            except ImportError:
                print("# datasketches not installed (pip install datasketches): its column skipped")
        dense = rng.integers(0, 1 << 20, args.ids)

        def exact():
            ExactCounter(1 << 20).update(dense)
        rate["exact-counter"] = args.ids / median_seconds(exact, args.reps)
        rate["np.bincount"] = args.ids / median_seconds(lambda: np.bincount(dense, minlength=1 << 20), args.reps)
        for name, r in rate.items():
            print(f"threads={nt} {name:20s} {r / 1e6:8.1f} M updates/s  ({r / 1e6 / nt:.1f} per thread)")
        for other in ("numpy", "datasketches"):
            if other in rate:
                print(f"threads={nt} dlrmx / {other}: {rate['dlrmx'] / rate[other]:.0f}x")
        print(f"threads={nt} exact counter / np.bincount: {rate['exact-counter'] / rate['np.bincount']:.1f}x")
        print(f"threads={nt} top-0.5% coverage ({k} ids): sketch {found / exact_top:.4f} of exact "
              f"({found / args.ids:.1%} of all lookups vs {exact_top / args.ids:.1%})")


def _dlrmx_table(keys, width, depth):
    s = CountMinSketch(width=width, depth=depth, track=0)
    s.update(keys)
    return s.table


if __name__ == "__main__":
    main()
