"""The hot/cold cache, side by side in one run.

1. Swap bandwidth: syncing H hot rows of a table (gather master -> replica, scatter replica ->
   master, dlrmx's native kernels) against a plain copy of the same bytes (one contiguous
   `copy_`, the floor) and against torch's index_select / index_copy_ (what a user would write).
2. Training: `python -m dlrmx.train` on the same synthetic data and threads, without the cache,
   with FAE's schedule only (--hot-device none) and with the compact CPU replica (--hot-device
   cpu): samples/s, the hot-batch fraction and the final AUC.

    python bench/cache.py                       # 8M-row fp32 table, 1M hot rows, dim 64
    python bench/cache.py --rows 2000000 --hot 250000 --threads 1 --train-batches 300
    python bench/cache.py --train-only --scale 0.1 --budget 32M --train-repeats 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from roofline import cpu_line  # noqa: E402

from dlrmx.cache import gather_rows, scatter_rows  # noqa: E402
from dlrmx.nn.tables import new_table  # noqa: E402
from dlrmx.train import TrainConfig, run  # noqa: E402
from dlrmx.train.precision import median_seconds  # noqa: E402


def swaps(rows: int, hot: int, dim: int, reps: int) -> None:
    master = new_table((rows, dim))  # huge pages where allowed, as the trainer's tables
    master.normal_()
    idx = np.sort(np.random.default_rng(0).choice(rows, hot, replace=False))
    tidx = torch.from_numpy(idx)
    replica, plain_src = torch.empty(hot, dim), torch.randn(hot, dim)
    gib = hot * dim * 4 / 2**30
    times = {
        "plain copy (same bytes)": median_seconds(lambda: replica.copy_(plain_src), reps),
        "dlrmx gather (refresh)": median_seconds(lambda: gather_rows(master, idx, replica), reps),
        "dlrmx scatter (flush)": median_seconds(lambda: scatter_rows(replica, idx, master), reps),
        "torch index_select": median_seconds(
            lambda: torch.index_select(master, 0, tidx, out=replica), reps),
        "torch index_copy_": median_seconds(lambda: master.index_copy_(0, tidx, replica), reps),
    }
    floor = times["plain copy (same bytes)"]
    print(f"\nswap: {hot:,} of {rows:,} rows x {dim} fp32 ({gib:.2f} GiB moved), "
          f"{torch.get_num_threads()} threads, median of {reps}")
    print(f"{'':28s} {'ms':>8s} {'GiB/s':>7s} {'vs plain copy':>14s}")
    for name, t in times.items():
        print(f"{name:28s} {1e3 * t:8.2f} {gib / t:7.2f} {floor / t:13.0%}")


def training(threads: int, batches: int, budget: str, repeats: int, scale: float) -> None:
    base = dict(mini_batch_size=2048, arch_sparse_feature_size=16, synthetic_scale=scale,
                num_batches=batches, eval_samples=50_000, threads=threads, progress=False,
                plots=False, checkpoint_freq=0, print_freq=10**6, test_freq=-1,
                precision="fp32", gemm_library="mkl", hot_window_batches=64)
    variants = {"no cache": dict(), "schedule only (none)": dict(hot_cache_budget=budget,
                                                                  hot_device="none"),
                "cpu replica": dict(hot_cache_budget=budget, hot_device="cpu")}
    rates: dict[str, list[float]] = {k: [] for k in variants}
    info: dict[str, tuple] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):  # interleaved, so drift of a shared machine hits all alike
            for v, (name, kw) in enumerate(variants.items()):
                res = run(TrainConfig(**base, **kw, run_dir=f"{tmp}/{r}-{v}"))
                rates[name].append(res.samples_per_s)
                info[name] = (res.final["test"]["auc"], res.cache.get("scheduled_hot_fraction"))
    ref = statistics.median(rates["no cache"])
    print(f"\ntraining: Kaggle-like synthetic x{scale:g}, dim 16, batch 2048, {batches} batches, "
          f"{threads} threads, budget {budget}, median of {repeats}")
    print(f"{'':22s} {'samples/s':>10s} {'vs no cache':>12s} {'hot batches':>12s} {'test AUC':>9s}")
    for name in variants:
        sps, (auc, frac) = statistics.median(rates[name]), info[name]
        hot = "-" if frac is None else f"{frac:.0%}"
        print(f"{name:22s} {sps:10,.0f} {sps / ref:11.2f}x {hot:>12s} {auc:9.4f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--train-only", action="store_true", help="skip the swap benchmark")
    p.add_argument("--rows", type=int, default=8_000_000)
    p.add_argument("--hot", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--train-batches", type=int, default=400)
    p.add_argument("--budget", default="16M")
    p.add_argument("--train-repeats", type=int, default=3)
    p.add_argument("--scale", type=float, default=0.01, help="synthetic table sizes (Kaggle x)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    print(cpu_line())
    if not a.train_only:
        swaps(a.rows, a.hot, a.dim, a.reps)
    if a.train_batches:
        training(a.threads, a.train_batches, a.budget, a.train_repeats, a.scale)


if __name__ == "__main__":
    main()
