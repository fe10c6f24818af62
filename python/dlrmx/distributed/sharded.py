"""`ShardedEmbeddingBagCollection`: the tables of an EmbeddingBagCollection spread over the ranks
of a job, behind the same forward (jagged ids of this rank's samples in, pooled [b, sum of dims]
out) and the same state_dict as a single process's collection.

Forward, for the tables placed on one rank each: every rank sends each owner the ids (and bag
lengths) of the owner's tables for its own samples (all-to-all); each owner runs one fused lookup
over the global batch (senders' samples in rank order, so the batch is the single-process one);
the pooled rows go back to their senders (all-to-all). Backward sends the pooled gradients the
reverse way, and the fused sparse optimizer updates the owner's rows in place. Replicated small
tables receive every rank's ids, so each rank looks up and updates them over the global batch
with the gradients of all ranks: the copies stay identical without an all-reduce of tables.

The loss of each rank is its samples' loss sum divided by the global batch (the trainer's rule),
so every sample's gradient is the one a single process computes and the sparse learning rate
needs no scaling. The tables are initialized from the same random stream as a single process's
(each rank draws, and drops, the chunks of the tables it does not hold).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from dlrmx.distributed.comm import AllToAll, SliceOfGlobal, all_to_all
from dlrmx.distributed.launch import Dist
from dlrmx.distributed.plan import Placement
from dlrmx.nn.collection import EmbeddingBagCollection, _as_config, _reference_init_rows, jagged_offsets
from dlrmx.nn.sparse_optim import SparseOptimizer
from dlrmx.nn.tables import fill_rows, row_chunks


class ShardedEmbeddingBagCollection(nn.Module):
    def __init__(self, tables: Sequence[Any], mode: str = "sum", *,
                 optimizer: SparseOptimizer, placement: Placement, dist_ctx: Dist,
                 init_weights: Sequence[torch.Tensor] | None = None,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.tables = [_as_config(i, t) for i, t in enumerate(tables)]
        if optimizer is None:
            raise ValueError("a sharded collection needs a fused sparse optimizer")
        self.mode, self.optimizer, self.placement, self.ctx = mode, optimizer, placement, dist_ctx
        w = dist_ctx.world
        self._of = [placement.tables_of(r) for r in range(w)]  # sharded tables of each rank
        self._mine, self._rep = self._of[dist_ctx.rank], placement.replicated
        # Plain attributes, not submodules: the state_dict is the single-process one (below).
        self.__dict__["_shard"] = self._local(self._mine)
        self.__dict__["_replica"] = self._local(self._rep)
        self._init(init_weights, generator)
        self._anchor = torch.zeros(0, requires_grad=True)  # keeps an empty exchange in the graph

    def _local(self, ts: list[int]) -> EmbeddingBagCollection | None:
        if not ts:
            return None
        # filled again by _init; a throwaway stream keeps torch's global one untouched
        return EmbeddingBagCollection([(self.tables[t].num_embeddings, self.tables[t].embedding_dim)
                                       for t in ts], self.mode, optimizer=self.optimizer,
                                      generator=torch.Generator().manual_seed(0))

    def _where(self, t: int) -> tuple[EmbeddingBagCollection | None, int]:
        for local, ts in ((self._shard, self._mine), (self._replica, self._rep)):
            if t in ts:
                return local, ts.index(t)
        return None, -1

    def _init(self, init_weights, generator) -> None:
        """Every table as a single process draws it: held tables are filled, the others' chunks
        drawn and dropped, in table order."""
        for t, cfg in enumerate(self.tables):
            shape = (cfg.num_embeddings, cfg.embedding_dim)
            if init_weights is not None:
                make = (lambda src: lambda r0, r1: src[r0:r1].float())(init_weights[t].detach())
            else:
                make = _reference_init_rows(shape, generator)
            local, i = self._where(t)
            if local is None:
                if init_weights is None:
                    for r0, r1 in row_chunks(*shape):
                        make(r0, r1)
                continue
            state = local.optimizer_state()
            fill_rows(self.optimizer, local.weights[i], state[i] if state else None, make)

    # ---- forward ------------------------------------------------------------------------------

    @property
    def dims(self) -> list[int]:
        return [t.embedding_dim for t in self.tables]

    @property
    def num_tables(self) -> int:
        return len(self.tables)

    def forward(self, values: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        offsets, b = jagged_offsets(values, offsets, None, self.num_tables, False)
        rows = _all_batch_sizes(b, self.ctx.world)
        lengths = offsets.diff().view(self.num_tables, b)
        blocks: list[torch.Tensor | None] = [None] * self.num_tables
        if any(self._of):
            self._sharded_forward(values, offsets, lengths, b, rows, blocks)
        if self._rep:
            g_vals, g_offs = self._gather(values, offsets, lengths, b, rows,
                                          [self._rep] * self.ctx.world, self._rep)
            full = self._replica(g_vals, offsets=g_offs)
            lo = sum(rows[:self.ctx.rank])
            mine = SliceOfGlobal.apply(full, lo, lo + b, rows)
            for t, part in zip(self._rep, torch.split(mine, [self.dims[t] for t in self._rep], 1)):
                blocks[t] = part
        return torch.cat(blocks, dim=1)

    def _sharded_forward(self, values, offsets, lengths, b, rows, blocks) -> None:
        me, w = self.ctx.rank, self.ctx.world
        if self._mine:
            g_vals, g_offs = self._gather(values, offsets, lengths, b, rows, self._of, self._mine)
            pooled = self._shard(g_vals, offsets=g_offs)  # [B, dims of my tables]
            flat = pooled.reshape(-1)
        else:
            flat = self._anchor * 1.0
        width = [sum(self.dims[t] for t in self._of[r]) for r in range(w)]
        back = AllToAll.apply(flat, [n * width[me] for n in rows], [b * width[r] for r in range(w)])
        pos = 0
        for r in range(w):
            part = back[pos:pos + b * width[r]].view(b, width[r])
            pos += b * width[r]
            for t, col in zip(self._of[r], torch.split(part, [self.dims[t] for t in self._of[r]], 1)):
                blocks[t] = col

    def _gather(self, values, offsets, lengths, b, rows, tables_to: list[list[int]],
                mine: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Send each rank the ids of tables_to[r] for this rank's samples; return the ids and
        offsets of `mine` over the global batch (senders in rank order), table-major."""
        w = self.ctx.world
        vals = values.to(torch.int64)
        send_len = torch.cat([lengths[ts].reshape(-1) for ts in tables_to])
        send_ids = torch.cat([vals[int(offsets[t * b]):int(offsets[(t + 1) * b])]
                              for ts in tables_to for t in ts] or [vals[:0]])
        got_len = all_to_all(send_len, [len(ts) * b for ts in tables_to],
                             [len(mine) * n for n in rows])
        id_counts = [int(lengths[ts].sum()) for ts in tables_to]
        per_sender = torch.split(got_len, [len(mine) * n for n in rows])
        got_ids = all_to_all(send_ids, id_counts, [int(x.sum()) for x in per_sender])
        # regroup: sender-major (sender, table, bag) -> table-major over the global batch
        lens = [x.view(len(mine), n) for x, n in zip(per_sender, rows)]
        counts = np.array([[int(x[k].sum()) for x in lens] for k in range(len(mine))])  # [T, W]
        starts = np.zeros((w, len(mine)), dtype=np.int64)
        pos = 0
        for s in range(w):
            for k in range(len(mine)):
                starts[s, k] = pos
                pos += counts[k, s]
        order = [got_ids[starts[s, k]:starts[s, k] + counts[k, s]]
                 for k in range(len(mine)) for s in range(w)]
        g_vals = torch.cat(order) if order else got_ids
        g_len = torch.cat([x[k] for k in range(len(mine)) for x in lens])
        g_offs = torch.zeros(g_len.numel() + 1, dtype=torch.int64)
        torch.cumsum(g_len, 0, out=g_offs[1:])
        return g_vals, g_offs

    # ---- the single-process state_dict --------------------------------------------------------

    def _key_tensors(self, t: int) -> dict[str, torch.Tensor]:
        local, i = self._where(t)
        state = local.optimizer_state()
        out = {f"weights.{t}": local.weights[i].detach()}
        if state:
            out[f"state_{t}"] = state[i]
        return out

    def _save_to_state_dict(self, destination, prefix, keep_vars) -> None:
        """Rank 0 gets every table (the owners send theirs); other ranks save nothing."""
        held = {k: v for t in self._mine + (self._rep if self.ctx.rank == 0 else [])
                for k, v in self._key_tensors(t).items()}
        parts = [None] * self.ctx.world if self.ctx.rank == 0 else None
        dist.gather_object(held, parts, dst=0)
        if self.ctx.rank == 0:
            merged = {k: v for p in parts for k, v in p.items()}
            for t in range(self.num_tables):  # in table order, as a single process
                for key in (f"weights.{t}", f"state_{t}"):
                    if key in merged:
                        destination[prefix + key] = merged[key]

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs) -> None:
        """A single-process (or any world size's) state_dict: each rank takes its tables."""
        for t in range(self.num_tables):
            local, _ = self._where(t)
            for key, dst in (self._key_tensors(t).items() if local is not None else ()):
                src = state_dict.get(prefix + key)
                if src is None:
                    missing_keys.append(prefix + key)
                elif tuple(src.shape) != tuple(dst.shape) or src.dtype != dst.dtype:
                    error_msgs.append(f"{prefix + key}: checkpoint {tuple(src.shape)} {src.dtype}, "
                                      f"model {tuple(dst.shape)} {dst.dtype}")
                else:
                    dst.copy_(src)

    def extra_repr(self) -> str:
        return (f"rank {self.ctx.rank} of {self.ctx.world}: tables {self._mine} sharded here, "
                f"{self._rep} replicated")


def _all_batch_sizes(b: int, world: int) -> list[int]:
    """Every rank's local batch size (they differ by one for a global batch not divisible by
    the world, and at the end of an evaluation split)."""
    t = torch.tensor([b], dtype=torch.int64)
    out = [torch.zeros(1, dtype=torch.int64) for _ in range(world)]
    dist.all_gather(out, t)
    return [int(x) for x in out]
