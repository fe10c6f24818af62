"""Rows/s and peak memory of the whole preprocessing pipeline, side by side.

    python bench/preprocess.py --rows 1000000 --repeats 3
    python bench/preprocess.py --rows 4000000 --repeats 1 --variants dlrmx-polars,hand-polars

Variants: dlrmx-polars, dlrmx-spark (local[2]), hand-polars, hand-spark (local[2]), python-loop
(on --loop-rows rows). Each run is a fresh subprocess; peak memory is the largest summed RSS of
that process tree (Spark's JVM included), sampled every 0.1 s.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
VARIANTS = ["dlrmx-polars", "hand-polars", "dlrmx-spark", "hand-spark", "python-loop"]


def child(variant: str, path: str, out: str, loop_rows: int) -> None:
    sys.path.insert(0, str(HERE))
    import preprocess_baselines as B

    if variant == "dlrmx-polars" or variant == "dlrmx-spark":
        from dlrmx.preprocess import EngineOptions, preset, run
        opts = EngineOptions("polars") if variant == "dlrmx-polars" else \
            EngineOptions("spark", master="local[2]")
        run(preset("criteo-kaggle"), [path], out, opts)
    elif variant == "hand-polars":
        B.polars_pipeline(path, out)
    elif variant == "hand-spark":
        B.spark_pipeline(path, out)
    elif variant == "python-loop":
        B.python_loop(path, out, loop_rows)


def measure(variant: str, path: str, loop_rows: int) -> tuple[float, float]:
    out = tempfile.mkdtemp(prefix="dlrmx_bench_")
    shutil.rmtree(out)
    cmd = [sys.executable, __file__, "--child", variant, path, out, str(loop_rows)]
    t = time.perf_counter()
    p = psutil.Popen(cmd)
    peak = 0
    while p.poll() is None:
        try:
            procs = [p] + p.children(recursive=True)
            peak = max(peak, sum(q.memory_info().rss for q in procs))
        except psutil.Error:
            pass
        time.sleep(0.1)
    dt = time.perf_counter() - t
    shutil.rmtree(out, ignore_errors=True)
    if p.returncode != 0:
        raise RuntimeError(f"{variant} failed")
    return dt, peak / 2**20


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--loop-rows", type=int, default=200_000)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--input", help="existing TSV (default: generate one in /tmp)")
    a = ap.parse_args()
    path = a.input or f"/tmp/dlrmx_synth_{a.rows}.tsv"
    if not Path(path).exists():
        subprocess.run([sys.executable, str(HERE / "preprocess_gen.py"), "--rows", str(a.rows),
                        "-o", path], check=True)
    results = {}
    for v in a.variants.split(","):
        runs = [measure(v, path, a.loop_rows) for _ in range(a.repeats)]
        rows = min(a.loop_rows, a.rows) if v == "python-loop" else a.rows
        t = statistics.median(r[0] for r in runs)
        results[v] = {"rows": rows, "seconds": [round(r[0], 2) for r in runs], "median_s": round(t, 2),
                      "rows_per_s": round(rows / t), "peak_mib": round(max(r[1] for r in runs))}
        print(json.dumps({v: results[v]}), flush=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
