"""Hot and cold mini-batches (FAE's scheduling): a BatchSource that regroups another source's
train batches so that whole batches are hot (every lookup of every sample hits a hot row) and
train on the fast tier.

The epoch is taken a window of `window` batches at a time: the window's samples are classified
(`HotMap.classify`, one native pass per batch), full batches of hot samples are cut in arrival
order, and the remaining samples (the cold ones and the few hot ones left over) make the cold
batches, so each window trains on exactly its own samples. The order of a window's batches:
  fae          its cold batches, then its hot batches (two phases: one sync each way);
  interleaved  runs of `switch` cold and `switch` hot batches in turn (more syncs, shorter
               runs of one kind, which can matter for accuracy).
Batch i of an epoch is a pure function of (epoch, i), as for every source, so resume is exact.
Only fixed-size bags (one-hot, or multi-hot with fixed sizes) can be regrouped.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np
import torch

from dlrmx.cache.kernels import HotMap
from dlrmx.data.loader import Batch, BatchSource, WrappedSource, bag_offsets, make_batch

POLICIES = ("fae", "interleaved")


class HotColdSource(WrappedSource):
    def __init__(self, source: BatchSource, hot: HotMap, batches_per_epoch: int,
                 policy: str = "fae", window: int = 64, switch: int = 4) -> None:
        if policy not in POLICIES:
            raise ValueError(f"--hot-schedule must be one of {POLICIES}, got {policy!r}")
        if window < 1 or switch < 1:
            raise ValueError(f"--hot-window-batches and --hot-switch-batches must be >= 1, got "
                             f"{window} and {switch}")
        super().__init__(source)
        self.hot, self.per_epoch = hot, int(batches_per_epoch)
        self.policy, self.window, self.switch = policy, int(window), int(switch)
        self._bags = list(source.multi_hot_sizes or [1] * len(source.table_sizes))
        self._plans: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self.hot_batches: dict[tuple[int, int], int] = {}  # (epoch, window) -> hot batches

    def get(self, split: str, index: int, batch_size: int, epoch: int = 0) -> Batch:
        if split != "train":
            return self.source.get(split, index, batch_size, epoch)
        w, i = divmod(index, self.window)
        return self._plan(epoch, w, batch_size).batch(i)

    def hot_fraction(self) -> float:
        """The fraction of the batches scheduled so far that are hot."""
        n = sum(min(self.window, self.per_epoch - w * self.window) for _, w in self.hot_batches)
        return sum(self.hot_batches.values()) / n if n else 0.0

    def _plan(self, epoch: int, w: int, batch_size: int) -> "_Window":
        key = (epoch, w, batch_size)
        with self._lock:  # prefetch threads ask for the same window: plan it once
            plan = self._plans.get(key)
            if plan is None:
                plan = self._make_plan(epoch, w, batch_size)
                self._plans[key] = plan
                while len(self._plans) > 2:
                    self._plans.popitem(last=False)
            return plan

    def _make_plan(self, epoch: int, w: int, batch_size: int) -> "_Window":
        lo, hi = w * self.window, min((w + 1) * self.window, self.per_epoch)
        if lo >= hi:
            raise IndexError(f"train batch {lo} out of range: {self.per_epoch} per epoch")
        parts, hot = [], []
        for i in range(lo, hi):
            b = self.source.get("train", i, batch_size, epoch)
            parts.append(self._samples(b, batch_size, i))
            hot.append(self.hot.classify(b.values, b.offsets, batch_size))
        hot_idx = np.flatnonzero(np.concatenate(hot))
        n_hot = hot_idx.size // batch_size
        taken = np.zeros((hi - lo) * batch_size, dtype=bool)
        taken[hot_idx[:n_hot * batch_size]] = True
        hot_b = hot_idx[:n_hot * batch_size].reshape(n_hot, batch_size)
        cold_b = np.flatnonzero(~taken).reshape(-1, batch_size)
        self.hot_batches[(epoch, w)] = n_hot
        return _Window(_stack(parts), self._order(cold_b, hot_b), self.multi_hot_sizes)

    def _samples(self, b: Batch, batch_size: int, index: int) -> dict:
        """A batch as sample-major arrays (the ids [B, sum of bag sizes], table-grouped)."""
        if b.offsets.numel() != len(self._bags) * batch_size + 1 or not torch.equal(
                b.offsets, bag_offsets(batch_size, self._bags)):
            raise ValueError("--hot-cache-budget schedules hot and cold batches by regrouping "
                             "samples, which needs fixed-size bags (one-hot or --multi-hot-sizes); "
                             f"train batch {index} has bags of varying size")
        v, col, blocks = b.values.numpy(), 0, []
        for s in self._bags:
            blocks.append(v[batch_size * col:batch_size * (col + s)].reshape(batch_size, s))
            col += s
        return {"dense": b.dense.numpy(), "sparse": np.hstack(blocks), "label": b.label.numpy(),
                "prob": None if b.prob is None else b.prob.numpy()}

    def _order(self, cold: np.ndarray, hot: np.ndarray) -> list[np.ndarray]:
        if self.policy == "fae":
            return [*cold, *hot]
        out, c, h = [], list(cold), list(hot)
        while c or h:  # runs of `switch` of each kind in turn, cold first
            out += c[:self.switch] + h[:self.switch]
            c, h = c[self.switch:], h[self.switch:]
        return out


def _stack(parts: list[dict]) -> dict:
    return {k: None if parts[0][k] is None else np.concatenate([p[k] for p in parts])
            for k in parts[0]}


class _Window:
    def __init__(self, data: dict, order: list[np.ndarray], bag_sizes) -> None:
        self.data, self.order, self.bag_sizes = data, order, bag_sizes

    def batch(self, i: int) -> Batch:
        idx, d = self.order[i], self.data
        return make_batch(d["dense"][idx], d["sparse"][idx], d["label"][idx],
                          None if d["prob"] is None else d["prob"][idx], self.bag_sizes)
