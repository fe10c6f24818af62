"""One process x 2 threads against 2 processes x 1 thread (torchrun, gloo over loopback), the
same global batches: samples/s of `python -m dlrmx.train` for the Kaggle and Terabyte
architectures on synthetic data, and the 2-process step split into compute and communication
(seconds rank 0 is blocked in collectives), medians of interleaved repeats. Then a projection
of MLPerf's Terabyte DLRM to 4, 16 and 64 nodes from the measured compute and the placement's
communication volumes, beside Intel's published times.

    python bench/distributed.py                       # both architectures, 3 repeats, projection
    python bench/distributed.py --arch kaggle --batches 100 --repeats 2
    python bench/distributed.py --arch none           # the projection only
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from roofline import cpu_line  # noqa: E402

from dlrmx.data.synthetic import table_sizes  # noqa: E402
from dlrmx.distributed.plan import place, report  # noqa: E402
from dlrmx.models import gemm_widths  # noqa: E402

ARCHS = {  # the reference's Kaggle and Terabyte MLPs, tables at a fraction of their size
    "kaggle": ["--arch-sparse-feature-size=16", "--arch-mlp-bot=13-512-256-64-16",
               "--arch-mlp-top=512-256-1", "--synthetic-preset=kaggle", "--synthetic-scale=0.01"],
    "terabyte": ["--arch-sparse-feature-size=64", "--arch-mlp-bot=13-512-256-64",
                 "--arch-mlp-top=512-512-256-1", "--synthetic-preset=terabyte",
                 "--synthetic-scale=0.001"],
}
# MLPerf's DLRM on Criteo Terabyte (ANCHORS.md): d=128, tables capped at 40M rows (96 GB fp32)
MLPERF = {"dim": 128, "bot": [13, 512, 256, 128], "top": [1024, 1024, 512, 256, 1],
          "batch": 262_144, "epoch": 4_195_197_692, "epochs_to_target": 0.8}
MLPERF_ARGS = ["--arch-sparse-feature-size=128", "--arch-mlp-bot=13-512-256-128",
               "--arch-mlp-top=1024-1024-512-256-1", "--synthetic-preset=mlperf",
               "--synthetic-scale=0.0001"]
INTEL_MIN = {4: 116.6, 16: 45.0, 32: 22.3, 64: 15.0}  # MLPerf v0.7 / v1.0 sockets -> minutes


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def once(args: list[str], procs: int, batches: int, batch: int, run_dir: str) -> dict:
    common = [*args, f"--mini-batch-size={batch}", f"--num-batches={batches}",
              "--eval-samples=8192", "--test-freq=-1", "--precision=fp32", "--no-progress",
              "--no-plots", "--checkpoint-freq=0", f"--run-dir={run_dir}",
              f"--threads={2 // procs}"]
    launch = [] if procs == 1 else ["-m", "torch.distributed.run", f"--nproc-per-node={procs}",
                                    f"--master-port={_port()}"]
    cmd = [sys.executable, *launch, "-m", "dlrmx.train", *common]
    subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return json.loads((Path(run_dir) / "summary.json").read_text())


def compare(arch: str, batches: int, batch: int, repeats: int) -> None:
    runs: dict[int, list[dict]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):
            for procs in (1, 2):
                runs[procs].append(once(ARCHS[arch], procs, batches, batch, f"{tmp}/{r}-{procs}"))
    one = statistics.median(s["samples_per_s"] for s in runs[1])
    two = statistics.median(s["samples_per_s"] for s in runs[2])
    step = statistics.median(1000 * s["train_seconds"] / s["steps"] for s in runs[2])
    comm = statistics.median(1000 * s["communication"]["seconds"] / s["steps"] for s in runs[2])
    mb = statistics.median(s["communication"]["bytes"] / s["steps"] / 1e6 for s in runs[2])
    print(f"{arch:10s} {one:15,.0f} {two:16,.0f} {two / one:6.2f} {step:8.1f} "
          f"{step - comm:8.1f} {comm:8.1f} {100 * comm / step:5.0f}% {mb:8.2f}")


def project(per_sample_s: float, cores_here: int, cores: int, mem_gbs: float, alpha_us: float,
            link_gbps: list[float]) -> None:
    """Minutes to MLPerf's target (0.8 epoch) on n nodes: every step the busiest rank computes
    its 1/n of the global batch (measured here per core, scaled linearly to `cores`), gathers
    and updates its embedding rows at `mem_gbs`, and sends the placement's bytes at the link's
    rate plus alpha per message; nothing overlapped (an upper bound on the step)."""
    m = MLPERF
    sizes = table_sizes("mlperf")
    dense = sum(a * b + b for w in gemm_widths(m["bot"], m["top"], "dot", m["dim"], len(sizes))
                for a, b in zip(w, w[1:]))
    steps = m["epochs_to_target"] * m["epoch"] / m["batch"]
    print(f"\nprojection: MLPerf Terabyte DLRM, global batch {m['batch']:,}, {steps:,.0f} steps "
          f"to 0.8 epoch; {cores} cores and {mem_gbs:g} GB/s of random-row memory bandwidth per "
          f"node, {alpha_us:g} us per message")
    print(f"{'nodes':>5s} {'link':>7s} {'compute':>8s} {'rows':>6s} {'a2a MB':>7s} {'ar MB':>6s} "
          f"{'comm':>6s} {'min':>6s} {'Intel':>6s}  limited by")
    for n in (4, 16, 64):
        plan = place(sizes, n, 2048, m["dim"], "sgd")
        sent = report(plan, sizes, m["dim"], "sgd", m["batch"], dense)["bytes_per_step"]
        b = m["batch"] / n
        compute = b * per_sample_s * cores_here / cores
        # forward read, backward read and write of each looked-up fp32 row
        rows = b * len(sizes) * m["dim"] * 4 * 3 / (mem_gbs * 1e9)
        a2a = sent["all_to_all_ids"] + sent["all_to_all_pooled"]
        ar = sent["all_reduce_replicated"] + sent["all_reduce_dense"]
        messages = 4 * (n - 1) + 2 * 2 * (n - 1)  # 4 all-to-alls; 2 ring all-reduces
        for gbps in link_gbps:
            comm = (a2a + ar) * 8 / (gbps * 1e9) + messages * alpha_us * 1e-6
            total = steps * (compute + rows + comm) / 60
            terms = {"compute": compute, "embedding rows": rows, "all-to-all": a2a * 8 / (gbps * 1e9),
                     "all-reduce": ar * 8 / (gbps * 1e9), "latency": messages * alpha_us * 1e-6}
            print(f"{n:5d} {gbps:4.0f}GbE {1e3 * compute:6.1f}ms {1e3 * rows:4.1f}ms "
                  f"{a2a / 1e6:7.1f} {ar / 1e6:6.1f} {1e3 * comm:4.1f}ms {total:6.1f} "
                  f"{INTEL_MIN.get(n, float('nan')):6.1f}  {max(terms, key=terms.get)}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", choices=[*ARCHS, "all", "none"], default="all")
    p.add_argument("--batches", type=int, default=150)
    p.add_argument("--batch", type=int, default=2048)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cores", type=int, default=28, help="cores per node of the projection")
    p.add_argument("--mem-gbs", type=float, default=100.0,
                   help="a node's bandwidth for random embedding rows, GB/s")
    p.add_argument("--alpha-us", type=float, default=20.0, help="latency per message (TCP), us")
    a = p.parse_args()
    print(cpu_line())
    print(f"{'arch':10s} {'1 proc x 2 thr':>15s} {'2 procs x 1 thr':>16s} {'ratio':>6s} "
          f"{'step ms':>8s} {'compute':>8s} {'comm':>8s} {'share':>6s} {'MB/step':>8s}")
    for arch in ARCHS if a.arch == "all" else [] if a.arch == "none" else [a.arch]:
        compare(arch, a.batches, a.batch, a.repeats)
    with tempfile.TemporaryDirectory() as tmp:  # MLPerf's MLPs: the compute per sample here
        rates = [once(MLPERF_ARGS, 1, 40, 4096, f"{tmp}/{r}")["samples_per_s"]
                 for r in range(a.repeats)]
    rate = statistics.median(rates)
    print(f"\nMLPerf architecture, 1 process x 2 threads, batch 4096, fp32: {rate:,.0f} samples/s")
    project(1 / rate, 2, a.cores, a.mem_gbs, a.alpha_us, [25, 100])


if __name__ == "__main__":
    main()
