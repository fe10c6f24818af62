"""--hot-cache-budget in the trainer: where popularity comes from, the hot set chosen for the
budget, its report and plot in the run dir, and the cache and scheduler around the model and
the data. A resumed run takes its hot rows from the checkpoint, so it trains exactly as before."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dlrmx.cache import CachedEmbeddingBagCollection, HotColdSource, HotMap
from dlrmx.data.loader import BatchSource, FileSource
from dlrmx.popularity import coverage_curve, plot_curve, row_bytes, select
from dlrmx.popularity.hotset import HotSet
from dlrmx.popularity.profile import from_dictionaries, profile
from dlrmx.train.config import TrainConfig

CURVE_POINTS = 8
CURVE_BATCHES = 16  # profiled batches whose samples give the hot-sample fraction


def hot_rows(cfg: TrainConfig, source: BatchSource, per_epoch: int, optimizer: str,
             state: dict[str, Any] | None, run_dir: Path) -> list[np.ndarray] | None:
    """The hot rows of each table (None without --hot-cache-budget); writes hotset.json (and
    hotset.png) and prints one summary line."""
    if not cfg.hot_cache_budget:
        return None
    if state is not None and "hot_rows" in state:
        return [np.asarray(r, dtype=np.int64) for r in state["hot_rows"]]
    budget, sizes = cfg.hot_budget_bytes, list(source.table_sizes)
    cost = [row_bytes(cfg.arch_sparse_feature_size, optimizer)] * len(sizes)
    pop = from_dictionaries(source.dir) if isinstance(source, FileSource) else None
    if pop is None:
        pop = profile(source, cfg.mini_batch_size, per_epoch, cfg.profile_fraction,
                      cfg.numpy_rand_seed, track=[budget // c for c in cost])
    chosen = select(pop.counts, cost, budget, pop.totals)
    sample = [source.get("train", i, cfg.mini_batch_size, 0)
              for i in range(min(CURVE_BATCHES, per_epoch))]
    frac = _hot_samples(chosen, sizes, sample)
    report = {"budget": budget, "bytes_used": chosen.bytes_used, "row_bytes": cost,
              "popularity": pop.source, "prefix_ordered": pop.prefix_ordered, "notes": pop.notes,
              "lookup_coverage": chosen.total_coverage, "hot_sample_fraction": frac,
              "tables": [{"rows": int(n), "hot_rows": int(r.size), "coverage": c}
                         for n, r, c in zip(sizes, chosen.rows, chosen.coverage)],
              "curve": _curve(pop, cost, budget, sizes, sample)}
    (run_dir / "hotset.json").write_text(json.dumps(report, indent=1))
    if cfg.plots:
        plot_curve(report["curve"], run_dir / "hotset.png")
    print(f"hot set: {sum(r.size for r in chosen.rows):,} rows in {chosen.bytes_used:,} of "
          f"{budget:,} bytes ({pop.source}): {chosen.total_coverage:.1%} of lookups, "
          f"{frac:.1%} of samples all hot; on --hot-device {cfg.hot_tier}, --hot-schedule "
          f"{cfg.hot_schedule} (report: {run_dir / 'hotset.json'})")
    return chosen.rows


def _hot_samples(chosen: HotSet, sizes: list[int], batches) -> float:
    hm = HotMap(chosen.rows, sizes)
    flags = [hm.classify(b.values, b.offsets, b.size) for b in batches]
    return float(np.concatenate(flags).mean()) if flags else 0.0


def _curve(pop, cost: list[int], budget: int, sizes: list[int], sample) -> list[dict]:
    """Coverage and hot-sample fraction from one row to every looked-up row, and at the budget."""
    full = sum(int(np.count_nonzero(c[1] if isinstance(c, tuple) else c)) * b
               for c, b in zip(pop.counts, cost))
    budgets = sorted({budget, *np.geomspace(min(cost), max(full, min(cost)), CURVE_POINTS)
                      .astype(np.int64).tolist()})
    curve = coverage_curve(pop.counts, cost, budgets, totals=pop.totals)
    for point in curve:
        point["hot_samples"] = _hot_samples(select(pop.counts, cost, point["budget"], pop.totals),
                                            sizes, sample)
    return curve


def cached_collection(cfg: TrainConfig, rows: list[np.ndarray] | None):
    """The embedding collection class for the DLRM: cached when there are hot rows."""
    if rows is None:
        return None
    return functools.partial(CachedEmbeddingBagCollection, hot_rows=rows, hot_device=cfg.hot_tier,
                             output_device=cfg.device)


def scheduled(cfg: TrainConfig, source: BatchSource, model, per_epoch: int) -> BatchSource:
    """The source with its train batches regrouped hot and cold (the model's hot map)."""
    return HotColdSource(source, model.embeddings.hot, per_epoch, cfg.hot_schedule,
                         cfg.hot_window_batches, cfg.hot_switch_batches)


def checkpoint_fields(model) -> dict[str, Any]:
    """What a checkpoint keeps of the cache: the hot rows (resume uses them, not a new profile)."""
    emb = model.embeddings
    if not isinstance(emb, CachedEmbeddingBagCollection):
        return {}
    return {"hot_rows": [torch.from_numpy(r) for r in emb.hot.rows]}


def summary(model, source: BatchSource) -> dict[str, Any]:
    """The cache's counters for summary.json."""
    emb = model.embeddings
    if not isinstance(emb, CachedEmbeddingBagCollection):
        return {}
    out: dict[str, Any] = {**emb.stats, "tier_bytes": emb.tier_bytes}
    if isinstance(source, HotColdSource):
        out["scheduled_hot_fraction"] = source.hot_fraction()
    return out
