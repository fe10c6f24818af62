#!/usr/bin/env python
"""FAE's hybrid CPU-GPU training against host-embeddings-only training, side by side in one run.

The same `python -m dlrmx.train` config (synthetic Kaggle-like tables, Zipf ids) with the MLPs
on the GPU and the tables in host memory, in these variants (interleaved per repeat, medians):

  host tables      --device cuda --hot-cache-budget B --hot-device none: every lookup and
                   update on the host, the same hot/cold batch order (the baseline)
  hybrid (FAE)     --device cuda --hot-cache-budget B --hot-device cuda: the hot rows on the GPU;
                   hot batches run entirely there
  all on GPU       --device cuda: the whole model on the GPU (an upper bound; skipped with
                   --no-all-gpu or when the tables do not fit)
  CPU              --device cpu, the same threads (for scale)

The budget B holds a small part of the tables (the point of the comparison: the tables exceed
what is placed on the GPU). Prints samples/s, the ratio to host tables (target: hybrid >= 1.5x),
the scheduled hot-batch fraction and the final test AUC. Without a GPU and dlrmx's CUDA kernels
it says so and exits with status 2.

    python bench/hybrid.py
    python bench/hybrid.py --quick
    python bench/hybrid.py --scale 1.0 --budget 2G --batches 500 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile

import torch

from dlrmx import cuda
from dlrmx.train import TrainConfig, run


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scale", type=float, default=0.1, help="synthetic table sizes (Kaggle x)")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--batches", type=int, default=200)
    p.add_argument("--budget", default="128M", help="--hot-cache-budget of both cached variants "
                   "(the default holds about a seventh of the default tables)")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--no-all-gpu", action="store_true")
    p.add_argument("--no-cpu", action="store_true")
    p.add_argument("--quick", action="store_true", help="tiny sizes, one repeat (a smoke run)")
    p.add_argument("--json", help="write the results here")
    a = p.parse_args(argv)
    if a.quick:
        a.scale, a.batch, a.batches, a.budget, a.repeats = 0.002, 512, 30, "1M", 1
    return a


def variants(a) -> dict[str, dict]:
    out = {"host tables": dict(device="cuda", hot_cache_budget=a.budget, hot_device="none"),
           "hybrid (FAE)": dict(device="cuda", hot_cache_budget=a.budget, hot_device="cuda")}
    if not a.no_all_gpu:
        out["all on GPU"] = dict(device="cuda")
    if not a.no_cpu:
        out["CPU"] = dict(device="cpu")
    return out


def main(argv=None) -> int:
    a = parse_args(argv)
    why = cuda.unavailable()
    if why:
        print(f"bench/hybrid.py needs a GPU and dlrmx's CUDA kernels: {why}")
        return 2
    print(f"device: {torch.cuda.get_device_name()}; torch {torch.__version__} (CUDA "
          f"{torch.version.cuda}); {a.threads} CPU threads")
    base = dict(mini_batch_size=a.batch, arch_sparse_feature_size=a.dim,
                arch_mlp_bot=f"13-512-256-{a.dim}", arch_mlp_top="1024-1024-512-256-1",
                synthetic_scale=a.scale, num_batches=a.batches, eval_samples=8 * a.batch,
                threads=a.threads, progress=False, plots=False, checkpoint_freq=0,
                print_freq=10**6, test_freq=-1, precision="fp32", hot_window_batches=64)
    rates: dict[str, list[float]] = {}
    info: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.repeats):  # interleaved: drift hits every variant alike
            for v, (name, kw) in enumerate(variants(a).items()):
                try:
                    res = run(TrainConfig(**base, **kw, run_dir=f"{tmp}/{r}-{v}"))
                except ValueError as e:  # e.g. the tables do not fit on the GPU
                    print(f"{name}: skipped ({e})")
                    continue
                rates.setdefault(name, []).append(res.samples_per_s)
                info[name] = {"auc": res.final["test"]["auc"],
                              "hot_fraction": res.cache.get("scheduled_hot_fraction"),
                              "tier_bytes": res.cache.get("tier_bytes")}
    ref = statistics.median(rates["host tables"])
    print(f"\nKaggle-like synthetic x{a.scale:g}, dim {a.dim}, batch {a.batch}, {a.batches} "
          f"batches, budget {a.budget}, median of {a.repeats}")
    print(f"{'':14s} {'samples/s':>11s} {'vs host tables':>15s} {'hot batches':>12s} "
          f"{'test AUC':>9s}")
    rows = []
    for name, r in rates.items():
        sps, i = statistics.median(r), info[name]
        hot = "-" if i["hot_fraction"] is None else f"{i['hot_fraction']:.0%}"
        print(f"{name:14s} {sps:11,.0f} {sps / ref:14.2f}x {hot:>12s} {i['auc']:9.4f}")
        rows.append({"variant": name, "samples_per_s": sps, "runs": r, "ratio": sps / ref, **i})
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"config": vars(a), "device": torch.cuda.get_device_name(),
                       "results": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
