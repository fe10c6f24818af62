"""`CachedEmbeddingBagCollection`: an EmbeddingBagCollection whose hot rows (and their optimizer
state) are replicated in a compact fast tier.

The master tables stay the truth that the state_dict, checkpoints and evaluation see. A training
batch whose every lookup is hot (`HotMap.remap` finds no miss) runs on the replica, with its ids
remapped to slots; any other batch runs on the master. The two copies are synced in bulk, only
when the kind of batch changes (FAE): before a cold batch the replica's rows are scattered back
into the master ("flush"), before a hot batch after cold ones the master's hot rows are gathered
into the replica ("refresh"); evaluation, `state_dict()` and `fp32_weights()` flush first.

The fused kernels update each row from its own lookups in batch order, whatever the row's number,
so the cache changes no bit of the result (tests/test_cache.py). Per-sample weights, padding_idx
and TorchRec configs are not supported with a cache.

FAE's hybrid mode (`hot_device="cuda"`): the master stays in host memory and the replica lives on
the GPU. A hot batch's ids are remapped on the host and only the slots go to the GPU, where the
lookup and the fused update run; a cold batch is looked up and updated on the host, its pooled
rows copied to `output_device` (the MLPs' GPU) and their gradient back. Syncs copy the hot rows
between the tiers through a pinned host buffer.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np
import torch

from dlrmx import ops
from dlrmx.cache.kernels import HotMap, gather_rows, scatter_rows
from dlrmx.nn.collection import EmbeddingBagCollection
from dlrmx.nn.sparse_optim import FusedUpdate, SparseOptimizer

HOT_DEVICES = ("cpu", "cuda", "none")


class CachedEmbeddingBagCollection(EmbeddingBagCollection):
    """`EmbeddingBagCollection(tables, mode, optimizer=...)` (in host memory) plus `hot_rows`
    (per table, the row ids to keep in the fast tier) on `hot_device`: "cpu" (a separate compact
    buffer), "cuda" (the replica on the GPU: FAE's hybrid mode) or "none" (no replica: every batch
    reads the master, for measuring a hot/cold schedule alone). `output_device`: where the pooled
    rows go (the MLPs' device; default: the replica's)."""

    def __init__(self, tables: Sequence[Any], mode: str = "sum", *,
                 optimizer: SparseOptimizer | None, hot_rows: Sequence[np.ndarray],
                 hot_device: str = "cpu", output_device: torch.device | str | None = None,
                 **kwargs) -> None:
        super().__init__(tables, mode, optimizer=optimizer, **kwargs)
        if hot_device not in HOT_DEVICES:
            raise ValueError(f"--hot-device must be one of {HOT_DEVICES}, got {hot_device!r}")
        out = None if output_device is None else torch.device(output_device)
        tier = torch.device("cpu")
        if hot_device == "cuda":
            from dlrmx import cuda

            why = cuda.unavailable()
            if why:
                raise ValueError(f"--hot-device cuda needs dlrmx's CUDA kernels and a GPU "
                                 f"({why}); use --hot-device cpu")
            tier = out if out is not None and out.type == "cuda" else torch.device("cuda")
        self.output_device = out or tier
        if optimizer is None:
            raise ValueError("a hot-row cache needs a fused sparse optimizer (optimizer=...): "
                             "with plain gradients there is nothing to keep in sync")
        if self._torchrec or any(t.padding_idx is not None for t in self.tables):
            raise NotImplementedError("a hot-row cache supports dlrmx TableConfigs without "
                                      "padding_idx")
        self.hot = HotMap(hot_rows, [t.num_embeddings for t in self.tables])
        self.hot_device = hot_device
        self._replica: list[torch.Tensor] = []
        self._replica_state: list[torch.Tensor] = []
        if hot_device != "none":
            state = self.optimizer_state()
            for t, w in enumerate(self.weights):
                n = max(1, self.hot.hot_counts[t])  # an empty tier table keeps one unused row
                self._replica.append(torch.zeros((n, *w.shape[1:]), dtype=w.dtype, device=tier))
                if state:
                    self._replica_state.append(torch.zeros((n, *state[t].shape[1:]),
                                                           dtype=state[t].dtype, device=tier))
        # Another device's replica syncs through pinned host copies of its tensors.
        self._staging = ({} if tier.type == "cpu" else
                         {id(r): torch.empty(r.shape, dtype=r.dtype, pin_memory=True)
                          for r in (*self._replica, *self._replica_state)})
        # Which copy of the hot rows is current: "master", "replica", or "both".
        self._current = "master"
        self.stats = {"hot_batches": 0, "cold_batches": 0, "flushes": 0, "refreshes": 0,
                      "sync_seconds": 0.0, "sync_bytes": 0}

    @property
    def tier_bytes(self) -> int:
        """Bytes of the fast tier (replica weights and optimizer state)."""
        return sum(t.numel() * t.element_size() for t in (*self._replica, *self._replica_state))

    # ---- sync ---------------------------------------------------------------------------------

    def _pairs(self):
        """(master tensor, replica tensor, hot rows) for every weight and state tensor."""
        state = self.optimizer_state()
        for t, rows in enumerate(self.hot.rows):
            yield self.weights[t].detach(), self._replica[t], rows
            if self._replica_state:
                yield state[t], self._replica_state[t], rows

    def flush(self) -> None:
        """Write the replica's rows back into the master (after hot batches)."""
        if self._current == "replica":
            self._sync(self._scatter)
            self.stats["flushes"] += 1
        if self._current != "master":
            self._current = "both"

    def refresh(self) -> None:
        """Copy the master's hot rows into the replica (before hot batches, after cold ones)."""
        if self._current == "master" and self._replica:
            self._sync(self._gather)
            self.stats["refreshes"] += 1
            self._current = "both"

    def _gather(self, master: torch.Tensor, replica: torch.Tensor, rows: np.ndarray) -> None:
        staging = self._staging.get(id(replica))
        if staging is None:
            gather_rows(master, rows, replica)
        else:  # blocking copies: the staging buffer is reused by the next sync
            replica.copy_(gather_rows(master, rows, staging))

    def _scatter(self, master: torch.Tensor, replica: torch.Tensor, rows: np.ndarray) -> None:
        staging = self._staging.get(id(replica))
        scatter_rows(replica if staging is None else staging.copy_(replica), rows, master)

    def _sync(self, copy) -> None:
        t0 = time.perf_counter()
        for master, replica, rows in self._pairs():
            if rows.size:
                copy(master, replica, rows)
                self.stats["sync_bytes"] += rows.size * replica[0].numel() * replica.element_size()
        self.stats["sync_seconds"] += time.perf_counter() - t0

    # ---- forward ------------------------------------------------------------------------------

    def _pool(self, values: torch.Tensor, offsets: torch.Tensor, batch,
              per_sample_weights: torch.Tensor | None) -> torch.Tensor:
        updates = self.training and torch.is_grad_enabled()
        if updates and self._replica and per_sample_weights is None:
            slots, _, misses = self.hot.remap(values, offsets, batch)
            if misses == 0:  # a hot batch: the replica alone
                self.refresh()
                self._current = "replica"
                self.stats["hot_batches"] += 1
                dev = self._replica[0].device
                return ops.embedding_bags(
                    self._replica, slots.to(dev), offsets.to(dev), batch, pooling=self.mode,
                    optimizer=FusedUpdate(self.optimizer, self._replica_state),
                    anchor=self._anchor).to(self.output_device)
        self.flush()
        if updates:
            self.stats["cold_batches"] += 1
            if self._replica:
                self._current = "master"  # the backward updates the master's rows
        return super()._pool(values, offsets, batch, per_sample_weights).to(self.output_device)

    # ---- what the outside sees: the master, synced ---------------------------------------------

    def _save_to_state_dict(self, destination, prefix, keep_vars) -> None:
        self.flush()
        super()._save_to_state_dict(destination, prefix, keep_vars)

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._current = "master"  # the replica is refreshed before the next hot batch

    def fp32_weights(self) -> list[torch.Tensor]:
        self.flush()
        return super().fp32_weights()

    def extra_repr(self) -> str:
        hot = sum(self.hot.hot_counts)
        return (f"{super().extra_repr()}, hot_rows={hot:,}, hot_device={self.hot_device!r}, "
                f"tier_bytes={self.tier_bytes:,}")
