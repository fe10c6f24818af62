"""An up-front estimate of a run's memory (tables, optimizer state, MLPs, one batch's
activations), compared with what this machine or container can give, so that a run that cannot
fit is refused with the numbers instead of being killed halfway."""

from __future__ import annotations

import os
from pathlib import Path

from dlrmx.data.multihot import MultiHot
from dlrmx.models.interaction import interaction_width
from dlrmx.train.config import TrainConfig

GiB = 2**30
# State bytes per table element, by sparse optimizer (row-wise Adagrad adds 4 bytes per row).
_STATE_PER_ELEMENT = {"adagrad": 4.0}


def estimate_bytes(cfg: TrainConfig, table_sizes: list[int], sparse_optimizer: str,
                   multi_hot_sizes: list[int] | None = None) -> dict[str, int]:
    d = cfg.arch_sparse_feature_size
    rows = sum(table_sizes)
    tables = rows * d * 4  # fp32, or bf16 + int16 trail: 4 bytes per element either way
    state = int(rows * d * _STATE_PER_ELEMENT.get(sparse_optimizer, 0.0))
    if sparse_optimizer == "rowwise_adagrad":
        state += rows * 4
    bot, top = cfg.bottom_sizes, cfg.top_sizes
    n_vec = len(table_sizes) + 1
    inter = interaction_width(cfg.arch_interaction_op, d, len(table_sizes))
    widths = bot + [n_vec * d, inter] + top
    mlp_params = sum(a * b + b for a, b in zip(bot, bot[1:])) + \
        sum(a * b + b for a, b in zip([inter] + top, top))
    if cfg.arch_interaction_op == "dcn":  # per cross layer: in -> rank -> in, a bias
        mlp_params += cfg.dcn_num_layers * (2 * inter * cfg.dcn_low_rank_dim + inter)
        widths += [cfg.dcn_low_rank_dim, inter] * cfg.dcn_num_layers
    ids = sum(multi_hot_sizes) if multi_hot_sizes else len(table_sizes)
    lookup = MultiHot.nbytes(table_sizes, multi_hot_sizes) if multi_hot_sizes else 0
    # Forward keeps each layer's output for backward; backward holds about as much again.
    per_sample = 4 * (2 * sum(widths) + 13 + 2 * ids)
    batch = max(cfg.mini_batch_size, cfg.eval_batch_size) * per_sample * 2
    # --hot-cache-budget: the replica (at most the budget), a slot map of 4 bytes per row, and
    # a window of batches regrouped by the scheduler
    window = cfg.hot_window_batches * cfg.mini_batch_size * 4 * (15 + 2 * ids)
    cache = cfg.hot_budget_bytes + 4 * rows + window if cfg.hot_cache_budget else 0
    return {"tables": tables, "optimizer_state": state, "mlp": mlp_params * 4 * 4,
            "multi_hot_lookup": lookup, "batch": batch, "hot_cache": cache,
            "total": tables + state + mlp_params * 16 + lookup + batch + cache}


def available_bytes() -> int | None:
    """MemAvailable, or the cgroup limit minus usage when that is smaller; None if unknown."""
    avail = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
    except OSError:
        pass
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit = Path(limit_file).read_text().strip()
            if limit.isdigit() and int(limit) < 2**60:
                room = int(limit) - int(Path(usage_file).read_text().strip())
                avail = room if avail is None else min(avail, room)
            break
        except (OSError, ValueError):
            continue
    if avail is None and hasattr(os, "sysconf"):
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):
            pass
    return avail


def check_fits(cfg: TrainConfig, table_sizes: list[int], sparse_optimizer: str,
               multi_hot_sizes: list[int] | None = None) -> dict[str, int]:
    est = estimate_bytes(cfg, table_sizes, sparse_optimizer, multi_hot_sizes)
    avail = available_bytes()
    if cfg.memory_check and avail is not None and est["total"] > avail:
        parts = ", ".join(f"{k.replace('_', ' ')} {v / GiB:.2f}" for k, v in est.items()
                          if k != "total")
        raise ValueError(
            f"this run needs about {est['total'] / GiB:.1f} GiB ({parts} GiB) but "
            f"{avail / GiB:.1f} GiB is available: lower --mini-batch-size / "
            "--test-mini-batch-size, cap the tables (--max-ind-range), or pass "
            "--no-memory-check to try anyway")
    return est
