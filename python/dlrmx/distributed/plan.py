"""Where each table lives: small tables (under --sparse-dense-boundary rows) replicated on every
rank, large ones placed whole on one rank each (table-wise), largest first on the least loaded
rank; and the report of it (placement.json)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from dlrmx.popularity.hotset import row_bytes

REPLICATED = -1


@dataclass
class Placement:
    owner: list[int]  # per table: its rank, or REPLICATED
    world: int

    def tables_of(self, rank: int) -> list[int]:
        return [t for t, o in enumerate(self.owner) if o == rank]

    @property
    def replicated(self) -> list[int]:
        return self.tables_of(REPLICATED)


def place(table_sizes: Sequence[int], world: int, boundary: int, dim: int, optimizer: str,
          max_bytes_per_rank: int = 0) -> Placement:
    """Size-balanced table-wise placement; raises ValueError when a rank cannot hold its part."""
    cost = [int(n) * row_bytes(dim, optimizer) for n in table_sizes]
    owner = [REPLICATED] * len(table_sizes)
    load = [sum(c for c, n in zip(cost, table_sizes) if n < boundary)] * world
    for t in sorted((t for t, n in enumerate(table_sizes) if n >= boundary), key=lambda t: -cost[t]):
        r = min(range(world), key=lambda r: (load[r], r))
        owner[t], load[r] = r, load[r] + cost[t]
    if max_bytes_per_rank and max(load) > max_bytes_per_rank:
        worst = max(range(world), key=lambda r: load[r])
        raise ValueError(f"--max-table-bytes-per-rank {max_bytes_per_rank:,}: rank {worst} would "
                         f"hold {load[worst]:,} bytes of tables and optimizer state; use more "
                         "ranks, or raise --sparse-dense-boundary' counterpart (row-wise sharding "
                         "of one table over several ranks is not built yet)")
    return Placement(owner, world)


def report(p: Placement, table_sizes: Sequence[int], dim: int, optimizer: str, batch: int,
           dense_params: int) -> dict[str, Any]:
    """Who holds what, memory per rank, and the bytes each step moves (fp32 pooled results,
    int64 ids, one id per lookup of a one-hot batch)."""
    cost = [int(n) * row_bytes(dim, optimizer) for n in table_sizes]
    rep = p.replicated
    sharded = [t for t in range(len(table_sizes)) if t not in rep]
    remote = (p.world - 1) / p.world  # the share of a global batch that lives on other ranks
    return {
        "world": p.world,
        "tables": [{"table": t, "rows": int(n), "bytes": cost[t],
                    "rank": "all" if p.owner[t] == REPLICATED else p.owner[t]}
                   for t, n in enumerate(table_sizes)],
        "bytes_per_rank": [sum(cost[t] for t in p.tables_of(r)) + sum(cost[t] for t in rep)
                           for r in range(p.world)],
        "bytes_per_step": {
            "all_to_all_ids": int(batch * len(sharded) * 16 * remote),  # ids and lengths
            "all_to_all_pooled": int(2 * batch * len(sharded) * dim * 4 * remote),  # fwd + bwd
            "replicated_ids_and_grads": int(p.world * batch * len(rep) * (16 + dim * 4) * remote),
            "all_reduce_dense": int(2 * dense_params * 4 * remote),  # ring all-reduce, per rank
        },
    }
