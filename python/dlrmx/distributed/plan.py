"""Where each table lives. Small tables (under --sparse-dense-boundary rows) are replicated on
every rank. The others are cut into pieces placed one per rank, largest first on the least
loaded rank:
  table-wise   a whole table on one rank (the default);
  column-wise  when there are more ranks than large tables, each large table's columns are
               split so that every rank gets work (not with row-wise Adagrad, whose per-row
               state needs the whole row);
  row-wise     a table larger than --max-table-bytes-per-rank is split into row ranges over as
               many ranks as it needs.
The report of it goes to placement.json."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

from dlrmx.distributed.launch import split_bounds
from dlrmx.popularity.hotset import row_bytes


@dataclass(frozen=True)
class Piece:
    """Rows [row_lo, row_hi) and columns [col_lo, col_hi) of table `table`, held by `rank`."""

    table: int
    rank: int
    row_lo: int
    row_hi: int
    col_lo: int
    col_hi: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.row_hi - self.row_lo, self.col_hi - self.col_lo


@dataclass
class Placement:
    pieces: list[Piece]  # of the sharded tables, in table order
    replicated: list[int]
    world: int

    def pieces_of(self, rank: int) -> list[Piece]:
        return [p for p in self.pieces if p.rank == rank]


def _ranges(n: int, k: int) -> list[tuple[int, int]]:
    """k contiguous ranges of n rows (or columns), as ranks split a batch."""
    b = split_bounds(n, k)
    return list(zip(b, b[1:]))


def place(table_sizes: Sequence[int], world: int, boundary: int, dim: int, optimizer: str,
          max_bytes_per_rank: int = 0) -> Placement:
    """The pieces of every large table and the ranks that hold them; ValueError when a rank
    cannot hold its part within max_bytes_per_rank."""
    per_row = row_bytes(dim, optimizer)
    replicated = [t for t, n in enumerate(table_sizes) if n < boundary]
    large = [t for t, n in enumerate(table_sizes) if n >= boundary]
    load = [sum(int(table_sizes[t]) * per_row for t in replicated)] * world
    cuts: dict[int, list[tuple[int, int, int, int]]] = {}
    for t in large:
        rows = int(table_sizes[t])
        k_rows = 1
        if max_bytes_per_rank and rows * per_row > max_bytes_per_rank:
            k_rows = math.ceil(rows * per_row / max_bytes_per_rank)
            if k_rows > world:
                raise ValueError(f"table {t} ({rows * per_row:,} bytes with its optimizer state) "
                                 f"needs {k_rows} ranks of --max-table-bytes-per-rank "
                                 f"{max_bytes_per_rank:,}, but the job has {world}")
        k_cols = 1
        if k_rows == 1 and 0 < len(large) < world and optimizer != "rowwise_adagrad":
            k_cols = min(dim, world // len(large))
        cuts[t] = [(r0, r1, c0, c1) for r0, r1 in _ranges(rows, k_rows)
                   for c0, c1 in _ranges(dim, k_cols)]
    pieces = []
    for t in sorted(large, key=lambda t: -int(table_sizes[t])):
        used: set[int] = set()  # the pieces of one table go to different ranks
        for r0, r1, c0, c1 in cuts[t]:
            r = min((r for r in range(world) if r not in used), key=lambda r: (load[r], r))
            used.add(r)
            pieces.append(Piece(t, r, r0, r1, c0, c1))
            load[r] += (r1 - r0) * row_bytes(c1 - c0, optimizer)
    if max_bytes_per_rank and max(load) > max_bytes_per_rank:
        worst = max(range(world), key=lambda r: load[r])
        raise ValueError(f"--max-table-bytes-per-rank {max_bytes_per_rank:,}: rank {worst} would "
                         f"hold {load[worst]:,} bytes of tables and optimizer state; use more ranks")
    pieces.sort(key=lambda p: (p.table, p.row_lo, p.col_lo))
    return Placement(pieces, replicated, world)


def report(p: Placement, table_sizes: Sequence[int], dim: int, optimizer: str, batch: int,
           dense_params: int) -> dict[str, Any]:
    """Who holds what, memory per rank, and the bytes the busiest rank sends per step, by
    collective (fp32 pooled results and gradients, int64 ids and bag lengths with one id per
    lookup of a one-hot batch; ring all-reduces send 2 (w - 1) / w of the buffer)."""
    w = p.world
    b = -(-batch // w)  # a rank's share of the global batch (the larger one)
    held = [sum(int(table_sizes[t]) for t in p.replicated) * row_bytes(dim, optimizer)] * w
    width = [0] * w  # pooled columns each rank looks up for the global batch
    pieces = [0] * w
    for q in p.pieces:
        held[q.rank] += q.shape[0] * row_bytes(q.shape[1], optimizer)
        width[q.rank] += q.shape[1]
        pieces[q.rank] += 1
    total_w, total_p = sum(width), len(p.pieces)
    remote = batch - b  # samples of a global batch on other ranks
    ring = 2 * (w - 1) / w
    ids = [b * (total_p - pieces[r]) * 16 for r in range(w)]
    # forward: an owner sends its pieces' rows for the others' samples, and the backward sends
    # its samples' gradients of the others' pieces
    pooled = [4 * (remote * width[r] + b * (total_w - width[r])) for r in range(w)]
    return {
        "world": w,
        "replicated": [{"table": t, "rows": int(table_sizes[t])} for t in p.replicated],
        "pieces": [{"table": q.table, "rank": q.rank, "rows": [q.row_lo, q.row_hi],
                    "columns": [q.col_lo, q.col_hi]} for q in p.pieces],
        "bytes_per_rank": held,
        "bytes_per_step": {  # sent by the busiest rank
            "all_to_all_ids": max(ids),
            "all_to_all_pooled": max(pooled),
            "all_reduce_replicated": int(ring * sum(int(table_sizes[t]) for t in p.replicated)
                                         * dim * 8),  # fp64 row gradients
            "all_reduce_dense": int(ring * dense_params * 4),
        },
    }
