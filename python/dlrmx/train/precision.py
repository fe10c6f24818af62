"""`--precision auto`: bf16 where this CPU computes bf16 dot products natively and a short
measurement at the model's own MLP shapes finds bf16 faster; fp32 otherwise.

Why measure: bf16 GEMMs ran 2.2-3x faster than fp32 on an AMD Zen CPU with AVX512_BF16 but 0.55x
on an Intel CPU without AMX (bench/RESULTS.md), and the CPU behind a machine changes from one day
to the next. The rule (`choose`) is a pure function of the CPU flags and the measurement, so it
is tested with the measurement injected.
"""

from __future__ import annotations

import statistics
import time
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from dlrmx.models import mlp

MARGIN = 0.05  # bf16 must win by more than this: a tie keeps fp32's exact arithmetic
MEASURE_ROWS = 1024  # enough rows for the GEMMs' steady rate, short enough for start-up


def native_bf16() -> tuple[bool, str]:
    """Whether this CPU has bf16 dot products (AVX512_BF16 or AMX) that oneDNN can use."""
    flags = [name for name, has in (("AMX", torch.cpu._is_amx_tile_supported()),
                                    ("AVX512_BF16", torch.cpu._is_avx512_bf16_supported())) if has]
    if not flags:
        return False, "this CPU has no native bf16 dot products (AVX512_BF16 or AMX)"
    if not mlp.onednn_runs(torch.bfloat16):
        return False, f"oneDNN has no bf16 matmul here (despite {'/'.join(flags)})"
    return True, "/".join(flags)


def choose(native: bool, why_not: str, times: dict[str, float] | None) -> tuple[str, str]:
    """(precision, reason) from the CPU's bf16 support and the measured seconds per MLP step
    ({"fp32": s, "bf16": s})."""
    if not native:
        return "fp32", why_not
    assert times is not None
    fp32, bf16 = times["fp32"], times["bf16"]
    cmp = f"bf16 {bf16 * 1e3:.1f} ms vs fp32 {fp32 * 1e3:.1f} ms per MLP step"
    if bf16 < (1 - MARGIN) * fp32:
        return "bf16", f"{why_not}, {cmp} ({fp32 / bf16:.2f}x)"
    return "fp32", f"{why_not}, but {cmp}: bf16 is not faster here"


def _mlp_stack(widths: Sequence[Sequence[int]]) -> nn.Module:
    return nn.ModuleList([mlp.make_mlp(list(w), last_relu=False) for w in widths])


def measure(widths: Sequence[Sequence[int]], rows: int, autocast: bool, reps: int = 3
            ) -> dict[str, float]:
    """Median seconds of a forward + backward of MLPs with these layer widths, fp32 and bf16
    (bf16 weights, or fp32 weights under autocast as LAMB/Adagrad run), each with its GEMM
    libraries planned as the run will."""
    out = {}
    for name in ("fp32", "bf16"):
        stack = _mlp_stack(widths)
        dtype = torch.bfloat16 if name == "bf16" and not autocast else torch.float32
        stack.to(dtype)
        mlp.plan_gemms(stack, rows)
        xs = [torch.randn(rows, w[0]).to(dtype) for w in widths]
        amp = name == "bf16" and autocast

        def step() -> None:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                loss = sum(F.relu(m(x)).float().sum() for m, x in zip(stack, xs))
            loss.backward()

        out[name] = median_seconds(step, reps)
    return out


def median_seconds(fn, reps: int = 5, warmup: bool = True) -> float:
    """Median seconds of fn() over `reps` calls, after one untimed call unless warmup=False."""
    if warmup:
        fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def resolve(requested: str, widths: Sequence[Sequence[int]], batch: int, autocast: bool
            ) -> dict:
    """The precision to run in, with what was measured and why (written to the run dir)."""
    if requested != "auto":
        return {"requested": requested, "precision": requested, "reason": "--precision given"}
    native, why = native_bf16()
    rows = min(batch, MEASURE_ROWS)
    times = measure(widths, rows, autocast) if native else None
    precision, reason = choose(native, why, times)
    rec = {"requested": "auto", "precision": precision, "reason": reason}
    if times is not None:
        rec["measured_ms"] = {k: round(v * 1e3, 3) for k, v in times.items()}
        rec["measured_rows"] = rows
    return rec
