"""One process x 2 threads against 2 processes x 1 thread (torchrun, gloo over loopback), the
same global batches: samples/s of `python -m dlrmx.train` for the Kaggle and Terabyte
architectures on synthetic data, medians of interleaved repeats.

    python bench/distributed.py                       # both architectures, 3 repeats
    python bench/distributed.py --arch kaggle --batches 100 --repeats 2
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

ARCHS = {  # the reference's Kaggle and Terabyte MLPs, tables at a fraction of their size
    "kaggle": ["--arch-sparse-feature-size=16", "--arch-mlp-bot=13-512-256-64-16",
               "--arch-mlp-top=512-256-1", "--synthetic-preset=kaggle", "--synthetic-scale=0.01"],
    "terabyte": ["--arch-sparse-feature-size=64", "--arch-mlp-bot=13-512-256-64",
                 "--arch-mlp-top=512-512-256-1", "--synthetic-preset=terabyte",
                 "--synthetic-scale=0.001"],
}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def once(arch: str, procs: int, batches: int, batch: int, run_dir: str) -> float:
    common = [*ARCHS[arch], f"--mini-batch-size={batch}", f"--num-batches={batches}",
              "--eval-samples=8192", "--test-freq=-1", "--precision=fp32", "--no-progress",
              "--no-plots", "--checkpoint-freq=0", f"--run-dir={run_dir}",
              f"--threads={2 // procs}"]
    launch = [] if procs == 1 else ["-m", "torch.distributed.run", f"--nproc-per-node={procs}",
                                    f"--master-port={_port()}"]
    cmd = [sys.executable, *launch, "-m", "dlrmx.train", *common]
    subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return json.loads((Path(run_dir) / "summary.json").read_text())["samples_per_s"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", choices=[*ARCHS, "all"], default="all")
    p.add_argument("--batches", type=int, default=150)
    p.add_argument("--batch", type=int, default=2048)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    print(cpu_line())
    print(f"{'arch':10s} {'1 proc x 2 thr':>15s} {'2 procs x 1 thr':>16s} {'ratio':>6s}")
    for arch in (ARCHS if a.arch == "all" else [a.arch]):
        rates = {1: [], 2: []}
        with tempfile.TemporaryDirectory() as tmp:
            for r in range(a.repeats):
                for procs in (1, 2):
                    rates[procs].append(once(arch, procs, a.batches, a.batch, f"{tmp}/{r}-{procs}"))
        one, two = statistics.median(rates[1]), statistics.median(rates[2])
        print(f"{arch:10s} {one:15,.0f} {two:16,.0f} {two / one:6.2f}")


if __name__ == "__main__":
    main()
