"""Per-call time of `dlrmx.nn.EmbeddingBagCollection` (forward, and forward + backward + fused SGD) at
small and large batches, for the dlrmx on sys.path, or for two builds side by side.

    python bench/op_overhead.py                                  # the installed build
    python bench/op_overhead.py --this NEW_PYTHON_DIR --compare OLD_PYTHON_DIR

A PYTHON_DIR is the `python/` folder of a checkout with its native library copied into `dlrmx/`
(`libdlrmx.so`, or `_C*.so` and `_build_info.py` for builds before the C ABI, from `build/*/`). Compare two such folders, both loaded the same way (no site customisation, so the
editable install's import finder takes no part: against a plain folder it gave ratios from
0.67 to 1.29 here for near-identical native code).
Each build runs in its own process (two builds cannot share one: same op names); the processes
alternate, and medians of the rounds are compared. The small batch is where per-call Python and
argument checks show; the large one is bound by memory traffic.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

DIM, IDS_PER_BAG = 64, 1


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def measure(batches: list[int], reps: int, threads: int, rows: int, tables: int) -> dict:
    import torch

    import dlrmx.nn as dnn

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    plain = dnn.EmbeddingBagCollection([(rows, DIM)] * tables)
    fused = dnn.EmbeddingBagCollection([(rows, DIM)] * tables, optimizer=dnn.SGD(lr=0.01))
    g = torch.Generator().manual_seed(0)
    out: dict = {}
    for b in batches:
        ids = torch.randint(0, rows, (tables * b * IDS_PER_BAG,), generator=g)
        offsets = torch.arange(0, tables * b * IDS_PER_BAG + 1, IDS_PER_BAG)
        grad = torch.rand(b, tables * DIM, generator=g)

        def fwd():
            with torch.no_grad():
                plain(ids, offsets=offsets)

        def step():
            fused(ids, offsets=offsets).backward(grad)

        for name, fn in (("forward", fwd), ("fwd+bwd+sgd", step)):
            for _ in range(3):
                fn()
            n = max(3, int(2000 / b))  # calls per timing: enough to see microseconds
            times = []
            for _ in range(reps):
                t0 = time.perf_counter()
                for _ in range(n):
                    fn()
                times.append((time.perf_counter() - t0) / n * 1e6)
            out[f"{name} B={b}"] = statistics.median(times)
    return out


def child_cmd(python_dir: str | None, args) -> tuple[list[str], dict]:
    env = dict(os.environ)
    cmd = [sys.executable]
    if python_dir:  # no site customisation: the editable install's finder must not win
        import site
        env["PYTHONPATH"] = os.pathsep.join([python_dir] + site.getsitepackages())
        cmd.append("-S")
    cmd += [__file__, "--child", "--reps", str(args.reps), "--threads", str(args.threads),
            "--rows", str(args.rows), "--tables", str(args.tables),
            "--batches", ",".join(map(str, args.batches))]
    return cmd, env


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--this", metavar="NEW_PYTHON_DIR", help="the build to measure (default: the "
                   "installed dlrmx)")
    p.add_argument("--compare", metavar="OLD_PYTHON_DIR", help="the build to compare with")
    p.add_argument("--rounds", type=int, default=5, help="alternating processes per build")
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rows", type=int, default=100_000, help="rows per table (small: the tables "
                   "stay in cache and the per-call overhead shows)")
    p.add_argument("--tables", type=int, default=8, help="tables per call (26 for Criteo)")
    p.add_argument("--batches", type=lambda s: [int(x) for x in s.split(",")], default=[128, 2048])
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(measure(args.batches, args.reps, args.threads, args.rows, args.tables)))
        return
    builds = {"this": args.this}
    if args.compare:
        builds["other"] = args.compare
    runs: dict[str, list[dict]] = {k: [] for k in builds}
    for _ in range(args.rounds):
        for name, d in builds.items():
            cmd, env = child_cmd(d, args)
            r = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            runs[name].append(json.loads(r.stdout.strip().splitlines()[-1]))
    print(f"CPU: {cpu_model()}; {args.threads} thread(s); {args.tables} tables x {args.rows} rows x dim "
          f"{DIM}, {IDS_PER_BAG} id per bag; medians of {args.rounds} processes x {args.reps} reps")
    keys = list(runs["this"][0])
    med = {n: {k: statistics.median(r[k] for r in rs) for k in keys} for n, rs in runs.items()}
    head = f"{'us per call':<22}{'this':>10}" + (f"{'other':>10}{'this/other':>12}" if args.compare else "")
    print(head)
    for k in keys:
        line = f"{k:<22}{med['this'][k]:>10.1f}"
        if args.compare:
            line += f"{med['other'][k]:>10.1f}{med['this'][k] / med['other'][k]:>12.3f}"
        print(line)


if __name__ == "__main__":
    main()
