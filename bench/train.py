"""End-to-end DLRM training throughput: dlrmx vs a plain-PyTorch DLRM that mirrors the reference
(bench/dlrm_reference.py: nn.EmbeddingBag(sparse=True) + torch.optim.SGD), side by side in one
process, same pre-generated synthetic batches, same thread count, interleaved repetitions.

Every run prints the CPU, this machine's GEMM rates (fp32, bf16) and row-gather rate measured
in the same run, each system's GEMM FLOPs and embedding bytes per step, and its fraction of the
roofline (FLOPs / GEMM rate + bytes / gather rate). dlrmx runs fp32 and bf16; "default" is what
--precision auto picks here.

  python bench/train.py --config kaggle --threads 1 2 --torchrec   # full Kaggle tables, batch 2048
  python bench/train.py --config dlrmv2 --threads 2 --torchrec     # MLPerf DLRMv2 vs TorchRec DLRM_DCN
  python bench/train.py --config terabyte --threads 1 2            # Terabyte arch, scaled tables
  python bench/train.py --auc --steps 600 [--bf16]                 # AUC parity on the same data/init
  python bench/train.py --config kaggle --profile [--bf16]         # where dlrmx's step time goes
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dlrm_reference import ReferenceDLRM, split_batch  # noqa: E402

import dlrmx.nn as dnn  # noqa: E402
from dlrmx.data.loader import make_batch  # noqa: E402
from dlrmx.data.synthetic import SyntheticCriteo, table_sizes  # noqa: E402
from dlrmx.models import DLRM, gemm_widths  # noqa: E402
from dlrmx.optim import SplitSGD  # noqa: E402
from dlrmx.train.metrics import roc_auc  # noqa: E402
from dlrmx.data.multihot import MLPERF_MULTI_HOT_SIZES, MultiHot  # noqa: E402
from dlrmx.models.mlp import plan_gemms  # noqa: E402
from dlrmx.train import precision  # noqa: E402
import roofline  # noqa: E402

CONFIGS = {
    # the reference's Kaggle recipe, full Kaggle cardinalities (33.8M rows)
    "kaggle": dict(preset="kaggle", scale=1.0, dim=16, bot=[13, 512, 256, 64, 16], top=[512, 256, 1],
                   batch=2048, lr=0.1),
    # the MLPerf / Terabyte architecture, tables scaled to fit this machine's memory
    "terabyte": dict(preset="terabyte", scale=0.01, dim=128, bot=[13, 512, 256, 128],
                     top=[1024, 1024, 512, 256, 1], batch=2048, lr=1.0),
    # MLPerf DLRMv2 (dlrmx --preset mlperf-dlrmv2): DCN, multi-hot, row-wise Adagrad tables and
    # Adagrad MLPs; tables scaled to 1/400 of MLPerf's (0.24 GiB)
    "dlrmv2": dict(preset="mlperf", scale=1 / 400, dim=128, bot=[13, 512, 256, 128],
                   top=[1024, 1024, 512, 256, 1], batch=2048, lr=0.005, dcn=(3, 512),
                   multi_hot=MLPERF_MULTI_HOT_SIZES),
}


def make_models(c: dict, sizes: list[int], seed: int = 0):
    torch.manual_seed(seed)
    ours = DLRM(sizes, c["dim"], c["bot"], c["top"], sparse_optimizer=dnn.SGD(c["lr"]), seed=seed)
    ref = ReferenceDLRM(sizes, c["dim"], c["bot"], c["top"])
    ref.load_from_dlrmx(ours)
    return ours, torch.optim.SGD(ours.dense_parameters(), lr=c["lr"]), ref, torch.optim.SGD(ref.parameters(), lr=c["lr"])


def make_bf16(c: dict, sizes: list[int], tables=None, seed: int = 0):
    """dlrmx's --precision bf16 model: bf16 weights with int16 trails everywhere, no autocast."""
    m = DLRM(sizes, c["dim"], c["bot"], c["top"], sparse_optimizer=dnn.SplitSGD(c["lr"]), seed=seed,
             embedding_init=tables)
    return m, SplitSGD(m.dense_parameters(), lr=c["lr"])  # converts the MLP weights to bf16


def make_dlrmv2(c: dict, sizes: list[int], seed: int = 0):
    """dlrmx's DLRMv2 as `--preset mlperf-dlrmv2` builds it (fp32 weights; bf16 runs it under
    autocast, as the trainer does with Adagrad)."""
    m = DLRM(sizes, c["dim"], c["bot"], c["top"], interaction="dcn", dcn_num_layers=c["dcn"][0],
             dcn_low_rank_dim=c["dcn"][1], sparse_optimizer=dnn.RowWiseAdagrad(c["lr"]), seed=seed)
    return m, torch.optim.Adagrad(m.dense_parameters(), lr=c["lr"])


def batches(gen: SyntheticCriteo, split: str, n: int, b: int, multi_hot: MultiHot | None = None):
    out = []
    for i in range(n):
        sb = gen.batch(split, i, b)
        if multi_hot is not None:
            bt = make_batch(sb.dense, multi_hot.expand(sb.sparse), sb.label, sb.prob,
                            bag_sizes=multi_hot.sizes)
            out.append((bt, None, None))
            continue
        bt = make_batch(sb.dense, sb.sparse, sb.label, sb.prob)
        ids, offs = split_batch(torch.from_numpy(sb.sparse))
        out.append((bt, ids, offs))
    return out


def step_dlrmx(model, opt, bt, _ids, _offs, autocast=False):
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        logits = model(bt.dense, bt.values, bt.offsets)
    # .float(): a no-op in fp32; the loss of the bf16 model's logits in fp32
    loss = F.binary_cross_entropy_with_logits(logits.float(), bt.label)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss


def step_autocast(model, opt, bt, ids, offs):
    return step_dlrmx(model, opt, bt, ids, offs, autocast=True)


def step_ref(model, opt, bt, ids, offs):
    loss = torch.nn.BCELoss()(model(bt.dense, ids, offs).squeeze(1), bt.label)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss


def torchrec_system(c: dict, sizes: list[int], data):
    """TorchRec 1.8 (fused EBC, FBGEMM CPU kernels): DLRM, or DLRM_DCN for DLRMv2."""
    from torchrec_dlrm import make_torchrec_dlrm, make_torchrec_dlrm_dcn, to_kjt
    if "dcn" in c:
        tr, tr_opt = make_torchrec_dlrm_dcn(sizes, c["dim"], c["bot"], c["top"], c["lr"], c["dcn"])
    else:
        tr, tr_opt = make_torchrec_dlrm(sizes, c["dim"], c["bot"], c["top"], c["lr"])
    kjts = {id(bt): to_kjt(bt.values, len(sizes), bt.size, c.get("multi_hot")) for bt, _, _ in data}

    def step_torchrec(model, opt, bt, _ids, _offs):
        logits = model(bt.dense, kjts[id(bt)]).squeeze(1)
        loss = F.binary_cross_entropy_with_logits(logits, bt.label)
        opt.zero_grad(set_to_none=True)
        loss.backward()  # the fused EBC updates its rows here
        opt.step()
        return loss
    return tr, tr_opt, step_torchrec


def build_systems(args, c: dict, sizes: list[int], data) -> dict:
    """name -> (model, optimizer, step, precision of its GEMMs). dlrmx's columns get their GEMM
    libraries planned as the trainer plans them."""
    if "dcn" in c:
        m, o = make_dlrmv2(c, sizes)
        systems = {"dlrmx-fp32": (m, o, step_dlrmx, torch.float32),
                   "dlrmx-bf16": (m, o, step_autocast, torch.bfloat16)}
        plan_gemms(m, c["batch"])
    else:
        ours, o_opt, ref, r_opt = make_models(c, sizes)
        b16, b16_opt = make_bf16(c, sizes, ours.embeddings.fp32_weights())
        plan_gemms(ours, c["batch"])
        plan_gemms(b16, c["batch"])
        systems = {"reference": (ref, r_opt, step_ref, torch.float32),
                   "dlrmx-fp32": (ours, o_opt, step_dlrmx, torch.float32),
                   "dlrmx-bf16": (b16, b16_opt, step_dlrmx, torch.bfloat16)}
    if args.torchrec:
        systems["torchrec"] = (*torchrec_system(c, sizes, data), torch.float32)
    return systems


def widths_of(c: dict, sizes: list[int]) -> list[list[int]]:
    """The config's chains of GEMM widths."""
    dcn = c.get("dcn", (0, 0))
    return gemm_widths(c["bot"], c["top"], "dcn" if "dcn" in c else "dot", c["dim"], len(sizes),
                       *dcn)


def roofline_seconds(c: dict, sizes: list[int], dtype: torch.dtype, rates: dict, name: str) -> tuple[float, float, float]:
    """(GEMM FLOPs, embedding bytes, roofline seconds) of one step of this system."""
    flops = roofline.mlp_flops(widths_of(c, sizes), c["batch"])
    ids = c["batch"] * (sum(c["multi_hot"]) if "multi_hot" in c else len(sizes))
    bf16_tables = name == "dlrmx-bf16" and "dcn" not in c  # split-SGD tables read bf16 halves
    state = 4 if "dcn" in c else 0  # row-wise Adagrad: one fp32 per row
    nbytes = roofline.embedding_bytes(ids, c["dim"], 2 if bf16_tables else 4, 4, state)
    return flops, nbytes, flops / rates[dtype] + nbytes / rates["gather"]


def throughput(args) -> None:
    c = CONFIGS[args.config]
    sizes = table_sizes(c["preset"], c["scale"])
    multi_hot = MultiHot(sizes, c["multi_hot"]) if "multi_hot" in c else None
    data = batches(SyntheticCriteo(sizes, seed=0), "train", args.steps, c["batch"], multi_hot)
    print(f"# CPU: {roofline.cpu_line()}")
    print(f"# {args.config}: {sum(sizes):,} rows, d={c['dim']}, batch {c['batch']}, "
          f"{args.steps} steps per repetition, {args.reps} repetitions (median)")
    t0 = time.perf_counter()
    systems = build_systems(args, c, sizes, data)
    print(f"# models built in {time.perf_counter() - t0:.1f} s")
    widths = widths_of(c, sizes)
    for nt in args.threads:
        torch.set_num_threads(nt)
        auto = precision.resolve("auto", widths, c["batch"], autocast="dcn" in c)
        default = f"dlrmx-{auto['precision']}"
        rates = {torch.float32: roofline.gemm_rate(torch.float32),
                 torch.bfloat16: roofline.gemm_rate(torch.bfloat16),
                 "gather": roofline.gather_rate(c["dim"] * 4)}
        print(f"{args.config} threads={nt} machine: GEMM fp32 {rates[torch.float32] / 1e9:.0f} GF/s, "
              f"bf16 {rates[torch.bfloat16] / 1e9:.0f} GF/s, row gather {rates['gather'] / 1e9:.1f} GB/s; "
              f"--precision auto -> {auto['precision']} ({auto['reason']})")
        times: dict[str, list[float]] = {k: [] for k in systems}
        for name, (m, o, fn, _) in systems.items():
            for bt in data[: args.warmup]:
                fn(m, o, *bt)
        for _ in range(args.reps):  # interleaved: every system sees the same machine load
            for name, (m, o, fn, _) in systems.items():
                t = time.perf_counter()
                for bt in data:
                    fn(m, o, *bt)
                times[name].append((time.perf_counter() - t) / len(data))
        med = {k: statistics.median(v) for k, v in times.items()}
        for k, v in med.items():
            flops, nbytes, roof = roofline_seconds(c, sizes, systems[k][3], rates, k)
            print(f"{args.config} threads={nt} {k:10s}: {v * 1e3:8.1f} ms/step  "
                  f"{c['batch'] / v:9,.0f} samples/s  {flops / 1e9:.1f} GFLOP + {nbytes / 1e6:.0f} MB: "
                  f"roofline {roof * 1e3:.1f} ms = {roof / v:4.0%}  "
                  f"(reps: {', '.join(f'{x*1e3:.0f}' for x in times[k])} ms)")
        for base in ("reference", "torchrec"):
            if base in med:
                print(f"{args.config} threads={nt} speedup dlrmx default ({default}) / {base}: "
                      f"{med[base] / med[default]:.2f}x")


def auc_parity(args) -> None:
    c = dict(CONFIGS["kaggle"], scale=args.scale, batch=args.batch, lr=args.lr)
    sizes = table_sizes("kaggle", c["scale"])
    gen = SyntheticCriteo(sizes, seed=args.seed)
    torch.set_num_threads(args.threads[0])
    ours, o_opt, ref, r_opt = make_models(c, sizes, seed=args.seed)
    if args.bf16:  # compare dlrmx's bf16 path (same initial weights) with the fp32 reference
        ours, o_opt = make_bf16(c, sizes, ours.embeddings.fp32_weights(), args.seed)
    for i in range(args.steps):
        sb = gen.batch("train", i, c["batch"])
        bt = make_batch(sb.dense, sb.sparse, sb.label)
        ids, offs = split_batch(torch.from_numpy(sb.sparse))
        step_dlrmx(ours, o_opt, bt, None, None)
        step_ref(ref, r_opt, bt, ids, offs)
    ys, po, pr, pt = [], [], [], []
    with torch.no_grad():
        for bt, ids, offs in batches(gen, "test", 25, 8192):
            ys.append(bt.label.numpy())
            po.append(ours(bt.dense, bt.values, bt.offsets).float().numpy())
            pr.append(ref(bt.dense, ids, offs).squeeze(1).numpy())
            pt.append(bt.prob.numpy())
    y = np.concatenate(ys)
    a, b, o = roc_auc(y, np.concatenate(po)), roc_auc(y, np.concatenate(pr)), roc_auc(y, np.concatenate(pt))
    print(f"AUC after {args.steps} steps x {c['batch']} (kaggle arch, tables x{c['scale']}, lr {c['lr']}, "
          f"seed {args.seed}), {y.size:,} test samples: dlrmx {a:.4f}, reference {b:.4f}, "
          f"|diff| {abs(a - b):.4f}, oracle {o:.4f}")


def profile(args) -> None:
    c = CONFIGS[args.config]
    sizes = table_sizes(c["preset"], c["scale"])
    data = batches(SyntheticCriteo(sizes, seed=0), "train", 10, c["batch"])
    torch.set_num_threads(args.threads[0])
    ours, o_opt, _, _ = make_models(c, sizes)  # (reference unused here)
    for bt in data[:3]:
        step_dlrmx(ours, o_opt, *bt)
    fn = step_dlrmx
    if args.bf16:
        ours, o_opt = make_bf16(c, sizes)
        for bt in data[:3]:
            fn(ours, o_opt, *bt)
    with torch.profiler.profile() as prof:
        for bt in data:
            fn(ours, o_opt, *bt)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=18))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", choices=sorted(CONFIGS), default="kaggle")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--auc", action="store_true", help="AUC parity run instead of throughput")
    p.add_argument("--profile", action="store_true", help="torch.profiler table of a dlrmx step")
    p.add_argument("--bf16", action="store_true", help="--auc/--profile: dlrmx with --precision bf16")
    p.add_argument("--torchrec", action="store_true", help="also time TorchRec 1.8 (fused EBC, CPU)")
    p.add_argument("--scale", type=float, default=0.01)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--lr", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.auc:
        auc_parity(args)
    elif args.profile:
        profile(args)
    else:
        throughput(args)


if __name__ == "__main__":
    main()
