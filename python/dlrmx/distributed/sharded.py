"""`ShardedEmbeddingBagCollection`: the tables of an EmbeddingBagCollection spread over the ranks
of a job (as pieces: whole tables, column ranges or row ranges; dlrmx.distributed.plan), behind
the same forward (jagged ids of this rank's samples in, pooled [b, sum of dims] out) and the
same state_dict as a single process's collection.

Forward: every rank sends each piece's owner the ids (and bag lengths) of its own samples that
fall in the piece's rows, shifted to the piece's first row (all-to-all); each owner runs one
fused lookup over the global batch (senders' samples in rank order, so the batch is the
single-process one) and the pooled rows go back to their senders (all-to-all), which join a
table's column pieces side by side and add up its row pieces' partial sums. Backward sends the
pooled gradients the reverse way, and the fused sparse optimizer updates the owner's rows in
place. Replicated small tables (under --sparse-dense-boundary rows) are data-parallel: each rank
looks up its own samples; the backward sums each table's row gradients over them into a dense
fp64 buffer (the sum over the ranks then rounds to fp32 once) and starts its all-reduce; and
`finish_step()` (after the backward) gives the summed rows to the same fused sparse optimizer,
so every copy takes the global batch's update. A step moves the tables' size (a ring
all-reduce), not the global batch's pooled rows.

The loss of each rank is its samples' loss sum divided by the global batch (the trainer's rule),
so every sample's gradient is the one a single process computes and the sparse learning rate
needs no scaling. The tables are initialized from a single process's random stream: every rank
draws every chunk of every table in order and keeps the parts it holds.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.distributed as dist
from torch import nn

from dlrmx.distributed.comm import TRAFFIC, AllToAll, all_to_all, ring_bytes
from dlrmx.distributed.launch import Dist
from dlrmx.distributed.plan import Piece, Placement
from dlrmx.nn.collection import EmbeddingBagCollection, _as_config, _reference_init_rows, jagged_offsets
from dlrmx.nn.sparse_optim import SparseOptimizer
from dlrmx.nn.tables import row_chunks, write_fp32


class ShardedEmbeddingBagCollection(nn.Module):
    def __init__(self, tables: Sequence[Any], mode: str = "sum", *,
                 optimizer: SparseOptimizer, placement: Placement, dist_ctx: Dist,
                 init_weights: Sequence[torch.Tensor] | None = None,
                 generator: torch.Generator | None = None, shard_files: bool = False) -> None:
        super().__init__()
        # shard_files: the state_dict holds only the replicated tables; the trainer writes the
        # pieces into shard files (dlrmx.distributed.checkpoint). Otherwise rank 0 gathers all.
        self.shard_files = shard_files
        self.tables = [_as_config(i, t) for i, t in enumerate(tables)]
        if optimizer is None:
            raise ValueError("a sharded collection needs a fused sparse optimizer")
        if mode != "sum":
            raise NotImplementedError("a sharded collection sum-pools (row pieces add up)")
        self.mode, self.optimizer, self.placement, self.ctx = mode, optimizer, placement, dist_ctx
        self._of = [placement.pieces_of(r) for r in range(dist_ctx.world)]
        self._mine = self._of[dist_ctx.rank]
        self._rep = [Piece(t, -1, 0, self.tables[t].num_embeddings, 0, self.tables[t].embedding_dim)
                     for t in placement.replicated]
        # Plain attributes, not submodules: the state_dict is the single-process one (below).
        self.__dict__["_shard"] = self._local(self._mine)
        self.__dict__["_replica"] = self._local(self._rep)
        self._init(init_weights, generator)
        self._anchor = torch.zeros(0, requires_grad=True)  # keeps an empty exchange in the graph
        self._rep_sum = None  # (row gradient buffers, their all-reduce) between backward and step

    def _local(self, pieces: list[Piece]) -> EmbeddingBagCollection | None:
        if not pieces:
            return None
        # filled again by _init; a throwaway stream keeps torch's global one untouched
        return EmbeddingBagCollection([p.shape for p in pieces], self.mode, optimizer=self.optimizer,
                                      generator=torch.Generator().manual_seed(0))

    def _held(self):
        """(piece, its weight, its optimizer state or None) for every piece this rank holds."""
        for local, pieces in ((self._shard, self._mine), (self._replica, self._rep)):
            if local is None:
                continue
            state = local.optimizer_state()
            for i, p in enumerate(pieces):
                yield p, local.weights[i], state[i] if state else None

    def _init(self, init_weights, generator) -> None:
        """Every table as a single process draws it, chunk by chunk in table order; each held
        piece keeps its rows and columns of each chunk."""
        held = list(self._held())
        for t, cfg in enumerate(self.tables):
            shape = (cfg.num_embeddings, cfg.embedding_dim)
            mine = [h for h in held if h[0].table == t]
            if init_weights is not None:
                if not mine:
                    continue  # nothing to draw from: no stream to keep in step
                src = init_weights[t].detach()
                make = lambda r0, r1, src=src: src[r0:r1].float()  # noqa: E731
            else:
                make = _reference_init_rows(shape, generator)
            for r0, r1 in row_chunks(*shape):
                chunk = make(r0, r1)
                for p, w, state in mine:
                    a, z = max(r0, p.row_lo), min(r1, p.row_hi)
                    if a < z:
                        rows = slice(a - p.row_lo, z - p.row_lo)
                        write_fp32(self.optimizer, w[rows], None if state is None else state[rows],
                                   chunk[a - r0:z - r0, p.col_lo:p.col_hi])

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
        batch = _Local(values, offsets, b)
        parts: list[list[tuple[Piece, torch.Tensor]]] = [[] for _ in self.tables]
        if self.placement.pieces:
            self._sharded_forward(batch, rows, parts)
        if self._rep:
            ids, lens = zip(*(batch.piece(p) for p in self._rep))
            offs = torch.zeros(b * len(self._rep) + 1, dtype=torch.int64)
            torch.cumsum(torch.cat(lens), 0, out=offs[1:])
            mine = _DataParallel.apply(self._anchor, self, torch.cat(ids), offs)
            for p, col in zip(self._rep, torch.split(mine, [q.shape[1] for q in self._rep], 1)):
                parts[p.table].append((p, col))
        return torch.cat([_join(ps) for ps in parts], dim=1)

    def _sharded_forward(self, batch: "_Local", rows: list[int], parts) -> None:
        me, w = self.ctx.rank, self.ctx.world
        if self._mine:
            g_vals, g_offs = self._exchange(batch, rows, self._of, self._mine)
            flat = self._shard(g_vals, offsets=g_offs).reshape(-1)  # [B, my pieces' widths]
        else:
            flat = self._anchor * 1.0
        width = [sum(p.shape[1] for p in self._of[r]) for r in range(w)]
        back = AllToAll.apply(flat, [n * width[me] for n in rows],
                              [batch.b * width[r] for r in range(w)])
        pos = 0
        for r in range(w):
            block = back[pos:pos + batch.b * width[r]].view(batch.b, width[r])
            pos += batch.b * width[r]
            for p, col in zip(self._of[r], torch.split(block, [q.shape[1] for q in self._of[r]], 1)):
                parts[p.table].append((p, col))

    def _exchange(self, batch: "_Local", rows: list[int], pieces_to: list[list[Piece]],
                  mine: list[Piece]) -> tuple[torch.Tensor, torch.Tensor]:
        """Send each rank the ids of pieces_to[r] for this rank's samples; return the ids and
        offsets of `mine` over the global batch (senders in rank order), piece-major."""
        w, b = self.ctx.world, batch.b
        sent = [batch.piece(p) for ps in pieces_to for p in ps]
        send_len = torch.cat([s[1] for s in sent]) if sent else torch.zeros(0, dtype=torch.int64)
        send_ids = torch.cat([s[0] for s in sent]) if sent else torch.zeros(0, dtype=torch.int64)
        sizes, pos = [], 0
        for ps in pieces_to:
            sizes.append(sum(int(s[1].sum()) for s in sent[pos:pos + len(ps)]))
            pos += len(ps)
        got_len = all_to_all(send_len, [len(ps) * b for ps in pieces_to],
                             [len(mine) * n for n in rows])
        lens = [x.view(len(mine), n) for x, n in zip(torch.split(got_len, [len(mine) * n for n in rows]),
                                                     rows)]
        got_ids = all_to_all(send_ids, sizes, [int(x.sum()) for x in lens])
        # regroup: sender-major (sender, piece, bag) -> piece-major over the global batch
        counts = [[int(x[k].sum()) for k in range(len(mine))] for x in lens]  # [sender][piece]
        starts, pos = [], 0
        for s in range(w):
            starts.append([])
            for k in range(len(mine)):
                starts[s].append(pos)
                pos += counts[s][k]
        g_vals = torch.cat([got_ids[starts[s][k]:starts[s][k] + counts[s][k]]
                            for k in range(len(mine)) for s in range(w)] or [got_ids])
        g_len = torch.cat([x[k] for k in range(len(mine)) for x in lens])
        g_offs = torch.zeros(g_len.numel() + 1, dtype=torch.int64)
        torch.cumsum(g_len, 0, out=g_offs[1:])
        return g_vals, g_offs

    # ---- the replicated tables' update ---------------------------------------------------------

    def _sum_replicated(self, grad: torch.Tensor, ids: torch.Tensor, offsets: torch.Tensor) -> None:
        """(backward) Each replicated table's row gradients over this rank's samples, in fp64,
        and the start of their sum over the ranks."""
        b = grad.shape[0]
        bufs = [torch.zeros(p.shape, dtype=torch.float64) for p in self._rep]
        lens = offsets.diff().view(len(self._rep), b)
        col = 0
        for k, (p, buf) in enumerate(zip(self._rep, bufs)):
            lo, hi = int(offsets[k * b]), int(offsets[(k + 1) * b])
            bag = torch.repeat_interleave(torch.arange(b), lens[k])
            buf.index_add_(0, ids[lo:hi], grad[bag, col:col + p.shape[1]].double())
            col += p.shape[1]
        flat = torch.cat([x.reshape(-1) for x in bufs])
        self._rep_sum = (flat, bufs, dist.all_reduce(flat, async_op=True))

    def finish_step(self) -> None:
        """After the backward: the replicated tables' update with the global batch's row
        gradients (every touched row, one bag each, through the fused optimizer)."""
        if self._rep_sum is None:
            return
        flat, bufs, work = self._rep_sum
        self._rep_sum = None
        with TRAFFIC.timed(ring_bytes(flat.numel() * 8)):
            work.wait()
        pos, grads = 0, []
        for x in bufs:
            grads.append(flat[pos:pos + x.numel()].view_as(x).float())
            pos += x.numel()
        touched = [torch.nonzero(g.ne(0).any(1)).flatten() for g in grads]  # NaN counts
        b = max(1, max(len(r) for r in touched))
        lens = torch.zeros(len(grads), b, dtype=torch.int64)
        out_grad = torch.zeros(b, sum(g.shape[1] for g in grads))
        col = 0
        for k, (r, g) in enumerate(zip(touched, grads)):
            lens[k, :len(r)] = 1
            out_grad[:len(r), col:col + g.shape[1]] = g[r]
            col += g.shape[1]
        offs = torch.zeros(lens.numel() + 1, dtype=torch.int64)
        torch.cumsum(lens.reshape(-1), 0, out=offs[1:])
        with torch.enable_grad():
            self._replica(torch.cat(touched), offsets=offs).backward(out_grad)

    # ---- the single-process state_dict --------------------------------------------------------

    def _save_to_state_dict(self, destination, prefix, keep_vars) -> None:
        """Rank 0 gets every table, assembled from the owners' pieces (with shard_files only the
        replicated ones); the others save nothing."""
        if self.shard_files:
            if self.ctx.rank == 0:
                for p, w, s in self._held():
                    if p.rank < 0:
                        destination[prefix + f"weights.{p.table}"] = w.detach()
                        if s is not None:
                            destination[prefix + f"state_{p.table}"] = s
            return
        held = [(p, w.detach(), s) for p, w, s in self._held()
                if p.rank >= 0 or self.ctx.rank == 0]
        parts = [None] * self.ctx.world if self.ctx.rank == 0 else None
        dist.gather_object(held, parts, dst=0)
        if self.ctx.rank != 0:
            return
        full: dict[str, torch.Tensor] = {}
        for p, w, s in (h for part in parts for h in part):
            n, d = self.tables[p.table].num_embeddings, self.tables[p.table].embedding_dim
            for key, x in ((f"weights.{p.table}", w), (f"state_{p.table}", s)):
                if x is None:
                    continue
                if key not in full:
                    full[key] = x.new_empty((n,) if x.dim() == 1 else (n, d))
                _region(full[key], p).copy_(x)
        for t in range(self.num_tables):  # in table order, as a single process
            for key in (f"weights.{t}", f"state_{t}"):
                if key in full:
                    destination[prefix + key] = full[key]

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs) -> None:
        """A single-process (or any world size's) state_dict: each rank takes its pieces."""
        for p, w, s in self._held():
            for key, dst in ((f"weights.{p.table}", w), (f"state_{p.table}", s)):
                if dst is None:
                    continue
                src = state_dict.get(prefix + key)
                if src is None:
                    missing_keys.append(prefix + key)
                    continue
                n, d = self.tables[p.table].num_embeddings, self.tables[p.table].embedding_dim
                want = (n,) if dst.dim() == 1 else (n, d)
                if tuple(src.shape) != want or src.dtype != dst.dtype:
                    error_msgs.append(f"{prefix + key}: checkpoint {tuple(src.shape)} {src.dtype}, "
                                      f"model {want} {dst.dtype}")
                else:  # a whole table, or a sharded checkpoint's reader of one
                    dst.detach().copy_(src.region(p) if hasattr(src, "region") else _region(src, p))

    def extra_repr(self) -> str:
        return (f"rank {self.ctx.rank} of {self.ctx.world}: pieces {self._mine}, tables "
                f"{[p.table for p in self._rep]} replicated")


def _region(full: torch.Tensor, p: Piece) -> torch.Tensor:
    """A piece's part of a whole table (or of its per-row state)."""
    rows = full[p.row_lo:p.row_hi]
    return rows if full.dim() == 1 else rows[:, p.col_lo:p.col_hi]


def _join(parts: list[tuple[Piece, torch.Tensor]]) -> torch.Tensor:
    """A table's pooled [b, dim] from its pieces: column ranges side by side, the partial sums
    of its row ranges added."""
    cols: dict[tuple[int, int], torch.Tensor] = {}
    for p, x in sorted(parts, key=lambda px: (px[0].col_lo, px[0].row_lo)):
        key = (p.col_lo, p.col_hi)
        cols[key] = x if key not in cols else cols[key] + x
    return torch.cat([cols[k] for k in sorted(cols)], dim=1) if len(cols) > 1 else next(iter(cols.values()))


class _Local:
    """This rank's batch, table by table: its ids, and a piece's share of them."""

    def __init__(self, values: torch.Tensor, offsets: torch.Tensor, b: int) -> None:
        self.b, self.values, self.offsets = b, values.to(torch.int64), offsets
        self.lengths = offsets.diff().view(-1, b) if b else offsets.new_zeros((0, 0))

    def piece(self, p: Piece) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids of table p.table in p's rows, shifted to its first row; bag lengths [b])."""
        t, b = p.table, self.b
        if b == 0:
            return self.values[:0], self.offsets.new_zeros(0)
        ids = self.values[int(self.offsets[t * b]):int(self.offsets[(t + 1) * b])]
        if p.row_lo == 0 and p.row_hi >= _rows_upper(ids):  # every id is in the piece
            return ids, self.lengths[t]
        keep = (ids >= p.row_lo) & (ids < p.row_hi)
        bag = torch.repeat_interleave(torch.arange(b), self.lengths[t])
        return ids[keep] - p.row_lo, torch.bincount(bag[keep], minlength=b)


def _rows_upper(ids: torch.Tensor) -> int:
    return int(ids.max()) + 1 if ids.numel() else 0


def _all_batch_sizes(b: int, world: int) -> list[int]:
    """Every rank's local batch size (they differ by one for a global batch not divisible by
    the world, and at the end of an evaluation split)."""
    t = torch.tensor([b], dtype=torch.int64)
    out = [torch.zeros(1, dtype=torch.int64) for _ in range(world)]
    dist.all_gather(out, t)
    return [int(x) for x in out]


class _DataParallel(torch.autograd.Function):
    """A replicated table's lookup of this rank's samples; its backward hands the pooled
    gradient to the owner, which sums the rows over the ranks (the update waits for
    `finish_step`)."""

    @staticmethod
    def forward(ctx, anchor, owner: ShardedEmbeddingBagCollection, ids, offsets):
        ctx.owner, ctx.args = owner, (ids, offsets)
        with torch.no_grad():
            return owner._replica(ids, offsets=offsets)

    @staticmethod
    def backward(ctx, grad):
        ctx.owner._sum_replicated(grad, *ctx.args)
        return None, None, None, None
