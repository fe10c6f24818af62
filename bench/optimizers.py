"""Optimizer benchmarks (issue 3), side by side in one run, same data and thread count:

1. split-SGD forward (bf16 tables) vs fp32 forward, dlrmx both          target >= 1.6x
2. row-wise Adagrad train step: dlrmx fused vs FBGEMM TBE EXACT_ROWWISE_ADAGRAD   >= 1.5x
                                 and vs torch EmbeddingBag(sparse) + optim.Adagrad >= 8x
3. dlrmx.optim.Lamb step over the Kaggle DLRM's MLP parameters vs a plain-PyTorch LAMB
   written with torch._foreach_* ops (same flavour)                      target >= 2x

    .venv/bin/python bench/optimizers.py [--threads 2] [--reps 7] [--rows 1000000]
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _bench_common import load_average, make_batch, make_id_sampler, median, timed  # noqa: E402

import dlrmx.nn as dn  # noqa: E402
from dlrmx.optim import Lamb  # noqa: E402

T, DIM, BATCH, IDS_PER_BAG = 8, 64, 2048, 20


def interleaved(fns: dict, reps: int) -> dict:
    """Median seconds per system; one warm-up each, then systems alternate within a repetition."""
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            times[name].append(timed(fn))
    return {name: median(ts) for name, ts in times.items()}


def batches_for(dist: str, rows: int, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    samplers = [make_id_sampler(dist, rows, rng) for _ in range(T)]
    return [make_batch(samplers, BATCH, IDS_PER_BAG) for _ in range(n)]


def bench_split_forward(rows: int, reps: int) -> list[dict]:
    weights = [torch.randn(rows, DIM) * 0.01 for _ in range(T)]
    fp32 = dn.EmbeddingBagCollection([(rows, DIM)] * T, init_weights=weights)
    split = dn.EmbeddingBagCollection([(rows, DIM)] * T, init_weights=weights, optimizer=dn.SplitSGD(lr=0.01))
    del weights
    out = []
    for dist in ("uniform", "zipf1.05"):
        batches = batches_for(dist, rows, 4)
        it = {"i": 0}

        def run(ebc):
            def fn():
                b = batches[it["i"] % len(batches)]
                with torch.no_grad():
                    ebc(b.values, offsets=b.offsets)
            return fn

        ref = fp32(batches[0].values, offsets=batches[0].offsets).detach()
        got = split(batches[0].values, offsets=batches[0].offsets).detach()
        rel = float((ref - got).abs().max() / ref.abs().max())
        assert rel < 1e-2, f"split-SGD forward differs from fp32 by {rel:.3g} (relative)"
        t = interleaved({"fp32": run(fp32), "split_sgd": run(split)}, reps)
        out.append({"dist": dist, "fp32_ms": t["fp32"] * 1e3, "split_sgd_ms": t["split_sgd"] * 1e3,
                    "speedup": t["fp32"] / t["split_sgd"]})
    del fp32, split
    gc.collect()
    return out


def fbgemm_rowwise(rows: int, lr: float, eps: float):
    try:
        from fbgemm_gpu.split_embedding_configs import EmbOptimType
        from fbgemm_gpu.split_table_batched_embeddings_ops_common import EmbeddingLocation, PoolingMode
        from fbgemm_gpu.split_table_batched_embeddings_ops_training import (
            ComputeDevice, SplitTableBatchedEmbeddingBagsCodegen)
    except Exception as e:  # noqa: BLE001  (any import failure: report and go on)
        print(f"  (FBGEMM not available: {type(e).__name__}: {e}; install with DLRMX_EXTRAS=test,bench)")
        return None
    return SplitTableBatchedEmbeddingBagsCodegen(
        [(rows, DIM, EmbeddingLocation.HOST, ComputeDevice.CPU)] * T,
        optimizer=EmbOptimType.EXACT_ROWWISE_ADAGRAD, learning_rate=lr, eps=eps,
        pooling_mode=PoolingMode.SUM)


def bench_rowwise_adagrad(rows: int, reps: int) -> list[dict]:
    lr, eps = 0.01, 1e-8
    grad = torch.randn(BATCH, T * DIM)
    systems = {"dlrmx": dn.EmbeddingBagCollection([(rows, DIM)] * T, optimizer=dn.RowWiseAdagrad(lr=lr, eps=eps))}
    tbe = fbgemm_rowwise(rows, lr, eps)
    if tbe is not None:
        systems["fbgemm"] = tbe
    bags = [torch.nn.EmbeddingBag(rows, DIM, mode="sum", sparse=True) for _ in range(T)]
    torch_opt = torch.optim.Adagrad([b.weight for b in bags], lr=lr, eps=eps)
    out = []
    for dist in ("uniform", "zipf1.05"):
        batches = batches_for(dist, rows, 4, seed=1)
        it = {"i": 0}

        def step_jagged(module):
            def fn():
                b = batches[it["i"] % len(batches)]
                module(b.values, b.offsets).backward(grad) if module is not systems["dlrmx"] \
                    else module(b.values, offsets=b.offsets).backward(grad)
            return fn

        def step_torch():
            b = batches[it["i"] % len(batches)]
            torch_opt.zero_grad(set_to_none=True)
            pooled = torch.cat([bag(ids, off) for bag, (ids, off) in zip(bags, b.per_table)], dim=1)
            pooled.backward(grad)
            torch_opt.step()

        fns = {name: step_jagged(m) for name, m in systems.items()}
        fns["torch"] = step_torch
        t = interleaved(fns, reps)
        row = {"dist": dist, **{f"{k}_ms": v * 1e3 for k, v in t.items()},
               "vs_torch": t["torch"] / t["dlrmx"]}
        if "fbgemm" in t:
            row["vs_fbgemm"] = t["fbgemm"] / t["dlrmx"]
        out.append(row)
    del systems, bags, torch_opt
    gc.collect()
    return out


def foreach_lamb_step(params, grads, ms, vs, step, lr=1e-3, b1=0.9, b2=0.999, eps=1e-6, clamp=10.0):
    """A plain-PyTorch LAMB (same flavour as dlrmx.optim.Lamb) written with torch._foreach_*."""
    torch._foreach_mul_(ms, b1)
    torch._foreach_add_(ms, grads, alpha=1 - b1)
    torch._foreach_mul_(vs, b2)
    torch._foreach_addcmul_(vs, grads, grads, value=1 - b2)
    m_hat = torch._foreach_div(ms, 1 - b1**step)
    v_hat = torch._foreach_div(vs, 1 - b2**step)
    denom = torch._foreach_add(torch._foreach_sqrt(v_hat), eps)
    updates = torch._foreach_div(m_hat, denom)
    w_norms = torch._foreach_norm(params)
    u_norms = torch._foreach_norm(updates)
    ratios = [torch.where((w > 0) & (u > 0), w.clamp(max=clamp) / u, 1.0) for w, u in zip(w_norms, u_norms)]
    torch._foreach_mul_(updates, ratios)
    torch._foreach_add_(params, updates, alpha=-lr)


def kaggle_mlp_params() -> list[torch.Tensor]:
    """Parameters of the Kaggle DLRM's MLPs: bottom 13-512-256-64-16, top 367-512-256-1."""
    sizes = [13, 512, 256, 64, 16]
    top = [367, 512, 256, 1]
    layers = [torch.nn.Linear(a, b) for a, b in zip(sizes, sizes[1:])]
    layers += [torch.nn.Linear(a, b) for a, b in zip(top, top[1:])]
    return [p for layer in layers for p in layer.parameters()]


def bench_lamb(reps: int) -> dict:
    ours = [torch.nn.Parameter(p.detach().clone()) for p in kaggle_mlp_params()]
    ref = [p.detach().clone() for p in ours]
    grads = [torch.randn_like(p) for p in ours]
    for p, g in zip(ours, grads):
        p.grad = g
    opt = Lamb(ours, lr=1e-3)
    ms, vs = [torch.zeros_like(p) for p in ref], [torch.zeros_like(p) for p in ref]
    step = {"n": 0}

    def foreach():
        step["n"] += 1
        foreach_lamb_step(ref, grads, ms, vs, step["n"])

    opt.step()
    foreach()
    for a, b in zip(ours, ref):  # same flavour: same result after one step
        torch.testing.assert_close(a.detach(), b, rtol=1e-4, atol=1e-6)
    t = interleaved({"dlrmx": opt.step, "foreach": foreach}, reps * 5)
    return {"params": sum(p.numel() for p in ours), "dlrmx_ms": t["dlrmx"] * 1e3,
            "foreach_ms": t["foreach"] * 1e3, "speedup": t["foreach"] / t["dlrmx"]}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2, help="torch/dlrmx threads (default 2)")
    ap.add_argument("--reps", type=int, default=7, help="timed repetitions per system (median)")
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows per table (default 1M)")
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"{T} tables x {args.rows} rows x dim {DIM}, batch {BATCH}, {IDS_PER_BAG} ids/bag, "
          f"{args.threads} threads, load {load_average()}")
    res = {"threads": args.threads, "rows": args.rows}
    res["split_forward"] = bench_split_forward(args.rows, args.reps)
    for r in res["split_forward"]:
        print(f"split-SGD forward {r['dist']:9s}: fp32 {r['fp32_ms']:7.1f} ms, bf16 {r['split_sgd_ms']:7.1f} ms"
              f" -> {r['speedup']:.2f}x (target >= 1.6x)")
    res["rowwise_adagrad"] = bench_rowwise_adagrad(args.rows, args.reps)
    for r in res["rowwise_adagrad"]:
        fb = (f", fbgemm {r['fbgemm_ms']:7.1f} ms -> {r['vs_fbgemm']:.2f}x (>= 1.5x)" if "vs_fbgemm" in r else "")
        print(f"row-wise Adagrad step {r['dist']:9s}: dlrmx {r['dlrmx_ms']:7.1f} ms{fb}, torch "
              f"{r['torch_ms']:7.1f} ms -> {r['vs_torch']:.1f}x (>= 8x)")
    res["lamb"] = bench_lamb(args.reps)
    r = res["lamb"]
    print(f"Lamb step over the Kaggle MLPs ({r['params']} params): dlrmx {r['dlrmx_ms']:.3f} ms, "
          f"torch._foreach {r['foreach_ms']:.3f} ms -> {r['speedup']:.2f}x (target >= 2x)")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
