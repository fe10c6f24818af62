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
    """Who holds what, memory per rank, and the bytes each step moves (fp32 pooled results,
    int64 ids and bag lengths, one id per lookup of a one-hot batch)."""
    remote = (p.world - 1) / p.world  # the share of a global batch that lives on other ranks
    held = [sum(int(table_sizes[t]) for t in p.replicated) * row_bytes(dim, optimizer)] * p.world
    for q in p.pieces:
        held[q.rank] += q.shape[0] * row_bytes(q.shape[1], optimizer)
    pooled = sum(q.shape[1] for q in p.pieces)
    return {
        "world": p.world,
        "replicated": [{"table": t, "rows": int(table_sizes[t])} for t in p.replicated],
        "pieces": [{"table": q.table, "rank": q.rank, "rows": [q.row_lo, q.row_hi],
                    "columns": [q.col_lo, q.col_hi]} for q in p.pieces],
        "bytes_per_rank": held,
        "bytes_per_step": {
            "all_to_all_ids": int(batch * len(p.pieces) * 16 * remote),  # ids and bag lengths
            "all_to_all_pooled": int(2 * batch * pooled * 4 * remote),  # forward and backward
            "replicated_ids_and_grads": int(p.world * batch * len(p.replicated) * (16 + dim * 4)
                                            * remote),
            "all_reduce_dense": int(2 * dense_params * 4 * remote),  # ring all-reduce, per rank
        },
    }
