#!/usr/bin/env python
"""dlrmx's CUDA embedding kernels vs torch.nn.EmbeddingBag on the same GPU, with the achieved
bandwidth as a fraction of this device's measured copy bandwidth.

Default config: 8 tables x 1M rows x dim 64 fp32, batch 16384, 20 ids per bag, uniform and
Zipf(1.05) ids. For each config, timed with CUDA events, interleaved within every repetition,
medians of --reps:

  forward       dlrmx   torch.ops.dlrmx.embedding_bag_forward (one call, all tables)
                torch   T x nn.EmbeddingBag(mode="sum") under no_grad
  train step    dlrmx   forward + fused backward with SGD (torch.ops.dlrmx.embedding_bag_update)
                torch   T x nn.EmbeddingBag(sparse=True) forward + backward + torch.optim.SGD

Bandwidth: forward bytes = ids x D x 4 (rows read) + B x T x D x 4 (output written); a train
step adds the rows read and written by the update (2 x distinct rows x D x 4) and the output
gradient read once per id (ids x D x 4). The device's limit is a device-to-device copy of 1 GiB
(torch's copy_, counted as bytes read + written). Random 256-byte rows cannot reach streaming
bandwidth: the ratio says how far from the physical limit, not that 1.0 is reachable.

Before timing, a correctness gate compares both systems' forward outputs (and, after one SGD
step, the weights). Without a GPU or without the built CUDA library this exits with a message.

    python bench/cuda.py
    python bench/cuda.py --quick
    python bench/cuda.py --tables 26 --rows 1000000 --dim 128 --batch 65536 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _bench_common import make_id_sampler  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tables", type=int, default=8)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--batch", type=int, default=16384)
    p.add_argument("--ids-per-bag", type=int, default=20)
    p.add_argument("--dist", nargs="+", default=["uniform", "zipf1.05"])
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--quick", action="store_true", help="tiny sizes, few reps (a smoke run)")
    p.add_argument("--json", help="write the results here")
    a = p.parse_args(argv)
    if a.quick:
        a.tables, a.rows, a.batch, a.ids_per_bag, a.reps, a.warmup = 2, 10_000, 512, 4, 3, 1
    return a


def cuda_time(fn, reps: int, warmup: int) -> list[float]:
    """Seconds per call of fn, one CUDA-event pair per call."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return times


def copy_bandwidth(reps: int) -> float:
    """Bytes per second of a device-to-device copy of 1 GiB (read + write counted)."""
    n = 1 << 28  # float32: 1 GiB
    src = torch.empty(n, device="cuda")
    dst = torch.empty_like(src)
    t = statistics.median(cuda_time(lambda: dst.copy_(src), max(reps, 5), 2))
    return 2 * 4 * n / t


def main(argv=None) -> int:
    a = parse_args(argv)
    if not torch.cuda.is_available():
        print("bench/cuda.py: no CUDA device (torch.cuda.is_available() is False); this benchmark "
              "needs a GPU and a CUDA build of torch")
        return 2
    from dlrmx import cuda as dcuda

    if dcuda.lib is None:
        print(f"bench/cuda.py: dlrmx's CUDA kernels are not available: {dcuda.load_error}")
        return 2
    dev = torch.device("cuda")
    props = torch.cuda.get_device_properties(dev)
    print(f"device: {props.name}, {props.total_memory / 2**30:.0f} GiB; torch {torch.__version__} "
          f"(CUDA {torch.version.cuda}); dlrmx cuda {dcuda.versions()}")
    bw = copy_bandwidth(a.reps)
    print(f"device copy bandwidth (1 GiB d2d, read + write): {bw / 1e9:.0f} GB/s")

    T, R, D, B, L = a.tables, a.rows, a.dim, a.batch, a.ids_per_bag
    results = {"config": vars(a), "device": props.name, "copy_GBps": bw / 1e9, "runs": []}
    for dist in a.dist:
        rng = np.random.default_rng(0)
        sampler = make_id_sampler(dist, R, rng)
        ids_t = [torch.from_numpy(sampler(B * L)) for _ in range(T)]
        values = torch.cat(ids_t).to(dev)
        offsets = torch.arange(0, T * B * L + 1, L, dtype=torch.int64, device=dev)
        bag_offsets = torch.arange(0, B * L, L, dtype=torch.int64, device=dev)
        per_table = [t.to(dev) for t in ids_t]
        go = torch.randn(B, T * D, device=dev)
        go_t = list(go.split(D, dim=1))

        g = torch.Generator(device="cpu").manual_seed(1)
        init = [torch.randn(R, D, generator=g) * 0.01 for _ in range(T)]
        ours = [w.to(dev) for w in init]
        ref = [torch.nn.EmbeddingBag(R, D, mode="sum", sparse=True, device=dev) for _ in range(T)]
        with torch.no_grad():
            for m, w in zip(ref, init):
                m.weight.copy_(w)
        opt = torch.optim.SGD([m.weight for m in ref], lr=a.lr)
        pad = [-1] * T

        def dlrmx_forward():
            return torch.ops.dlrmx.embedding_bag_forward(ours, values, offsets, None, pad, 0, B)[0]

        def torch_forward():
            with torch.no_grad():
                return torch.cat([m(x, bag_offsets) for m, x in zip(ref, per_table)], dim=1)

        def dlrmx_step():
            dlrmx_forward()
            torch.ops.dlrmx.embedding_bag_update(go, ours, values, offsets, None, pad, 0, B,
                                                 torch.empty(0, dtype=torch.int64, device=dev),
                                                 "sgd", a.lr, 0.0, [])

        def torch_step():
            opt.zero_grad(set_to_none=True)
            out = [m(x, bag_offsets) for m, x in zip(ref, per_table)]
            torch.autograd.backward(out, go_t)
            opt.step()

        # Correctness gate: same forward, and the same weights after one SGD step each.
        torch.testing.assert_close(dlrmx_forward(), torch_forward(), rtol=1e-5, atol=1e-5)
        dlrmx_step()
        torch_step()
        for w, m in zip(ours, ref):
            torch.testing.assert_close(w, m.weight.detach(), rtol=1e-4, atol=1e-5)

        n_ids = T * B * L
        distinct = sum(int(torch.unique(x).numel()) for x in per_table)
        fwd_bytes = n_ids * D * 4 + B * T * D * 4
        step_bytes = fwd_bytes + n_ids * D * 4 + 2 * distinct * D * 4
        times = {k: [] for k in ("dlrmx_forward", "torch_forward", "dlrmx_step", "torch_step")}
        fns = {"dlrmx_forward": dlrmx_forward, "torch_forward": torch_forward,
               "dlrmx_step": dlrmx_step, "torch_step": torch_step}
        for _ in range(a.warmup):
            for f in fns.values():
                f()
        for _ in range(a.reps):  # interleaved: each repetition times every system once
            for k, f in fns.items():
                times[k] += cuda_time(f, 1, 0)
        med = {k: statistics.median(v) for k, v in times.items()}
        run = {"dist": dist, "distinct_rows": distinct, "median_s": med,
               "speedup_forward": med["torch_forward"] / med["dlrmx_forward"],
               "speedup_step": med["torch_step"] / med["dlrmx_step"],
               "forward_GBps": fwd_bytes / med["dlrmx_forward"] / 1e9,
               "step_GBps": step_bytes / med["dlrmx_step"] / 1e9}
        run["forward_of_copy"] = run["forward_GBps"] * 1e9 / bw
        run["step_of_copy"] = run["step_GBps"] * 1e9 / bw
        results["runs"].append(run)
        print(f"\n{T} tables x {R} rows x dim {D}, batch {B}, {L} ids/bag, {dist} "
              f"({distinct} distinct rows)")
        print(f"  forward     dlrmx {med['dlrmx_forward'] * 1e3:8.3f} ms   torch "
              f"{med['torch_forward'] * 1e3:8.3f} ms   speedup {run['speedup_forward']:5.2f}x   "
              f"{run['forward_GBps']:7.1f} GB/s = {run['forward_of_copy']:.2f} of copy")
        print(f"  train step  dlrmx {med['dlrmx_step'] * 1e3:8.3f} ms   torch "
              f"{med['torch_step'] * 1e3:8.3f} ms   speedup {run['speedup_step']:5.2f}x   "
              f"{run['step_GBps']:7.1f} GB/s = {run['step_of_copy']:.2f} of copy")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
