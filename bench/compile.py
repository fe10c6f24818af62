"""Eager vs torch.compile: the DLRM training step, and the per-call time of the fused op.

    python bench/compile.py                         # full run (a few minutes)
    python bench/compile.py --quick                 # a smoke run: checks that it all works
    python bench/compile.py --old-ops /tmp/ops_before.py   # the op's per-call time, new vs old

1. The DLRM step (forward + backward + fused sparse SGD in backward + the dense SGD step) on
   Kaggle-like tables (the Criteo Kaggle cardinalities, capped at --max-rows rows; dim 16, the
   Kaggle MLPs), batch 128 and 2048, 1 and 2 threads: eager vs torch.compile(model,
   fullgraph=True) (Inductor), medians of interleaved repetitions, and their ratio.
2. The per-call time of `dlrmx.ops.embedding_bags` (8 tables x 100k rows x dim 64, one id per
   bag): forward, and forward + backward + fused SGD, at batch 128 (where Python overhead shows)
   and 2048. Each ops module runs in its own process (two cannot share one: the same op names);
   with --old-ops the processes alternate, round by round, and the medians are compared.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

KAGGLE_CARD = [1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194,
               27, 14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572]
OP_TABLES, OP_ROWS, OP_DIM = 8, 100_000, 64


def cpu_description() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch
    return (f"{model}; torch {torch.__version__}, CPU capability "
            f"{torch.backends.cpu.get_cpu_capability()}; {os.cpu_count()} logical CPUs")


def median_of(fn, iters: int, reps: int) -> float:
    """Median over reps of the mean seconds per call of `iters` calls."""
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        for _ in range(iters):
            fn()
        times.append((time.perf_counter() - start) / iters)
    return statistics.median(times)


# ---- 1. the DLRM step -----------------------------------------------------------------------------

def dlrm_step_times(batch: int, threads: int, max_rows: int, iters: int, reps: int) -> dict:
    import torch
    import torch._dynamo

    import dlrmx.nn as dn
    from dlrmx.models import DLRM

    torch.set_num_threads(threads)
    torch._dynamo.reset()  # Inductor bakes the thread count into its kernels
    tables = [min(c, max_rows) for c in KAGGLE_CARD]
    g = torch.Generator().manual_seed(0)
    dense = torch.rand(batch, 13, generator=g)
    values = torch.cat([torch.randint(0, n, (batch,), generator=g) for n in tables])
    offsets = torch.arange(len(tables) * batch + 1)
    label = torch.randint(0, 2, (batch,), generator=g).float()

    def make_step(compiled: bool):
        model = DLRM(tables, 16, [13, 512, 256, 64, 16], [512, 256, 1],
                     sparse_optimizer=dn.SGD(lr=0.01), seed=1)
        forward = torch.compile(model, fullgraph=True) if compiled else model
        dense_opt = torch.optim.SGD(model.dense_parameters(), lr=0.01)

        def step():
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                forward(dense, values, offsets), label)
            dense_opt.zero_grad(set_to_none=True)
            loss.backward()
            dense_opt.step()
        return step

    steps = {"eager": make_step(False), "compiled": make_step(True)}
    for step in steps.values():  # warm up (and compile) outside the timed region
        for _ in range(3):
            step()
    rounds = {name: [] for name in steps}
    for _ in range(reps):  # interleaved: drift of a shared machine hits both alike
        for name, step in steps.items():
            rounds[name].append(median_of(step, iters, 1))
    return {name: statistics.median(t) for name, t in rounds.items()}


def bench_dlrm(args) -> None:
    print("\n1. DLRM training step (fwd + bwd + fused sparse SGD + dense SGD), eager vs "
          f"torch.compile(fullgraph=True); 26 Kaggle tables capped at {args.max_rows} rows, dim 16")
    print(f"{'threads':>7} {'batch':>6} {'eager ms':>9} {'compiled ms':>12} {'eager/compiled':>15}")
    for threads in args.threads:
        for batch in args.batches:
            t = dlrm_step_times(batch, threads, args.max_rows, args.iters, args.reps)
            print(f"{threads:>7} {batch:>6} {t['eager'] * 1e3:>9.3f} {t['compiled'] * 1e3:>12.3f} "
                  f"{t['eager'] / t['compiled']:>15.2f}", flush=True)


# ---- 2. the op's per-call time (one process per ops module) --------------------------------------

def load_ops(path: str | None):
    """dlrmx.ops, or the ops module at `path` in its place (an older ops.py, whose fused update
    called FusedUpdate.apply: that method is given back here)."""
    if path is None:
        from dlrmx import ops
        return ops
    import torch

    import dlrmx
    spec = importlib.util.spec_from_file_location("dlrmx.ops", path)
    ops = importlib.util.module_from_spec(spec)
    sys.modules["dlrmx.ops"] = ops
    spec.loader.exec_module(ops)
    dlrmx.ops = ops
    from dlrmx.nn.sparse_optim import FusedUpdate

    def apply(self, grad_out, weights, ids, offsets, psw, padding_idx, pooling, batch_size, argmax):
        opt = self.optimizer
        opt.check()
        torch.ops.dlrmx.embedding_bag_update(
            grad_out, weights, ids, offsets, psw, padding_idx, pooling, batch_size, argmax,
            opt.name, float(opt.lr), float(getattr(opt, "eps", 0.0)), self.state)

    if not hasattr(FusedUpdate, "apply"):
        FusedUpdate.apply = apply
    return ops


def op_worker(args) -> None:
    import torch

    ops = load_ops(args.ops_file)
    from dlrmx.nn.sparse_optim import SGD, FusedUpdate

    torch.set_num_threads(args.worker_threads)
    g = torch.Generator().manual_seed(0)
    weights = [torch.randn(OP_ROWS, OP_DIM, generator=g) * 0.01 for _ in range(OP_TABLES)]
    anchor = torch.zeros(0, requires_grad=True)
    fused = FusedUpdate(SGD(lr=0.0), [])  # lr 0: the same work, the weights stay as they are
    out = {}
    for batch in args.batches:
        ids = torch.randint(0, OP_ROWS, (OP_TABLES * batch,), generator=g)
        offsets = torch.arange(OP_TABLES * batch + 1)

        def forward():
            ops.embedding_bags(weights, ids, offsets, batch)

        def train():
            ops.embedding_bags(weights, ids, offsets, batch, optimizer=fused,
                               anchor=anchor).sum().backward()

        iters = max(1, args.iters * 128 // batch)
        for name, fn in (("forward", forward), ("fwd+bwd+sgd", train)):
            fn()
            out[f"{name} B={batch}"] = median_of(fn, iters, args.reps)
    print(json.dumps(out))


def run_worker(ops_file: str | None, threads: int, args) -> dict:
    cmd = [sys.executable, __file__, "--op-worker", "--worker-threads", str(threads),
           "--iters", str(args.iters), "--reps", str(args.reps),
           "--batches", *map(str, args.batches)]
    if ops_file:
        cmd += ["--ops-file", ops_file]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_op(args) -> None:
    variants = {"new": None} | ({"old": args.old_ops} if args.old_ops else {})
    print(f"\n2. dlrmx.ops.embedding_bags per call: {OP_TABLES} tables x {OP_ROWS} rows x dim "
          f"{OP_DIM}, one id per bag (us; median of {args.rounds} alternating process rounds)")
    for threads in args.threads:
        rounds = {name: [] for name in variants}
        for _ in range(args.rounds):
            for name, path in variants.items():
                rounds[name].append(run_worker(path, threads, args))
        for key in rounds["new"][0]:
            cells = {name: statistics.median(r[key] for r in rs) * 1e6 for name, rs in rounds.items()}
            line = f"  threads={threads} {key:<18} " + "  ".join(f"{n} {v:8.1f}" for n, v in cells.items())
            if "old" in cells:
                line += f"  old/new {cells['old'] / cells['new']:.2f}"
            print(line, flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a short smoke run")
    p.add_argument("--old-ops", help="an older dlrmx/ops.py to compare the op's per-call time with")
    p.add_argument("--batches", type=int, nargs="+", default=[128, 2048])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--max-rows", type=int, default=100_000)
    p.add_argument("--iters", type=int, default=20, help="calls per timing (scaled for the op)")
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--skip-dlrm", action="store_true")
    p.add_argument("--op-worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--ops-file", help=argparse.SUPPRESS)
    p.add_argument("--worker-threads", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.old_ops and not Path(args.old_ops).is_file():
        print(f"error: --old-ops {args.old_ops}: no such file", file=sys.stderr)
        sys.exit(2)
    if args.op_worker:
        op_worker(args)
        return
    if args.quick:
        args.batches, args.threads, args.iters, args.reps, args.rounds = [128], [1], 2, 2, 1
        args.max_rows = 10_000
    print(f"CPU: {cpu_description()}")
    if not args.skip_dlrm:
        bench_dlrm(args)
    bench_op(args)


if __name__ == "__main__":
    main()
