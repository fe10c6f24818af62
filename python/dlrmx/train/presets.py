"""`--preset mlperf-dlrmv2`: MLPerf Training's DLRMv2 (DCNv2 on multi-hot Criteo 1TB) as
`dlrmx.train` options. Flags given with the preset override it.

MLPerf's configuration (mlcommons/training, recommendation_v2/torchrec_dlrm, its README's
command line): embedding dim 128, bottom MLP 512-256-128, top MLP 1024-1024-512-256-1, DCN
interaction with 3 cross layers of rank 512, Adagrad at learning rate 0.005 (row-wise for the
tables, as its fused TorchRec tables), tables capped at 40M rows, multi-hot sizes 3,2,1,2,6,... (uniform), global batch
65,536, target AUC 0.80275. Its tables (about 98 GiB with Adagrad state) and batch rarely fit
one machine: `fit` scales the batch, then the tables, by halves until the estimate fits, and says so.
"""

from __future__ import annotations

import sys
from typing import Any

MLPERF_BATCH = 65536
PRESETS: dict[str, dict[str, Any]] = {
    "mlperf-dlrmv2": dict(
        arch_sparse_feature_size=128, arch_mlp_bot="13-512-256-128",
        arch_mlp_top="1024-1024-512-256-1", arch_interaction_op="dcn", dcn_num_layers=3,
        dcn_low_rank_dim=512, multi_hot_sizes="mlperf", multi_hot_distribution="uniform",
        optimizer="rowwise_adagrad", learning_rate=0.005, synthetic_preset="mlperf", synthetic_scale=1.0,
        mini_batch_size=MLPERF_BATCH, mlperf_auc_threshold=0.80275),
}
_SCALED = ("mini_batch_size", "synthetic_scale")  # what `fit` may lower unless given
MIN_BATCH = 2048
MIN_SCALE = 2.0 ** -12
FIT_FRACTION = 0.8  # of the available memory: leave room for the OS and the page cache


def expand(values: dict[str, Any]) -> dict[str, Any]:
    """The preset's options under the ones given; records which of the scalable ones were
    given (`fit` leaves those alone)."""
    name = values.get("preset") or ""
    if not name:
        return values
    if name not in PRESETS:
        raise ValueError(f"--preset must be one of {sorted(PRESETS)}, got {name!r}")
    fixed = [k for k in _SCALED if k in values]
    return {**PRESETS[name], **values, "preset_fixed": ",".join(fixed)}


def fit(cfg, estimate, available: int | None) -> list[str]:
    """Halve the batch (down to 2048), then the table scale, until `estimate(cfg)` bytes fit
    FIT_FRACTION of `available`. Returns the notes to print."""
    if not cfg.preset or available is None:
        return []
    fixed = set(filter(None, cfg.preset_fixed.split(",")))
    budget = FIT_FRACTION * available
    start = (cfg.mini_batch_size, cfg.synthetic_scale)
    while estimate(cfg) > budget:
        if "mini_batch_size" not in fixed and cfg.mini_batch_size > MIN_BATCH:
            cfg.mini_batch_size //= 2
        elif ("synthetic_scale" not in fixed and cfg.data_generation == "synthetic"
              and cfg.synthetic_scale > MIN_SCALE):
            cfg.synthetic_scale /= 2
        else:
            break  # the memory check then refuses the run with the numbers
    notes = []
    if cfg.mini_batch_size != start[0]:
        notes.append(f"batch {cfg.mini_batch_size} instead of MLPerf's {start[0]}")
    if cfg.synthetic_scale != start[1]:
        notes.append(f"tables scaled to {cfg.synthetic_scale:g} of MLPerf's rows")
    if notes:
        msg = (f"note: --preset {cfg.preset}: {' and '.join(notes)}, to fit "
               f"{available / 2**30:.1f} GiB of memory (give --mini-batch-size / "
               "--synthetic-scale to choose)")
        print(msg, file=sys.stderr)
        return [msg]
    return []
