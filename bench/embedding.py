#!/usr/bin/env python
"""Multi-table embedding bags, side by side: dlrmx vs torch.nn.EmbeddingBag vs FBGEMM's CPU TBE.

Default config (issue 2): 8 tables x 1M rows x dim 64 fp32, batch 2048, 1 and 20 ids per bag,
uniform and Zipf(1.05) ids, 1 and 2 threads. For each config it times, interleaved within every
repetition (the machine is shared, so only side-by-side ratios mean much):

  forward              inference lookup, under torch.no_grad(), output [B, T*D]
  fwd+bwd+SGD          one training step of the tables with plain SGD (lr 0.01):
                         dlrmx   EmbeddingBagCollection(optimizer=dlrmx.nn.SGD): fused backward
                         torch   T x nn.EmbeddingBag(sparse=True) + torch.optim.SGD (reference DLRM)
                         fbgemm  SplitTableBatchedEmbeddingBagsCodegen(HOST, CPU, EXACT_SGD)

Every system sees the same ids, offsets and output gradient. Before timing, a correctness gate
checks that all systems' forward outputs agree (and again after one training step), so a broken
kernel cannot report a fast number. The random-row gather limit of this machine is measured in
the same run (uniform rows of a table as large as all tables together, index_select), and lookup
rates are quoted as a fraction of it. Peak RSS is measured per system in a child process.

    python bench/embedding.py                     # the full default run (a few minutes)
    python bench/embedding.py --quick             # tiny smoke run
    python bench/embedding.py --threads 2 --ids-per-bag 20 --json out.json

FBGEMM is optional (`pip install fbgemm-gpu-cpu==1.8.0`, the `bench` extra); without it the
FBGEMM columns are skipped with a note.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _bench_common import (  # noqa: E402
    Batch, cpu_model, current_rss_mib, load_average, make_batch, make_id_sampler,
    measure_gather_limit, median, peak_rss_mib, timed,
)

SYSTEMS = ("dlrmx", "torch", "fbgemm")
LR = 0.01
CHECK_RTOL = 1e-4  # max |out - torch| / max |torch| allowed by the correctness gate


# ---------------------------------------------------------------------------------------------
# The three systems: same weights in, same ids and output gradient, same SGD.


def fbgemm_import_error() -> str | None:
    """None when FBGEMM's CPU TBE can be imported, else why not."""
    try:
        import fbgemm_gpu  # noqa: F401
        from fbgemm_gpu.split_table_batched_embeddings_ops_training import (  # noqa: F401
            SplitTableBatchedEmbeddingBagsCodegen,
        )
    except Exception as e:  # ImportError, or an undefined symbol from an ABI mismatch
        return f"{type(e).__name__}: {e}".splitlines()[0][:200]
    return None


def dlrmx_build() -> str:
    """The commit of the checkout (and whether kernel/glue sources differ from it) plus the
    extension's build id, so a result can be tied to the build that produced it."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parts = []
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--", "csrc", "kernels",
                                "python"], capture_output=True, text=True, timeout=10).stdout.strip()
        note = " + uncommitted or untracked files in csrc/kernels/python" if dirty else ""
        parts.append(f"commit {head or '?'}{note}")
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        import dlrmx._C
        with open(dlrmx._C.__file__, "rb") as f:
            elf = f.read()
        i = elf.find(b"GNU\x00", 0, 4096)  # the .note.gnu.build-id payload follows its name
        if i >= 0:
            parts.append("_C build-id " + elf[i + 4:i + 12].hex())
    except Exception:
        pass
    return ", ".join(parts) or "unknown"


def fbgemm_version() -> str:
    try:
        from importlib.metadata import version
        return version("fbgemm-gpu-cpu")
    except Exception:
        return "not installed"


class DlrmxSystem:
    name = "dlrmx"

    def __init__(self, num_tables: int, rows: int, dim: int, weights=None) -> None:
        import dlrmx.nn
        self.module = dlrmx.nn.EmbeddingBagCollection(
            [(rows, dim)] * num_tables, mode="sum", optimizer=dlrmx.nn.SGD(lr=LR),
            init_weights=weights)

    def forward(self, batch: Batch) -> torch.Tensor:
        with torch.no_grad():
            return self.module(batch.values, offsets=batch.offsets)

    def train_step(self, batch: Batch, grad: torch.Tensor) -> None:
        self.module(batch.values, offsets=batch.offsets).backward(grad)


class TorchSystem:
    """What the reference DLRM does: one nn.EmbeddingBag(sum, sparse=True) per table, the pooled
    outputs concatenated ([B, T*D], like the others), torch.optim.SGD on the sparse gradients."""

    name = "torch"

    def __init__(self, num_tables: int, rows: int, dim: int, weights=None) -> None:
        self.bags = torch.nn.ModuleList(
            torch.nn.EmbeddingBag(rows, dim, mode="sum", sparse=True,
                                  _weight=None if weights is None else weights[t])
            for t in range(num_tables))
        self.opt = torch.optim.SGD(self.bags.parameters(), lr=LR)

    def _pooled(self, batch: Batch) -> torch.Tensor:
        return torch.cat([bag(ids, off) for bag, (ids, off) in zip(self.bags, batch.per_table)], 1)

    def forward(self, batch: Batch) -> torch.Tensor:
        with torch.no_grad():
            return self._pooled(batch)

    def train_step(self, batch: Batch, grad: torch.Tensor) -> None:
        self.opt.zero_grad(set_to_none=True)
        self._pooled(batch).backward(grad)
        self.opt.step()


class FbgemmSystem:
    """FBGEMM's table-batched embedding on the CPU, training module (its backward applies exact
    SGD in place); its forward is also the inference timing. Default options otherwise."""

    name = "fbgemm"

    def __init__(self, num_tables: int, rows: int, dim: int, weights=None) -> None:
        from fbgemm_gpu.split_embedding_configs import EmbOptimType
        from fbgemm_gpu.split_table_batched_embeddings_ops_common import (
            EmbeddingLocation, PoolingMode,
        )
        from fbgemm_gpu.split_table_batched_embeddings_ops_training import (
            ComputeDevice, SplitTableBatchedEmbeddingBagsCodegen,
        )
        self.module = SplitTableBatchedEmbeddingBagsCodegen(
            [(rows, dim, EmbeddingLocation.HOST, ComputeDevice.CPU)] * num_tables,
            optimizer=EmbOptimType.EXACT_SGD, learning_rate=LR, pooling_mode=PoolingMode.SUM)
        if weights is not None:
            with torch.no_grad():
                for dst, src in zip(self.module.split_embedding_weights(), weights):
                    dst.copy_(src)

    def forward(self, batch: Batch) -> torch.Tensor:
        with torch.no_grad():
            return self.module(batch.values, batch.offsets)

    def train_step(self, batch: Batch, grad: torch.Tensor) -> None:
        self.module(batch.values, batch.offsets).backward(grad)


SYSTEM_CLASSES = {"dlrmx": DlrmxSystem, "torch": TorchSystem, "fbgemm": FbgemmSystem}


# ---------------------------------------------------------------------------------------------
# Correctness gate


def check_correctness(systems: dict, batches: list[Batch], grad: torch.Tensor) -> dict:
    """Forward outputs of every system against torch's on batch 0; then one training step on
    batch 0 for every system; then forward again on batches 0 and 1 (checks the update too)."""
    def compare(stage: str, batch: Batch) -> dict:
        ref = systems["torch"].forward(batch)
        scale = float(ref.abs().max()) or 1.0
        errs = {}
        for name, sys_ in systems.items():
            if name == "torch":
                continue
            out = sys_.forward(batch)
            if out.shape != ref.shape:
                raise SystemExit(f"correctness gate: {name} {stage} output shape {tuple(out.shape)} "
                                 f"!= torch {tuple(ref.shape)}")
            err = float((out - ref).abs().max()) / scale
            errs[name] = err
            if not err <= CHECK_RTOL:
                raise SystemExit(f"correctness gate FAILED: {name} {stage}: max |out - torch| / "
                                 f"max |torch| = {err:.3g} > {CHECK_RTOL}")
        return errs

    report = {"forward": compare("forward", batches[0])}
    for sys_ in systems.values():
        sys_.train_step(batches[0], grad)
    report["after_sgd_step"] = compare("forward after one SGD step", batches[0])
    if len(batches) > 1:
        report["after_sgd_step_other_batch"] = compare("forward after one SGD step", batches[1])
    return report


# ---------------------------------------------------------------------------------------------
# Timing one config, systems interleaved


def bench_config(systems: dict, batches: list[Batch], grad: torch.Tensor, reps: int) -> dict:
    names = list(systems)
    for sys_ in systems.values():  # warm-up: first-touch, JIT, allocator
        sys_.forward(batches[0])
        sys_.train_step(batches[0], grad)
    per_rep = {phase: {n: [] for n in names} for phase in ("forward", "train")}
    for rep in range(reps):
        order = names[rep % len(names):] + names[: rep % len(names)]  # rotate who goes first
        for phase in ("forward", "train"):
            for n in order:
                sys_ = systems[n]
                if phase == "forward":
                    ts = [timed(lambda b=b: sys_.forward(b)) for b in batches]
                else:
                    ts = [timed(lambda b=b: sys_.train_step(b, grad)) for b in batches]
                per_rep[phase][n].append(sum(ts) / len(ts))
    out = {}
    for phase, by_sys in per_rep.items():
        out[phase] = {"ms": {n: 1e3 * median(v) for n, v in by_sys.items()},
                      "ms_all_reps": {n: [round(1e3 * x, 3) for x in v] for n, v in by_sys.items()}}
        if "dlrmx" in by_sys:
            # Median of per-repetition ratios: each ratio compares runs taken seconds apart.
            out[phase]["speedup"] = {
                n: median([o / d for o, d in zip(by_sys[n], by_sys["dlrmx"])])
                for n in names if n != "dlrmx"}
    return out


# ---------------------------------------------------------------------------------------------
# Peak RSS per system, each in its own child process


def rss_child(args) -> None:
    """Build one system (its own default init, no shared source weights), run a few training
    steps and forwards on uniform 20-id batches, print {baseline, peak} RSS as JSON."""
    torch.set_num_threads(max(args.threads))
    rng = np.random.default_rng(args.seed)
    samplers = [make_id_sampler("uniform", args.rows, rng) for _ in range(args.tables)]
    batches = [make_batch(samplers, args.batch, max(args.ids_per_bag)) for _ in range(2)]
    grad = torch.randn(args.batch, args.tables * args.dim)
    if args.only == "dlrmx":
        import dlrmx.nn  # noqa: F401  (count the library in the baseline, not in the system)
    elif args.only == "fbgemm":
        import fbgemm_gpu.split_table_batched_embeddings_ops_training  # noqa: F401
    baseline = current_rss_mib()
    sys_ = SYSTEM_CLASSES[args.only](args.tables, args.rows, args.dim)
    built = current_rss_mib()
    for _ in range(3):
        for b in batches:
            sys_.train_step(b, grad)
            sys_.forward(b)
    print(json.dumps({"system": args.only, "baseline_mib": baseline, "after_build_mib": built,
                      "steady_mib": current_rss_mib(), "peak_mib": peak_rss_mib()}))


def measure_rss(args, names: list[str]) -> dict:
    results = {}
    for n in names:
        cmd = [sys.executable, os.path.abspath(__file__), "--only", n, "--rows", str(args.rows),
               "--tables", str(args.tables), "--dim", str(args.dim), "--batch", str(args.batch),
               "--threads", ",".join(map(str, args.threads)),
               "--ids-per-bag", ",".join(map(str, args.ids_per_bag)), "--seed", str(args.seed)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            results[n] = {"error": (proc.stderr.strip().splitlines() or ["?"])[-1][:200]}
            continue
        results[n] = json.loads(proc.stdout.strip().splitlines()[-1])
    return results


# ---------------------------------------------------------------------------------------------
# Report


def fmt(x: float | None, spec: str = ".1f") -> str:
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return "-"
    return format(x, spec)


def print_report(res: dict) -> None:
    names = res["systems"]
    has_fb = "fbgemm" in names
    lim = res["gather_limit_rows_per_s"]
    print()
    print("## Results (ms are medians per batch; ratios = other system's time / dlrmx's time, "
          "median of per-repetition ratios; >1 means dlrmx is faster)")
    print()
    head = ["threads", "ids/bag", "ids",
            "fwd dlrmx ms", "fwd torch ms"] + (["fwd fbgemm ms"] if has_fb else []) + \
           ["fwd vs torch"] + (["fwd vs fbgemm"] if has_fb else []) + \
           ["train dlrmx ms", "train torch ms"] + (["train fbgemm ms"] if has_fb else []) + \
           ["train vs torch"] + (["train vs fbgemm"] if has_fb else []) + \
           ["dlrmx fwd Mlookups/s", "fwd % gather limit", "dlrmx train Mlookups/s",
            "train % gather limit"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for c in res["configs"]:
        f, t = c["forward"], c["train"]
        row = [str(c["threads"]), str(c["ids_per_bag"]), c["dist"],
               fmt(f["ms"].get("dlrmx"), ".2f"), fmt(f["ms"].get("torch"), ".2f")]
        if has_fb:
            row.append(fmt(f["ms"].get("fbgemm"), ".2f"))
        row.append(fmt(f.get("speedup", {}).get("torch"), ".2f") + "x")
        if has_fb:
            row.append(fmt(f.get("speedup", {}).get("fbgemm"), ".2f") + "x")
        row += [fmt(t["ms"].get("dlrmx"), ".2f"), fmt(t["ms"].get("torch"), ".1f")]
        if has_fb:
            row.append(fmt(t["ms"].get("fbgemm"), ".1f"))
        row.append(fmt(t.get("speedup", {}).get("torch"), ".2f") + "x")
        if has_fb:
            row.append(fmt(t.get("speedup", {}).get("fbgemm"), ".2f") + "x")
        lk = c["lookups_per_batch"]
        limit = lim[str(c["threads"])]
        fwd_rate = lk / (f["ms"]["dlrmx"] / 1e3) if "dlrmx" in f["ms"] else float("nan")
        trn_rate = lk / (t["ms"]["dlrmx"] / 1e3) if "dlrmx" in t["ms"] else float("nan")
        row += [fmt(fwd_rate / 1e6, ".1f"), fmt(100 * fwd_rate / limit, ".0f") + "%",
                fmt(trn_rate / 1e6, ".1f"), fmt(100 * trn_rate / limit, ".0f") + "%"]
        print("| " + " | ".join(row) + " |")
    print()
    print("Gather limit (uniform random %d-byte rows out of a %.1f GiB table, index_select into a "
          "preallocated output, the faster of one big output and 8192-row chunks, median): %s" % (
              res["config"]["dim"] * 4,
              res["config"]["tables"] * res["config"]["rows"] * res["config"]["dim"] * 4 / 2**30,
              ", ".join(f"{k} thread(s) {v / 1e6:.1f}M rows/s" for k, v in lim.items())))
    print("Training moves about 3 rows per lookup (forward read, backward read-modify-write), so "
          "~33% of the gather limit is roughly the uniform-id ceiling for a train step; Zipf ids "
          "hit cache and can exceed 100%.")

    print()
    print("## How far from the memory floor (dlrmx fwd+bwd+SGD)")
    print()
    print("floor = (lookups + 2 x distinct rows) / gather limit: the forward reads one row per "
          "lookup, the update reads and writes back each distinct row once, every access a cache "
          "miss (true for uniform ids; Zipf's hot rows hit cache). Approximate: index_select "
          "issues no software prefetch, and kernels that prefetch beat its rate (see the forward's "
          "% of gather limit), so a kernel can run under this floor. 'torch / floor' is the "
          "speedup over torch that a kernel running at the floor would show.")
    print()
    print("| threads | ids/bag | ids | lookups | distinct rows | floor ms | dlrmx train ms "
          "| dlrmx / floor | torch train ms | torch / floor |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for c in res["configs"]:
        limit = lim[str(c["threads"])]
        floor_ms = 1e3 * (c["lookups_per_batch"] + 2 * c["unique_rows_per_batch"]) / limit
        c["floor_ms"] = floor_ms
        d, t = c["train"]["ms"].get("dlrmx"), c["train"]["ms"].get("torch")
        print(f"| {c['threads']} | {c['ids_per_bag']} | {c['dist']} | {c['lookups_per_batch']} | "
              f"{c['unique_rows_per_batch']} | {floor_ms:.1f} | {fmt(d, '.1f')} | "
              f"{fmt(d / floor_ms if d else None, '.2f')}x | {fmt(t, '.1f')} | "
              f"{fmt(t / floor_ms if t else None, '.1f')}x |")

    if res.get("rss"):
        print()
        cfg = res["config"]
        tables_mib = cfg["tables"] * cfg["rows"] * cfg["dim"] * 4 / 2**20
        print(f"## Peak RSS per system (own child process; tables alone {tables_mib:.0f} MiB)")
        print()
        print("| system | after imports MiB | peak MiB | peak - imports MiB | over tables MiB |")
        print("|---|---|---|---|---|")
        for n, r in res["rss"].items():
            if "error" in r:
                print(f"| {n} | error: {r['error']} | | | |")
                continue
            d = r["peak_mib"] - r["baseline_mib"]
            print(f"| {n} | {r['baseline_mib']:.0f} | {r['peak_mib']:.0f} | {d:.0f} | "
                  f"{d - tables_mib:.0f} |")
        print(f"\nThis (parent) process peak RSS, all systems + gather table: "
              f"{res['parent_peak_rss_mib']:.0f} MiB")

    targets = res.get("targets")
    if targets:
        print()
        print("## Targets (2 threads, 20 ids/bag)")
        print()
        for t in targets:
            status = "MET" if t["met"] else f"MISSED by {t['target'] / t['value']:.2f}x"
            if t["value"] != t["value"]:
                status = "n/a"
            print(f"- {t['what']} ({t['dist']}): {fmt(t['value'], '.2f')}x, target >= "
                  f"{t['target']}x: {status}")
    for note in res.get("notes", []):
        print(f"\nNote: {note}")


def evaluate_targets(configs: list[dict]) -> list[dict]:
    out = []
    for c in configs:
        if c["threads"] != 2 or c["ids_per_bag"] != 20:
            continue
        for what, phase, other, target in (("forward vs torch", "forward", "torch", 1.3),
                                           ("fwd+bwd+SGD vs torch", "train", "torch", 8.0),
                                           ("fwd+bwd+SGD vs FBGEMM TBE", "train", "fbgemm", 2.0)):
            v = c[phase].get("speedup", {}).get(other, float("nan"))
            out.append({"what": what, "dist": c["dist"], "value": v, "target": target,
                        "met": bool(v >= target)})
    return out


# ---------------------------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    ints = lambda s: [int(x) for x in s.split(",") if x]  # noqa: E731
    p.add_argument("--tables", type=int, default=8)
    p.add_argument("--rows", type=int, default=1_000_000, help="rows per table")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--batch", type=int, default=2048)
    p.add_argument("--ids-per-bag", type=ints, default=[1, 20], help="comma list (default 1,20)")
    p.add_argument("--dists", default="uniform,zipf1.05", help="comma list: uniform, zipf<s>")
    p.add_argument("--threads", type=ints, default=[1, 2], help="comma list (default 1,2)")
    p.add_argument("--systems", default=",".join(SYSTEMS), help="comma list of " + ",".join(SYSTEMS))
    p.add_argument("--reps", type=int, default=7, help="timed repetitions per config")
    p.add_argument("--batches", type=int, default=3, help="distinct batches per repetition")
    p.add_argument("--gather-reps", type=int, default=15)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-rss", action="store_true", help="skip the per-system peak-RSS children")
    p.add_argument("--no-check", action="store_true", help="skip the correctness gate")
    p.add_argument("--quick", action="store_true",
                   help="tiny smoke run: 100k rows, batch 256, 2 reps, 2 batches")
    p.add_argument("--json", metavar="OUT", help="also save all results as JSON")
    p.add_argument("--only", choices=SYSTEMS, help=argparse.SUPPRESS)  # peak-RSS child
    args = p.parse_args(argv)
    if args.quick:
        args.rows, args.batch, args.reps, args.batches, args.gather_reps = 100_000, 256, 2, 2, 5
    args.dists = [d for d in args.dists.split(",") if d]
    args.systems = [s for s in args.systems.split(",") if s]
    for s in args.systems:
        if s not in SYSTEMS:
            p.error(f"unknown system {s!r}")
    if args.batches < 1 or args.reps < 1:
        p.error("--reps and --batches must be >= 1")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.only:
        rss_child(args)
        return {}
    import dlrmx.ops

    notes = []
    names = list(args.systems)
    if "fbgemm" in names:
        err = fbgemm_import_error()
        if err:
            names.remove("fbgemm")
            notes.append("FBGEMM columns skipped: fbgemm_gpu not importable (" + err + "). "
                         "Install it with: pip install fbgemm-gpu-cpu==1.8.0 (the `bench` extra; "
                         "1.8.0 is the build ABI-compatible with torch 2.13).")
            print("Note: " + notes[-1])
    if "torch" not in names:
        names.insert(0, "torch")  # the correctness reference
    if "dlrmx" not in names:
        names.insert(0, "dlrmx")
    T, R, D, B = args.tables, args.rows, args.dim, args.batch
    print("# dlrmx embedding-bag benchmark")
    print(f"command: {' '.join([os.path.basename(sys.executable)] + sys.argv)}")
    print(f"config: {T} tables x {R} rows x dim {D} fp32, batch {B}, ids/bag {args.ids_per_bag}, "
          f"ids {args.dists}, threads {args.threads}, reps {args.reps} x {args.batches} batches")
    fb_version = fbgemm_version() if "fbgemm" in names else "skipped"
    load_start = load_average()
    print(f"cpu: {cpu_model()}, {os.cpu_count()} logical CPUs; "
          f"dlrmx ISA {dlrmx.ops.isa_info()['active']}; torch {torch.__version__}; "
          f"fbgemm-gpu-cpu {fb_version}; load average at start: {load_start}")
    build = dlrmx_build()
    print(f"dlrmx build: {build}")
    t_start = time.perf_counter()

    # Ids: generated once, the same for every system and thread count.
    rng = np.random.default_rng(args.seed)
    id_sets = {}
    for dist in args.dists:
        samplers = [make_id_sampler(dist, R, rng) for _ in range(T)]
        for L in args.ids_per_bag:
            id_sets[(L, dist)] = [make_batch(samplers, B, L) for _ in range(max(args.batches, 2))]
    grad = torch.from_numpy(rng.standard_normal((B, T * D), dtype=np.float32))
    # Distinct (table, row) pairs per batch: the rows a training step must read-modify-write.
    unique_rows = {k: int(np.median([sum(int(ids.unique().numel()) for ids, _ in b.per_table)
                                     for b in v[: args.batches]]))
                   for k, v in id_sets.items()}

    # The physical limit, before the tables exist (keeps the peak lower).
    gather, gather_detail = {}, {}
    n_ids = B * T * max(args.ids_per_bag)
    for n in args.threads:
        torch.set_num_threads(n)
        g = measure_gather_limit(T * R, D, n_ids, args.gather_reps, rng)
        gather[str(n)] = g["limit"]
        gather_detail[str(n)] = g
        print(f"gather limit, {n} thread(s): {g['limit'] / 1e6:.1f}M rows/s "
              f"({g['limit'] * D * 4 / 1e9:.2f} GB/s of rows; full output {g['full'] / 1e6:.1f}M, "
              f"chunked {g['chunked'] / 1e6:.1f}M rows/s)")

    # Same initial weights everywhere (the reference DLRM's init: uniform(+-sqrt(1/rows))).
    bound = (1.0 / R) ** 0.5
    gen = torch.Generator().manual_seed(args.seed)
    weights = [torch.empty(R, D).uniform_(-bound, bound, generator=gen) for _ in range(T)]
    systems = {}
    for n in names:
        t0 = time.perf_counter()
        systems[n] = SYSTEM_CLASSES[n](T, R, D, weights)
        print(f"built {n} in {time.perf_counter() - t0:.1f} s; "
              f"process RSS {current_rss_mib():.0f} MiB")
    del weights  # torch's modules keep their own references

    check = None
    if not args.no_check:
        torch.set_num_threads(args.threads[0])
        key = (max(args.ids_per_bag), args.dists[-1])
        check = check_correctness(systems, id_sets[key], grad)
        print(f"correctness gate passed (ids/bag {key[0]}, {key[1]}): "
              "max |out - torch| / max |torch| = "
              + ", ".join(f"{stage}: " + ", ".join(f"{k} {v:.1e}" for k, v in errs.items())
                          for stage, errs in check.items()))

    configs = []
    for n in args.threads:
        torch.set_num_threads(n)
        for L in args.ids_per_bag:
            for dist in args.dists:
                t0 = time.perf_counter()
                batches = id_sets[(L, dist)][: args.batches]
                r = bench_config(systems, batches, grad, args.reps)
                c = {"threads": n, "ids_per_bag": L, "dist": dist,
                     "lookups_per_batch": batches[0].num_lookups,
                     "unique_rows_per_batch": unique_rows[(L, dist)], **r}
                configs.append(c)
                ms = lambda ph: " ".join(f"{k} {v:.2f}" for k, v in r[ph]["ms"].items())  # noqa: E731
                print(f"[{time.perf_counter() - t0:5.1f} s] threads {n}, ids/bag {L:2d}, {dist:9s}: "
                      f"forward ms {ms('forward')} | train ms {ms('train')}", flush=True)

    parent_peak = peak_rss_mib()
    del systems
    rss = None if args.no_rss else measure_rss(args, names)
    res = {
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
        "config": {"tables": T, "rows": R, "dim": D, "batch": B, "reps": args.reps,
                   "batches": args.batches, "lr": LR, "seed": args.seed},
        "env": {"cpu": cpu_model(), "dlrmx_build": build, "torch": torch.__version__,
                "isa": dlrmx.ops.isa_info()["active"], "fbgemm": fb_version,
                "load_average_start": load_start, "load_average_end": load_average()},
        "systems": names,
        "gather_limit_rows_per_s": gather,
        "gather_detail_rows_per_s": gather_detail,
        "correctness": check,
        "configs": configs,
        "targets": evaluate_targets(configs) if (T, R, D, B) == (8, 1_000_000, 64, 2048) else [],
        "rss": rss,
        "parent_peak_rss_mib": parent_peak,
        "notes": notes,
        "wall_s": time.perf_counter() - t_start,
    }
    print_report(res)
    print(f"\nwall time {res['wall_s']:.0f} s; load average at end: {load_average()}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
        print(f"saved {args.json}")
    return res


if __name__ == "__main__":
    main()
