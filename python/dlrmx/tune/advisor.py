"""`python -m dlrmx.tune init`: the advisor. From the model, the data, the optimizer family and
the time budget it writes a parameterized experiment in SigOpt's schema, with ranges from what
is known to work for DLRM, so that few trials are needed (the idea of Intel's Smart
Democratization Advisor; its DLRM space, ../shared/ANCHORS.md: two learning rates, warm-up
2000-4500, decay start 4501-9000, decay steps 5000-15000, embedding size {16, 64, 128}, preset
MLP shapes; metrics training time and AUC).

Where the ranges come from:
- SGD: the reference DLRM's Kaggle recipe, lr 0.1 at batch 128, and its Terabyte/MLPerf recipe,
  lr 1.0 at batch 2048 (dlrm_s_pytorch.py's README and MLPerf's reference): lr grows about as
  batch^0.83 between the two; the range is a decade below to 3x above that line. Split-SGD is
  SGD's arithmetic on exact fp32 weights: the same range.
- LAMB (You et al. 2020): its steps are scaled by each layer's weight norm (the trust ratio), so
  the rule of thumb is a rate about a tenth of SGD's at the same batch: the SGD range / 10.
- Row-wise Adagrad and Adagrad: the per-row step lr / sqrt(sum g^2) does not depend on the
  gradient's scale; our sources give no DLRM recipe, so the range is wide: 0.005-0.5.
- The schedule: MLPerf v1.0's (warm-up 5600, decay from 6900 over 11100 of ~12,800 steps, power 2)
  and SDA's ranges, as fractions of a trial's steps: warm-up in [0, 35%], decay start in
  (35%, 70%] (never before warm-up ends), decay steps in [30%, 100%].
- Embedding dimension {16, 32, 64} and the MLP presets below: the reference's Kaggle shapes and
  two narrower ones, as SDA's presets, scaled to what a trial of this budget can train.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

from dlrmx.tune.experiment import parse

OPTIMIZERS = ("sgd", "split_sgd", "lamb", "rowwise_adagrad", "adagrad")
MLP_PRESETS = {
    "reference": {"bottom": "13-512-256", "top": "512-256-1"},  # the reference's Kaggle MLPs
    "medium": {"bottom": "13-128-64", "top": "256-64-1"},
    "small": {"bottom": "13-64", "top": "64-1"},
}


def lr_range(optimizer: str, batch: int) -> tuple[float, float]:
    if optimizer in ("sgd", "split_sgd", "lamb"):
        center = 0.1 * (batch / 128) ** (math.log(10) / math.log(16))  # 0.1 @128, 1.0 @2048
        lo, hi = center / 10, center * 3
        return (lo / 10, hi / 10) if optimizer == "lamb" else (lo, hi)
    return 0.005, 0.5


def schedule_parameters(steps: int, tag: str = "") -> list[dict[str, Any]]:
    suffix = f"__{tag}" if tag else ""
    warm_hi = max(1, int(0.35 * steps))
    return [
        {"name": "lr_num_warmup_steps" + suffix, "type": "int", "bounds": {"min": 0, "max": warm_hi}},
        {"name": "lr_decay_start_step" + suffix, "type": "int",
         "bounds": {"min": warm_hi + 1, "max": max(warm_hi + 2, int(0.7 * steps))}},
        {"name": "lr_num_decay_steps" + suffix, "type": "int",
         "bounds": {"min": max(1, int(0.3 * steps)), "max": max(2, steps)}},
    ]


def advise(*, name: str, optimizers: list[str], steps: int, batch: int, train: dict[str, Any],
           trials: int, parallel: int, auc_target: float | None, backend: str,
           metrics: str = "auc,train_time", pruning: str = "median", seed: int = 0,
           tune_dim: bool = True, tune_mlp: bool = True, trial_timeout: float = 600.0) -> dict[str, Any]:
    """The experiment (a dict in SigOpt's schema plus the `dlrmx` block)."""
    for o in optimizers:
        if o not in OPTIMIZERS:
            raise ValueError(f"--optimizer {o!r}: choose from {', '.join(OPTIMIZERS)}")
    params: list[dict[str, Any]] = []
    conditionals = []
    if len(optimizers) > 1:  # the choice is the conditional, each optimizer its own lr
        conditionals = [{"name": "optimizer", "values": list(optimizers)}]
        for o in optimizers:
            lo, hi = lr_range(o, batch)
            params.append({"name": f"learning_rate__{o}", "type": "double",
                           "bounds": {"min": _round(lo), "max": _round(hi)},
                           "transformation": "log", "conditions": {"optimizer": [o]}})
    else:
        lo, hi = lr_range(optimizers[0], batch)
        params.append({"name": "learning_rate", "type": "double",
                       "bounds": {"min": _round(lo), "max": _round(hi)}, "transformation": "log"})
    params += schedule_parameters(steps)
    if tune_dim:
        params.append({"name": "arch_sparse_feature_size", "type": "categorical",
                       "categorical_values": ["16", "32", "64"]})
    if tune_mlp:
        params.append({"name": "mlp", "type": "categorical", "categorical_values": list(MLP_PRESETS)})
    wanted = [m.strip() for m in metrics.split(",") if m.strip()]
    metric_list = []
    for m in wanted:
        entry: dict[str, Any] = {"name": m, "objective": "maximize" if m == "auc" else "minimize",
                                 "strategy": "optimize"}
        if m == "auc" and auc_target is not None and len(wanted) > 1:
            entry["threshold"] = float(auc_target)
        metric_list.append(entry)
    fixed = {"mini_batch_size": batch, "num_batches": steps, "nepochs": 1,
             "test_freq": max(1, steps // 5), "print_freq": max(1, steps // 5),
             "precision": "fp32", "gemm_library": "mkl", "checkpoint_freq": 0,
             "progress": False, "plots": False, "memory_check": False,
             "optimizer": optimizers[0], **train}
    exp = {
        "name": name,
        "type": "offline",
        "parameters": params,
        **({"conditionals": conditionals} if conditionals else {}),
        "metrics": metric_list,
        "observation_budget": int(trials),
        "parallel_bandwidth": int(parallel),
        "metadata": {"written_by": "python -m dlrmx.tune init",
                     "written_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                     "ranges": "dlrmx/tune/advisor.py (sources in its docstring)"},
        "dlrmx": {"backend": backend, "seed": seed, "train": fixed,
                  "mlp_presets": MLP_PRESETS if tune_mlp else {},
                  "trial_timeout": float(trial_timeout), "threads": 0,
                  "pruning": {"rule": pruning, "startup_trials": 3, "warmup_evals": 1,
                              "percentile": 25.0, "reduction_factor": 3}},
    }
    parse(exp, "advised experiment")  # what the advisor writes always validates
    return exp


def _round(x: float) -> float:
    return float(f"{x:.3g}")


def measure_steps_per_second(train: dict[str, Any], batch: int, steps: int = 30) -> float:
    """Training steps per second of the default shape here (one short run, 1 thread per trial
    slot's worth of cores), to turn a time budget into steps per trial."""
    import tempfile

    from dlrmx.train import TrainConfig, run

    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig.from_dict({"mini_batch_size": batch, "precision": "fp32",
                                     "gemm_library": "mkl", "checkpoint_freq": 0,
                                     "progress": False, "plots": False, "test_freq": -1,
                                     "eval_samples": 1024, "memory_check": False, **train,
                                     "num_batches": steps, "run_dir": str(Path(tmp) / "probe")})
        res = run(cfg)
    return res.steps / max(res.train_seconds, 1e-9)


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
