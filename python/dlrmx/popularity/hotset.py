"""Hot-set selection: which embedding rows to keep in a fast-memory budget.

A row's cost is its bytes in the fast tier: its weights and its optimizer state (split-SGD's
trail, Adagrad's sums), which differ by table (dim, optimizer). Its value is its lookup count.
Filling the budget by count per byte, across all tables at once, maximizes the covered lookups
(up to the last row that does not fit): `select` finds the count-per-byte threshold by
bisection over per-table sorted counts, so no global sort of all rows is needed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

# Bytes per element of the stored table plus its state, by sparse optimizer (dlrmx.nn):
# fp32 SGD 4; split-SGD bf16 + int16 trail 4; Adagrad 4 + 4 per element; row-wise Adagrad 4 per
# element + 4 per row.
ELEMENT_BYTES = {"sgd": 4, "split_sgd": 4, "adagrad": 8, "rowwise_adagrad": 4}
ROW_STATE_BYTES = {"rowwise_adagrad": 4}


def row_bytes(dim: int, optimizer: str = "sgd") -> int:
    """Fast-tier bytes of one row of a `dim`-wide table trained by `optimizer`."""
    if optimizer not in ELEMENT_BYTES:
        raise ValueError(f"unknown sparse optimizer {optimizer!r}; one of {sorted(ELEMENT_BYTES)}")
    return dim * ELEMENT_BYTES[optimizer] + ROW_STATE_BYTES.get(optimizer, 0)


@dataclass
class HotSet:
    """The chosen rows: `rows[t]` (int64, most looked-up first) of table t."""

    rows: list[np.ndarray]
    budget: int
    bytes_used: int
    coverage: list[float] = field(default_factory=list)  # per table: lookups covered / lookups
    total_coverage: float = 0.0

    def masks(self, table_sizes: Sequence[int]) -> list[np.ndarray]:
        """Per table, a boolean row mask of the hot rows."""
        out = []
        for r, n in zip(self.rows, table_sizes):
            m = np.zeros(int(n), dtype=bool)
            m[r] = True
            out.append(m)
        return out

    def hot_sample_fraction(self, sparse: np.ndarray, table_sizes: Sequence[int]) -> float:
        """The fraction of samples ([N, T] one-hot ids) whose lookups are all hot."""
        masks = self.masks(table_sizes)
        all_hot = np.ones(sparse.shape[0], dtype=bool)
        for t, m in enumerate(masks):
            all_hot &= m[sparse[:, t]]
        return float(all_hot.mean()) if sparse.shape[0] else 0.0

    def report(self, names: Sequence[str] | None = None) -> str:
        lines = [f"hot set: {self.bytes_used:,} of {self.budget:,} bytes, "
                 f"{sum(r.size for r in self.rows):,} rows, {self.total_coverage:.1%} of lookups"]
        for t, (r, c) in enumerate(zip(self.rows, self.coverage)):
            name = names[t] if names else f"table {t}"
            lines.append(f"  {name}: {r.size:,} rows, {c:.1%} of its lookups")
        return "\n".join(lines)


def select(counts: Sequence, row_bytes_per_table: Sequence[int], budget: int,
           totals: Sequence[int] | None = None) -> HotSet:
    """The rows with the most lookups per byte, across all tables, within `budget` bytes.

    counts[t]: lookups of each row of table t (exact), or a pair (candidate row ids, their
    estimated counts) from a sketch; rows never looked up are never chosen. `totals[t]`: the
    table's lookups, for the coverage (default: the sum of its counts). Raises ValueError when
    the budget cannot hold one row of any table.
    """
    ids = [c[0] if isinstance(c, tuple) else None for c in counts]
    counts = [c[1] if isinstance(c, tuple) else c for c in counts]
    if len(counts) != len(row_bytes_per_table):
        raise ValueError(f"select: {len(counts)} count arrays but {len(row_bytes_per_table)} row "
                         "sizes: one per table")
    cost = [int(b) for b in row_bytes_per_table]
    if any(b <= 0 for b in cost):
        raise ValueError(f"select: row bytes must be > 0, got {cost}")
    if int(budget) < min(cost):
        raise ValueError(f"--hot-cache-budget {budget} bytes is smaller than one row "
                         f"({min(cost)} bytes): give at least that")
    order = [np.argsort(-np.asarray(c, dtype=np.int64), kind="stable") for c in counts]
    sorted_counts = [np.asarray(c, dtype=np.int64)[o] for c, o in zip(counts, order)]
    # Rows of table t with count/cost >= lam: a prefix of its sorted rows.
    desc = [-(s / b) for s, b in zip(sorted_counts, cost)]  # ascending, for searchsorted

    def take(lam: float) -> list[int]:
        return [int(np.searchsorted(d, -lam, side="right")) if lam > 0 else int((s > 0).sum())
                for d, s in zip(desc, sorted_counts)]

    def used(k: list[int]) -> int:
        return sum(n * b for n, b in zip(k, cost))

    k = take(0.0)
    if used(k) > budget:  # bisection on the threshold (densities are count / bytes > 0)
        lo, hi = 0.0, max(float(s[0]) / b for s, b in zip(sorted_counts, cost) if s.size) + 1.0
        for _ in range(100):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if used(take(mid)) > budget else (lo, mid)
        k = take(hi)
        _fill_ties(sorted_counts, cost, k, int(budget) - used(k))
    rows = [(o[:n] if i is None else np.asarray(i)[o[:n]]).astype(np.int64)
            for o, n, i in zip(order, k, ids)]
    if totals is None:
        totals = [int(s.sum()) for s in sorted_counts]
    hot = [int(s[:n].sum()) for s, n in zip(sorted_counts, k)]
    return HotSet(rows=rows, budget=int(budget), bytes_used=used(k),
                  coverage=[h / t if t else 0.0 for h, t in zip(hot, totals)],
                  total_coverage=sum(hot) / max(1, sum(totals)))


def _fill_ties(sorted_counts: list[np.ndarray], cost: list[int], k: list[int], rest: int) -> None:
    """Spend the slack the threshold left on the next densest rows: whole groups of equal
    counts per table at a time (a table of millions of once-seen rows is one group)."""
    for _ in range(256):
        nxt = [(float(s[n]) / b, t) for t, (s, b, n) in enumerate(zip(sorted_counts, cost, k))
               if n < s.size and s[n] > 0 and b <= rest]
        if not nxt:
            return
        _, t = max(nxt)
        s, n = sorted_counts[t], k[t]
        same = int(np.searchsorted(-s, -s[n], side="right")) - n  # rows with this count
        m = min(same, rest // cost[t])
        k[t] += m
        rest -= m * cost[t]


def coverage_curve(counts: Sequence, row_bytes_per_table: Sequence[int],
                   budgets: Sequence[int], sample: np.ndarray | None = None,
                   table_sizes: Sequence[int] | None = None,
                   totals: Sequence[int] | None = None) -> list[dict]:
    """Lookup coverage (and, given a sample of [N, T] ids, the all-hot sample fraction) for
    each budget."""
    out = []
    for b in budgets:
        hs = select(counts, row_bytes_per_table, b, totals)
        rec = {"budget": int(b), "coverage": hs.total_coverage,
               "rows": int(sum(r.size for r in hs.rows))}
        if sample is not None and table_sizes is not None:
            rec["hot_samples"] = hs.hot_sample_fraction(sample, table_sizes)
        out.append(rec)
    return out


def plot_curve(curve: list[dict], path: str | Path) -> Path:
    """A PNG of coverage (and the all-hot sample fraction) against the budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    mib = [c["budget"] / 2**20 for c in curve]
    ax.plot(mib, [c["coverage"] for c in curve], marker="o", label="lookups covered")
    if all("hot_samples" in c for c in curve):
        ax.plot(mib, [c["hot_samples"] for c in curve], marker="s", label="samples all hot")
    ax.set_xscale("log")
    ax.set_xlabel("fast-memory budget (MiB, weights + optimizer state)")
    ax.set_ylabel("fraction")
    ax.set_ylim(0, 1)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
