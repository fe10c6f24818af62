"""This machine's limits for a DLRM training step, measured in the benchmark's own run: the CPU
(model, family, bf16/AMX flags), the GEMM rate per precision (the faster of torch's default and
oneDNN on a large GEMM), and the random-row gather rate (huge pages); the step's GEMM FLOPs and embedding
bytes; and the roofline time = FLOPs / GEMM rate + bytes / gather rate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from dlrmx.models import mlp
from dlrmx.train.precision import median_seconds
from dlrmx.nn.tables import new_table


def cpu_line() -> str:
    cap = torch._C._cpu._get_cpu_capability()
    info = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            k, _, v = line.partition(":")
            info.setdefault(k.strip(), v.strip())
    except OSError:
        pass
    flags = [f for f in ("avx512_bf16", "amx_bf16", "avx512_vnni") if cap.get(f)]
    return (f"{cap.get('cpu_name', '?')} (family {info.get('cpu family', '?')} model "
            f"{info.get('model', '?')}), torch ISA {torch.backends.cpu.get_cpu_capability()}, "
            f"{'/'.join(flags) or 'no bf16 dot products'}, {torch.get_num_threads()} threads")


def gemm_rate(dtype: torch.dtype, m: int = 2048, k: int = 1024, n: int = 1024) -> float:
    """FLOP/s of the faster library on one large GEMM (this machine's practical GEMM peak)."""
    x, w = torch.randn(m, k).to(dtype), torch.randn(n, k).to(dtype)
    t = median_seconds(lambda: torch.mm(x, w.t()))
    if mlp.onednn_runs(dtype):
        t = min(t, median_seconds(lambda: mlp._onednn(x, w, None, False)))
    return 2 * m * k * n / t


def gather_rate(row_bytes: int, table_bytes: int = 1 << 29, rows: int = 1 << 20) -> float:
    """Bytes/s of gathering random rows (row_bytes each) from a table_bytes table on huge pages
    (as dlrmx's tables are: without them every row also misses the TLB)."""
    dim = row_bytes // 4
    table = new_table((table_bytes // row_bytes, dim))
    table.uniform_()
    idx = torch.randint(0, table.shape[0], (rows,))
    out = torch.empty(rows, dim)
    t = median_seconds(lambda: torch.index_select(table, 0, idx, out=out))
    return rows * row_bytes / t


def mlp_flops(widths: Sequence[Sequence[int]], batch: int) -> int:
    """Forward + input-gradient + weight-gradient GEMM FLOPs of chains of layer widths
    (dlrmx.models.gemm_widths)."""
    return 3 * 2 * batch * sum(a * b for w in widths for a, b in zip(w, w[1:]))


def embedding_bytes(ids: int, dim: int, fwd_elem: int, update_elem: int, state_per_row: int) -> int:
    """Bytes a step moves through the tables: the forward gathers every looked-up row, the
    fused update reads and writes each again (its stored bytes, e.g. 4 for fp32 or bf16+trail),
    plus row state read and written."""
    return ids * (dim * fwd_elem + 2 * dim * update_elem + 2 * state_per_row)
