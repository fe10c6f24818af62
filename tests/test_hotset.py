"""Hot-set selection by a byte budget across tables (weights + optimizer state), against a
plain greedy reference; the all-hot sample fraction against a per-sample loop; errors."""

import numpy as np
import pytest

from dlrmx.popularity.hotset import coverage_curve, plot_curve, row_bytes, select


def _counts(seed=0):
    rng = np.random.default_rng(seed)
    sizes = [1000, 37, 5000, 3]
    counts = [np.bincount(rng.zipf(1.3, 40_000) % sizes[0], minlength=sizes[0]),
              np.bincount(rng.integers(0, sizes[1], 3000), minlength=sizes[1]),
              np.bincount(rng.zipf(1.05, 60_000) % sizes[2], minlength=sizes[2]),
              np.zeros(sizes[3], dtype=np.int64)]  # a table never looked up
    return sizes, counts


def _greedy(counts, cost, budget):
    """Rows by count per byte, all tables together, while they fit (plain Python)."""
    rows = sorted(((c / cost[t], t, r) for t, cs in enumerate(counts) for r, c in enumerate(cs)
                   if c > 0), reverse=True)
    taken, used = set(), 0
    for _, t, r in rows:
        if used + cost[t] <= budget:
            taken.add((t, r))
            used += cost[t]
    return taken


@pytest.mark.parametrize("budget", [200, 5_000, 60_000, 10**9])
def test_selection_covers_at_least_the_greedy_reference_within_budget(budget):
    sizes, counts = _counts()
    cost = [row_bytes(16, "split_sgd"), row_bytes(64, "rowwise_adagrad"), row_bytes(8, "adagrad"),
            row_bytes(16)]
    hs = select(counts, cost, budget)
    chosen = {(t, int(r)) for t, rows in enumerate(hs.rows) for r in rows}
    assert hs.bytes_used == sum(cost[t] for t, _ in chosen) <= budget
    assert sum(r.size for r in hs.rows) == len(chosen)  # no row twice
    assert all(counts[t][r] > 0 for t, r in chosen)
    covered = sum(counts[t][r] for t, r in chosen)
    ref = _greedy(counts, cost, budget)
    assert covered >= sum(counts[t][r] for t, r in ref)
    total = sum(int(c.sum()) for c in counts)
    assert hs.total_coverage == pytest.approx(covered / total)
    assert hs.rows[3].size == 0 and hs.coverage[3] == 0.0
    if budget == 10**9:  # everything looked up fits
        assert hs.total_coverage == 1.0


def test_equal_row_sizes_take_exactly_the_top_rows():
    counts = [np.array([5, 1, 9, 0, 7]), np.array([8, 2])]
    hs = select(counts, [10, 10], 30)
    chosen = sorted(c for t, rows in enumerate(hs.rows) for c in counts[t][rows])
    assert chosen == [7, 8, 9]


def test_hot_sample_fraction_equals_a_per_sample_loop():
    sizes, counts = _counts(1)
    hs = select(counts[:3], [64, 64, 64], 64 * 400)
    rng = np.random.default_rng(2)
    sample = np.stack([rng.integers(0, n, 500) for n in sizes[:3]], 1)
    hot = [set(r.tolist()) for r in hs.rows]
    want = np.mean([all(sample[i, t] in hot[t] for t in range(3)) for i in range(500)])
    assert hs.hot_sample_fraction(sample, sizes[:3]) == pytest.approx(want)


def test_coverage_grows_with_the_budget_and_plots(tmp_path):
    sizes, counts = _counts(3)
    rng = np.random.default_rng(4)
    sample = np.stack([rng.integers(0, n, 300) for n in sizes], 1)
    curve = coverage_curve(counts, [64] * 4, [64, 6400, 64_000, 640_000], sample, sizes)
    cov = [c["coverage"] for c in curve]
    assert cov == sorted(cov) and cov[-1] == 1.0 and cov[0] > 0
    assert all(0 <= c["hot_samples"] <= 1 for c in curve)
    png = plot_curve(curve, tmp_path / "coverage.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="--hot-cache-budget 10 bytes is smaller than one row"):
        select([np.ones(3)], [64], 10)
    with pytest.raises(ValueError, match="one per table"):
        select([np.ones(3)], [64, 64], 1000)
    with pytest.raises(ValueError, match="row bytes must be > 0"):
        select([np.ones(3)], [0], 1000)
    with pytest.raises(ValueError, match="unknown sparse optimizer"):
        row_bytes(16, "adam")
    assert row_bytes(16, "rowwise_adagrad") == 68 and row_bytes(16, "adagrad") == 128
